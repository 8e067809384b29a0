"""What a model file needs to be used correctly: task, labels, input size and normalisation,
task settings (anchors, thresholds). Stored beside the model as `<stem>.json` (all formats), and
also embedded where the format allows (ONNX metadata_props, OpenVINO rt_info) under the key
"edgecell". A model without either is still runnable as a plain tensor-in, tensor-out model.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecell.errors import ModelError

METADATA_KEY = "edgecell"


@dataclass
class ModelInfo:
    """Self-description of a model. Pixel normalisation is x = (pixel - mean) / std, pixel in 0..255."""

    task: str = "raw"
    name: str = ""
    version: str = ""
    labels: list[str] = field(default_factory=list)
    input_size: tuple[int, int] = (224, 224)  # (width, height)
    channels: int = 3  # 1 for greyscale models
    layout: str = "NHWC"  # or "NCHW"
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [255.0])
    resize: str = "stretch"  # "stretch" | "letterbox"
    precision: str = "fp32"  # "fp32" | "int8"
    settings: dict[str, Any] = field(default_factory=dict)  # task settings: anchors, thresholds, ...
    metrics: dict[str, Any] = field(default_factory=dict)  # measured on held-out data, for `info`
    #: filled at load time from an integer model input (scale, zero_point, dtype) so that
    #: pre-processing can write the quantized tensor directly; never stored in the sidecar
    input_quantization: dict[str, Any] | None = field(default=None, compare=False)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("input_quantization")
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelInfo":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "input_quantization"}
        info = cls(**known)
        info.input_size = tuple(int(v) for v in info.input_size)  # type: ignore[assignment]
        from edgecell.tasks import TASKS  # the one task registry (imported here: tasks import this module)

        if info.task not in TASKS:
            raise ModelError(f"model metadata names task {info.task!r}; expected one of {', '.join(TASKS)}")
        return info


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """`cells_int8.tflite` -> `cells_int8.json` (for OpenVINO, the .xml's stem)."""
    return Path(model_path).with_suffix(".json")


def write_sidecar(model_path: str | os.PathLike, info: ModelInfo) -> Path:
    from edgecell.sinks import write_text_atomic  # the one temp-file-and-rename

    return write_text_atomic(sidecar_path(model_path), info.to_json() + "\n")


def read_model_info(model_path: str | os.PathLike, embedded: str | None = None) -> ModelInfo:
    """Sidecar JSON if present, else the JSON string embedded in the model, else a raw ModelInfo."""
    side = sidecar_path(model_path)
    text = side.read_text() if side.is_file() else embedded
    if not text:
        return ModelInfo(task="raw", name=Path(model_path).stem)
    try:
        return ModelInfo.from_dict(json.loads(text))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ModelError(f"{side}: model metadata is not valid JSON ({exc}); regenerate it with python -m edgecell.convert.quantize") from None
