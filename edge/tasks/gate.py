"""Utility gate (Khan et al., EUSIPCO 2022): a small binary classifier in front of a task model
that scores whether an image is still useful to that model (after heavy JPEG compression, blur,
noise, bad exposure). On a device this turns silent wrong answers into "retake the image".

The gate model outputs either two class scores [not useful, useful] or one sigmoid; the utility is
P(useful). Policies: `reject` (the task model does not run; the image is listed with the reason),
`flag` (the task model runs; the result carries a warning), `pass` (score recorded only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecell.images import resize
from edgecell.modelinfo import ModelInfo
from edgecell.tasks.base import Task, TaskResult
from edgecell.tasks.common import require_task, resized, softmax, to_input_tensor

POLICIES = ("reject", "flag", "pass")


@dataclass
class GateResult(TaskResult):
    utility: float
    threshold: float
    for_task: str = ""

    @property
    def useful(self) -> bool:
        return self.utility >= self.threshold

    def reason(self) -> str:
        what = f" for the {self.for_task} model" if self.for_task else ""
        return (f"utility {self.utility:.2f} < {self.threshold:.2f}: image too degraded{what} "
                "(compression, blur, noise or exposure); retake or re-send the original")

    def to_dict(self) -> dict:
        out = {"utility": round(self.utility, 4), "threshold": self.threshold, "useful": self.useful}
        if not self.useful:
            out["reason"] = self.reason()
        return out

    def summary(self) -> str:
        return f"utility {self.utility:.2f}" + ("" if self.useful else " (not useful)")

    @property
    def needs_attention(self) -> bool:
        return not self.useful


def resize_via(info: ModelInfo) -> tuple[int, int] | None:
    """The intermediate (width, height) a gate's input is made from (`settings.resize_via`: its
    task model's input size), or None for a direct resize of the full image."""
    via = info.settings.get("resize_via")
    return (int(via[0]), int(via[1])) if via else None


def gate_pixels(image: np.ndarray, info: ModelInfo) -> np.ndarray:
    """The gate's input pixels. With `resize_via`: the full image stretched to that size (the task
    model's input size: under `common.resize_once` the task model reuses it), then bilinear to the
    gate's size (0.07 ms for 224 -> 128 against 0.33 ms INTER_AREA; at an exact 2x, as 256 -> 128,
    bilinear is the 2 x 2 mean). Without it: one stretch of the full image, as the first products
    gate was trained. Training, evaluation and the device all call this one function."""
    via = resize_via(info)
    if not via:
        return resized(image, info.input_size)
    pixels = resized(image, via)
    if tuple(info.input_size) == via:
        return pixels
    return resize(pixels, tuple(info.input_size), antialias=False)  # bit-exact bilinear, as trained


def task_model_mismatch(gate_info: ModelInfo, task_model_path) -> str | None:
    """Why a gate does not fit the task model in front of which it runs, or None.

    A gate is trained on the answers of one task model (its sidecar records that file's SHA-256):
    in front of another model its decisions and the figures in its card are unmeasured, so the
    user is told rather than left to trust them. The OpenVINO IR or ONNX sibling of that .tflite
    (made from it, same INT8 arithmetic, sharing its sidecar: `edgecell.convert.siblings`) is the
    same model in another format, so it fits too."""
    import hashlib
    from pathlib import Path

    expected = (gate_info.metrics or {}).get("task_model_sha256")
    if not expected:
        return None
    path = Path(task_model_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest == expected:
        return None
    source = path.with_suffix(".tflite")
    if path.suffix in (".xml", ".onnx") and source.is_file() and hashlib.sha256(source.read_bytes()).hexdigest() == expected:
        return None
    trained_for = (gate_info.metrics or {}).get("task_model", "another model")
    return (f"gate {gate_info.name or 'model'} was trained for {trained_for} (SHA-256 {expected[:12]}...), not "
            f"{Path(task_model_path).name} ({digest[:12]}...): its decisions are unmeasured for this model")


def preprocess(image: np.ndarray, info: ModelInfo):
    require_task(info, "gate")
    tensor, _ = to_input_tensor(gate_pixels(image, info), info)  # already at size: no second resize
    return tensor, None


def utility_score(outputs: dict[str, np.ndarray]) -> float:
    raw = next(iter(outputs.values())).reshape(-1).astype(np.float32)
    if raw.size == 1:
        value = float(raw[0])
        return value if 0.0 <= value <= 1.0 else float(1.0 / (1.0 + np.exp(-value)))
    probs = raw if raw.min() >= 0 and abs(float(raw.sum()) - 1) < 0.02 else softmax(raw)
    return float(probs[-1])


def postprocess(outputs: dict[str, np.ndarray], context, info: ModelInfo, *, gate_threshold: float | None = None,
                **_) -> GateResult:
    threshold = gate_threshold if gate_threshold is not None else float(info.settings.get("threshold", 0.5))
    return GateResult(utility_score(outputs), threshold, str(info.settings.get("for_task", "")))


def annotate(image: np.ndarray, result: GateResult) -> np.ndarray:
    import cv2

    out = image.copy()
    colour = (0, 170, 0) if result.useful else (220, 30, 30)
    cv2.rectangle(out, (0, 0), (out.shape[1] - 1, out.shape[0] - 1), colour, max(2, out.shape[1] // 150))
    cv2.putText(out, result.summary(), (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, colour, 2)
    return out


class GateTask(Task):
    """The utility gate: is this image still useful to its task model?"""

    name = "gate"

    def sample_set(self, info: ModelInfo) -> str | None:
        """A gate is shown its task model's samples."""
        from edgecell.tasks import get_task

        for_task = info.settings.get("for_task")
        return get_task(for_task).sample_set(info) if for_task and for_task != self.name else None

    def preprocess(self, image: np.ndarray, info: ModelInfo):
        return preprocess(image, info)

    def postprocess(self, outputs: dict, context, info: ModelInfo, **options) -> GateResult:
        return postprocess(outputs, context, info, **options)

    def annotate(self, image: np.ndarray, result: GateResult) -> np.ndarray:
        return annotate(image, result)

    def evaluate(self, model_paths, data, out, *, split, backend) -> dict:
        from edgecell.errors import EdgecellError

        raise EdgecellError("a gate is evaluated against its task model and labels: "
                            "python -m edgecell.benchmarks.gate_eval --help")
