"""A model without edgecell metadata: stretch to the input size, scale to 0..1, report outputs.
If the model has one output that looks like class scores it is treated as a classifier."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecell.modelinfo import ModelInfo
from edgecell.tasks import classify
from edgecell.tasks.base import Task, TaskResult
from edgecell.tasks.common import to_input_tensor


@dataclass
class RawResult(TaskResult):
    outputs: dict[str, list]

    def to_dict(self) -> dict:
        return {"outputs": self.outputs}

    def summary(self) -> str:
        return ", ".join(f"{k}: {len(v)} values" for k, v in self.outputs.items())


def preprocess(image: np.ndarray, info: ModelInfo):
    tensor, _ = to_input_tensor(image, info)
    return tensor, None


def postprocess(outputs: dict[str, np.ndarray], context, info: ModelInfo, **options):
    if len(outputs) == 1:
        only = next(iter(outputs.values()))
        if only.ndim == 2 and only.shape[0] == 1 and 1 < only.shape[1] <= 1000:
            return classify.postprocess(outputs, context, info, **options)
    return RawResult({k: np.round(v.reshape(-1)[:64].astype(float), 5).tolist() for k, v in outputs.items()})


def annotate(image: np.ndarray, result) -> np.ndarray:
    return classify.annotate(image, result) if isinstance(result, classify.ClassifyResult) else image


class RawTask(Task):
    """A model without edgecell metadata."""

    name = "raw"

    def preprocess(self, image: np.ndarray, info: ModelInfo):
        return preprocess(image, info)

    def postprocess(self, outputs: dict, context, info: ModelInfo, **options) -> TaskResult:
        return postprocess(outputs, context, info, **options)

    def annotate(self, image: np.ndarray, result: TaskResult) -> np.ndarray:
        return annotate(image, result)
