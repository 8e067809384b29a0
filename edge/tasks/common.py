"""Pre-processing shared by every task: one function, used by training, calibration, evaluation
and the device, so the numbers in a model card are the numbers a user gets."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Iterator, Sequence

import cv2
import numpy as np

from edgecell.errors import ModelError
from edgecell.images import Letterbox, letterbox, resize_stretch
from edgecell.modelinfo import ModelInfo


def _uniform(values: Sequence[float]) -> float | None:
    """The one value of a per-channel setting that is the same for every channel, else None."""
    values = list(values)
    return float(values[0]) if values and all(v == values[0] for v in values) else None


def normalise_float(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 H x W x C -> float32 (pixel - mean) / std, as the model was trained. When mean and std
    are one value for every channel (every shipped model) the same float operations run without
    temporaries (subtract into a new float32 array, divide in place): identical values, fewer passes."""
    m, s = _uniform(mean), _uniform(std)
    if m == 0.0 and s == 255.0:
        return np.multiply(pixels, np.float32(1.0 / 255.0), dtype=np.float32)  # one pass
    if m is not None and s is not None:
        x = np.subtract(pixels, np.float32(m), dtype=np.float32)
        x /= np.float32(s)
        return x
    return (pixels.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


@lru_cache(maxsize=16)
def _quantized_lut(mean: tuple, std: tuple, channels: int, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    """256 x 1 x C table: uint8 pixel -> the integer the model input wants, computed with the very
    float32 operations of the float path and the backend's quantizer (so both give equal tensors)."""
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], channels, axis=2)
    x = normalise_float(levels, mean, std)
    q = np.multiply(x, np.float32(1.0 / scale))
    np.rint(q, out=q)
    q += np.float32(zero_point)
    lim = np.iinfo(np.dtype(dtype))
    np.clip(q, lim.min, lim.max, out=q)
    return q.astype(dtype).view(np.uint8)  # cv2.LUT works on bytes; viewed back as int8 after


def normalise(pixels: np.ndarray, info: ModelInfo) -> np.ndarray:
    """uint8 H x W x C -> the model input's values: float32 (pixel - mean) / std, or, for a
    full-integer model (info.input_quantization set at load), the quantized integers directly
    through a lookup table, which is several times faster than normalising and quantizing."""
    quant = info.input_quantization
    if quant is None:
        return normalise_float(pixels, tuple(info.mean), tuple(info.std))
    channels = pixels.shape[2]
    scale, zero_point, dtype = float(quant["scale"]), int(quant["zero_point"] or 0), quant["dtype"]
    m, s = _uniform(info.mean), _uniform(info.std)
    if m is not None and s is not None and channels in (1, 3, 4):
        # one table for every channel: cv2.LUT applies it to all (~30 % faster than per channel)
        out = cv2.LUT(pixels, _quantized_lut((m,), (s,), 1, scale, zero_point, dtype).reshape(256))
        return out.view(np.dtype(dtype)).reshape(pixels.shape)
    lut = _quantized_lut(tuple(info.mean), tuple(info.std), channels, scale, zero_point, dtype)
    table = lut.reshape(256, 1, channels) if channels in (1, 3, 4) else None
    if table is not None and channels > 1:
        out = cv2.LUT(pixels, table.reshape(1, 256, channels))
    else:
        out = lut[:, 0, 0][pixels]
    return out.view(np.dtype(dtype)).reshape(pixels.shape)


#: (image, {size: stretched pixels}) while `resize_once` is active: the same image is resized to a
#: given size once, however many models (a utility gate and its task model) ask for it.
_SHARED_RESIZE: ContextVar[tuple[np.ndarray, dict] | None] = ContextVar("edgecell_shared_resize", default=None)


@contextmanager
def resize_once(image: np.ndarray) -> Iterator[None]:
    """Within this block `resized(image, size)` computes each size of THIS image object once (the
    full-image resize is the dearest pre-processing step: 1.4-2.4 ms for a 400 x 533 photo)."""
    token = _SHARED_RESIZE.set((image, {}))
    try:
        yield
    finally:
        _SHARED_RESIZE.reset(token)


def resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`resize_stretch(image, size)`, served from the `resize_once` memo when one is active for this
    image (same object); callers must not write into the result."""
    shared = _SHARED_RESIZE.get()
    if shared is None or shared[0] is not image:
        return resize_stretch(image, size)
    key = (int(size[0]), int(size[1]))
    if key not in shared[1]:
        shared[1][key] = resize_stretch(image, key)
    return shared[1][key]


def to_input_tensor(image: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, Letterbox | None]:
    """RGB uint8 image -> float32 batch of one in the model's size, channels, layout and
    normalisation. Returns the letterbox placement (None when stretched)."""
    box = None
    if info.resize == "letterbox":
        pixels, box = letterbox(image, info.input_size)
    else:
        pixels = resized(image, info.input_size)
    if info.channels == 1:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)[:, :, None]
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
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
