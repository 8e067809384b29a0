"""A model ready for a task: the backend session plus its self-description."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgecell.backends import Session, load_session
from edgecell.errors import ModelError
from edgecell.modelinfo import ModelInfo, read_model_info


@dataclass
class Model:
    session: Session
    info: ModelInfo

    @property
    def path(self) -> Path:
        return self.session.path


def _fill_from_session(info: ModelInfo, session: Session) -> ModelInfo:
    """A model without metadata: take input size, channels and layout from its input tensor."""
    first = session.inputs[0]
    info.precision = "int8" if first.dtype in ("int8", "uint8") else "fp32"
    shape = first.shape
    if len(shape) != 4:
        raise ModelError(f"{session.path.name}: input {first.name} has shape {list(shape)}; edgecell runs image "
                         "models with one (1, H, W, C) or (1, C, H, W) input")
    if len(shape) == 4:
        if shape[1] in (1, 3) and shape[3] not in (1, 3):
            info.layout, info.channels, h, w = "NCHW", shape[1], shape[2], shape[3]
        else:
            info.layout, h, w, info.channels = "NHWC", shape[1], shape[2], shape[3]
        if h > 0 and w > 0:
            info.input_size = (int(w), int(h))
    return info


def check_input_fits(info: ModelInfo, session: Session) -> None:
    """Refuse, at load time and with one line, a model whose input cannot take the images its
    metadata says to prepare (wrong size, channels or layout in the sidecar)."""
    w, h = info.input_size
    prepared = (1, h, w, info.channels) if info.layout == "NHWC" else (1, info.channels, h, w)
    expected = session.inputs[0].shape
    if len(expected) != 4 or any(e not in (-1, p) for e, p in zip(expected, prepared)):
        raise ModelError(
            f"{session.path.name}: model input {session.inputs[0].name} expects shape {list(expected)}, but its "
            f"metadata prepares images as {list(prepared)}; fix input_size/channels/layout in "
            f"{session.path.with_suffix('.json').name} or re-export the model")


def load_model(path: str | os.PathLike, backend: str = "auto", *, threads: int | None = None,
               device: str = "CPU", providers: list[str] | None = None) -> Model:
    """Load a model file with its metadata (sidecar JSON, or embedded in ONNX / OpenVINO)."""
    session = load_session(path, backend, threads=threads, device=device, providers=providers)
    info = read_model_info(path, session.embedded_metadata)
    if info.task == "raw":
        info = _fill_from_session(info, session)
    check_input_fits(info, session)
    from edgecell.tasks import get_task  # the task registry imports this module's neighbours

    get_task(info.task).check(info, session)
    attach_input_quantization(info, session)
    return Model(session, info)


def attach_input_quantization(info: ModelInfo, session: Session) -> ModelInfo:
    """Let pre-processing write a full-integer model's input directly (see tasks.common.normalise)."""
    first = session.inputs[0]
    if first.scale and first.dtype in ("int8", "uint8"):
        info.input_quantization = {"scale": first.scale, "zero_point": first.zero_point, "dtype": first.dtype}
    return info
