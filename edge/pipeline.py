"""One image through a model: task pre-processing, inference, post-processing, each timed.
The same function serves `edgecell run`, `edgecell eval` and the benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecell.model import Model
from edgecell.tasks import get_task


@dataclass
class Timings:
    """Milliseconds spent in each stage of one image."""

    pre: float = 0.0
    infer: float = 0.0
    post: float = 0.0
    gate: float = 0.0  # the utility gate's whole pipeline, when one runs in front

    @property
    def total(self) -> float:
        return self.pre + self.infer + self.post + self.gate

    def to_dict(self) -> dict:
        out = {"pre_ms": round(self.pre, 3), "infer_ms": round(self.infer, 3),
               "post_ms": round(self.post, 3), "total_ms": round(self.total, 3)}
        if self.gate:
            out["gate_ms"] = round(self.gate, 3)
        return out


@dataclass
class Record:
    """What `edgecell run` writes per image or frame (one JSONL line)."""

    source: str
    ok: bool
    task: str = ""
    result: Any = None
    error: str | None = None
    timings: Timings = field(default_factory=Timings)
    overlay: str | None = None
    gate: Any = None  # GateResult when a utility gate ran in front
    action: str = "ran"  # "ran" | "flagged" (gate says not useful, ran anyway) | "rejected" (not run)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"source": self.source, "ok": self.ok, "task": self.task}
        if self.ok:
            out["result"] = self.result.to_dict() if self.result is not None else None
            out["timings"] = self.timings.to_dict()
        else:
            out["error"] = self.error
        if self.gate is not None:
            out["gate"] = self.gate.to_dict()
            out["action"] = self.action
        if self.overlay:
            out["overlay"] = self.overlay
        return out


def predict(model: Model, image: np.ndarray, **options) -> tuple[Any, Timings]:
    """Run the model's task on one RGB uint8 image; returns (task result, timings)."""
    task = get_task(model.info.task)
    t0 = time.perf_counter()
    tensor, context = task.preprocess(image, model.info)
    t1 = time.perf_counter()
    if hasattr(task, "infer"):
        outputs = task.infer(model.session, tensor, model.info, context=context, **options)
    else:
        outputs = model.session.run(tensor)
    t2 = time.perf_counter()
    result = task.postprocess(outputs, context, model.info, **options)
    t3 = time.perf_counter()
    return result, Timings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)


def predict_gated(gate: Model, model: Model, image: np.ndarray, *, policy: str = "reject",
                  **options) -> tuple[Any, Any, Timings, str]:
    """The gate first, then (unless the policy rejects the image) the task model.
    Returns (gate result, task result or None, timings, action).

    The image is resized to each size once (`common.resize_once`): a gate whose input is made
    via its task model's input size (`settings.resize_via`) pays for that full-image resize and
    the task model reuses it, so the gate's own cost is a small resize and its network."""
    from edgecell.tasks.common import resize_once

    with resize_once(image):
        gate_result, gate_timings = predict(gate, image, **options)
        if not gate_result.useful and policy == "reject":
            return gate_result, None, Timings(gate=gate_timings.total), "rejected"
        result, timings = predict(model, image, **options)
    timings.gate = gate_timings.total
    action = "flagged" if not gate_result.useful and policy == "flag" else "ran"
    return gate_result, result, timings, action


def annotate(model: Model, image: np.ndarray, result: Any) -> np.ndarray:
    return get_task(model.info.task).annotate(image, result)
