"""The one small interface every backend implements: load, describe inputs/outputs, run.

Task code always exchanges float32 arrays with a `Session`: a backend whose model has int8/uint8
inputs or outputs (full-integer TFLite) quantizes and dequantizes with the tensor's own scale and
zero point, so pre- and post-processing never depend on the precision of the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecell.errors import ModelError


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output. `shape` uses -1 for dynamic dimensions."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name of the tensor inside the model, e.g. "float32", "int8"
    scale: float | None = None  # quantization: real = scale * (q - zero_point)
    zero_point: int | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": self.scale, "zero_point": self.zero_point}


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """float -> the tensor's integer dtype, with its scale and zero point (rounding, saturating)."""
    dtype = np.dtype(info.dtype)
    if dtype.kind == "f" or info.scale in (None, 0.0) or x.dtype == dtype:
        return x.astype(dtype, copy=False)  # float model, or already quantized by pre-processing
    lim = np.iinfo(dtype)
    q = np.rint(np.multiply(x, np.float32(1.0 / info.scale), dtype=np.float32)) + np.float32(info.zero_point or 0)
    return np.clip(q, lim.min, lim.max).astype(dtype)


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    """The tensor's integer values -> float32 (no-op for float tensors)."""
    if q.dtype.kind == "f" or info.scale in (None, 0.0):
        return q.astype(np.float32, copy=False)
    return (q.astype(np.float32) - np.float32(info.zero_point or 0)) * np.float32(info.scale)


class Session(ABC):
    """A loaded model, ready to run. Create one with `edgecell.backends.load_session`."""

    #: short backend name: "litert", "tflite-runtime", "tf.lite", "openvino", "onnxruntime"
    backend: str = ""
    path: Path
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    threads: int | None = None
    #: the metadata JSON embedded in the model file, if the format carries one
    embedded_metadata: str | None = None

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Run once on float32 inputs (a dict by input name, or one array for a single-input
        model); return float32 outputs by output name, in the model's output order."""

    def run_raw(self, feeds: dict[str, np.ndarray]) -> object:
        """The backend's own call with already-prepared inputs; used by benchmarks to measure
        our overhead against the bare backend. Default: same as run."""
        return self.run(feeds)

    def _quantize_input(self, x: np.ndarray, info: TensorInfo) -> np.ndarray:
        """float -> the input's dtype; for a quantized int8/uint8 input, with its scale and zero
        point exactly as LiteRT expects them (round half to even, saturate), through one reusable
        float scratch buffer per input (the general `quantize` allocates three full-size
        temporaries per call, which cost more than a small INT8 model's inference). Input already
        in the tensor's dtype (pre-processing that quantized it, see tasks.common) passes as is."""
        if info.scale is None or x.dtype == np.dtype(info.dtype):
            return np.ascontiguousarray(x, dtype=info.dtype)
        scratch = self.__dict__.setdefault("_scratch", {}).get(info.name)
        if scratch is None or scratch.shape != x.shape:
            scratch = self._scratch[info.name] = np.empty(x.shape, np.float32)
        lim = np.iinfo(np.dtype(info.dtype))
        np.multiply(x, np.float32(1.0 / info.scale), out=scratch)
        np.rint(scratch, out=scratch)
        scratch += np.float32(info.zero_point or 0)
        np.clip(scratch, lim.min, lim.max, out=scratch)
        return scratch.astype(info.dtype)

    def _refuse_unknown_quantization(self) -> None:
        """A format that cannot say an integer input's or output's scale and zero point (ONNX,
        OpenVINO IR) would be fed raw floats and return raw integers: a confident wrong answer.
        Refuse it at load, in one line."""
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            for t in tensors:
                if t.dtype in ("int8", "uint8", "int16") and t.scale is None:
                    raise ModelError(
                        f"{self.path}: {kind} {t.name} is {t.dtype} and the file does not give its scale and "
                        f"zero point, so backend {self.backend!r} cannot feed or read it correctly; export it "
                        "with float input/output (quantized inside) or run the .tflite with LiteRT")

    def _as_feeds(self, feeds: dict[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        if isinstance(feeds, np.ndarray):
            if len(self.inputs) != 1:
                names = ", ".join(i.name for i in self.inputs)
                raise ValueError(f"model has {len(self.inputs)} inputs ({names}); pass a dict")
            return {self.inputs[0].name: feeds}
        return feeds

    def describe(self) -> dict:
        return {"backend": self.backend, "path": str(self.path), "threads": self.threads,
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}
