"""Pre-processing shared by every task: one function, used by training, calibration, evaluation
and the device, so the numbers in a model card are the numbers a user gets."""

from __future__ import annotations

import cv2
import numpy as np

from edgecell.errors import ModelError
from edgecell.images import Letterbox, letterbox, resize_stretch
from edgecell.modelinfo import ModelInfo


def normalise(pixels: np.ndarray, info: ModelInfo) -> np.ndarray:
    """uint8 H x W x C -> float32 (pixel - mean) / std, as the model was trained."""
    mean = np.asarray(info.mean, dtype=np.float32)
    std = np.asarray(info.std, dtype=np.float32)
    return (pixels.astype(np.float32) - mean) / std


def to_input_tensor(image: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, Letterbox | None]:
    """RGB uint8 image -> float32 batch of one in the model's size, channels, layout and
    normalisation. Returns the letterbox placement (None when stretched)."""
    box = None
    if info.resize == "letterbox":
        pixels, box = letterbox(image, info.input_size)
    else:
        pixels = resize_stretch(image, info.input_size)
    if info.channels == 1:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)[:, :, None]
    tensor = normalise(pixels, info)[None]
    if info.layout == "NCHW":
        tensor = tensor.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(tensor), box


def require_task(info: ModelInfo, *expected: str) -> None:
    """Refuse a model made for another task with one line that names what was expected."""
    if info.task not in expected:
        raise ModelError(f"model {info.name or '?'} is a {info.task!r} model; this pipeline expects a "
                         f"{' or '.join(repr(e) for e in expected)} model (see `edgecell info MODEL`)")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
