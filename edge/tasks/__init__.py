"""Tasks as pipelines of plain functions. Each task module provides:

    preprocess(image: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, Any]
        RGB uint8 H x W x 3 image -> (float32 input batch of one, context for postprocess)
    postprocess(outputs: dict[str, np.ndarray], context, info: ModelInfo, **options) -> Result
        float32 model outputs by name -> a result dataclass with `to_dict()` (JSON-ready)
    annotate(image: np.ndarray, result) -> np.ndarray
        an RGB overlay for a person to look at

and may provide `infer(session, tensor, info, *, context, **options) -> dict` when one image needs
more than one model call or extra outputs (tiling, Grad-CAM). `get_task(name)` returns the module.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgecell.errors import ModelError

TASK_MODULES = {
    "cells": "edgecell.tasks.cells",
    "classify": "edgecell.tasks.classify",
    "products": "edgecell.tasks.classify",
    "xray": "edgecell.tasks.xray",
    "gate": "edgecell.tasks.gate",
    "raw": "edgecell.tasks.raw",
    "rbc": "edgecell.tasks.rbc",
}


def get_task(name: str) -> ModuleType:
    """The module implementing task `name`; a clear error lists the known tasks."""
    if name not in TASK_MODULES:
        raise ModelError(f"unknown task {name!r}; expected one of {', '.join(TASK_MODULES)}")
    try:
        return importlib.import_module(TASK_MODULES[name])
    except ModuleNotFoundError as exc:
        if exc.name == TASK_MODULES[name]:
            raise ModelError(f"task {name!r} is not available in this edgecell version") from None
        raise
