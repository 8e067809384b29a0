"""TFLite models through LiteRT (`ai-edge-litert`, the default), `tflite-runtime` (older Pi
images with numpy<2; 3-8x slower on INT8 here, so only a fallback) or `tensorflow.lite`."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import numpy as np

from edgecell.backends.base import Session, TensorInfo, dequantize
from edgecell.errors import BackendNotInstalled, ModelError

#: backend name -> (module that provides Interpreter, pip requirement)
FLAVOURS = {
    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    "tf.lite": ("tensorflow.lite", "tensorflow"),
}


def interpreter_class(flavour: str):
    import importlib

    module_name, requirement = FLAVOURS[flavour]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise BackendNotInstalled(
            f"backend {flavour!r} is not installed; install it with: pip install {requirement}"
        ) from None
    return module.Interpreter


@contextlib.contextmanager
def _quiet_stderr():
    """LiteRT prints 'INFO: Created TensorFlow Lite XNNPACK delegate' from C++ on every load;
    hide C-level stderr while loading (Python exceptions still carry the error text)."""
    if os.environ.get("EDGECELL_DEBUG"):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        yield
        return
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _tensor_info(detail: dict) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = np.dtype(detail["dtype"]).kind in "iu" and scale
    return TensorInfo(
        name=detail["name"],
        shape=tuple(int(s) for s in detail.get("shape_signature", detail["shape"])),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale) if quantized else None,
        zero_point=int(zero_point) if quantized else None,
    )


class LiteRTSession(Session):
    def __init__(self, path: Path, *, threads: int | None = None, flavour: str = "litert"):
        Interpreter = interpreter_class(flavour)
        self.backend = flavour
        self.path = Path(path)
        self.threads = threads
        try:
            with _quiet_stderr():
                self._interp = Interpreter(model_path=str(path), num_threads=threads)
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path}: not a loadable TFLite model ({first}); re-export or re-copy the file") from None
        self._in = self._interp.get_input_details()
        self._out = self._interp.get_output_details()
        self.inputs = [_tensor_info(d) for d in self._in]
        self._scratch: dict[str, np.ndarray] = {}
        self.outputs = [_tensor_info(d) for d in self._out]

    def _quantize_input(self, x: np.ndarray, info: TensorInfo) -> np.ndarray:
        """float -> int8/uint8 with one reusable float scratch buffer per input (the general
        `quantize` allocates three full-size temporaries per call, which cost more than a small
        INT8 model's inference)."""
        if info.scale is None or x.dtype == np.dtype(info.dtype):
            return x.astype(info.dtype, copy=False)  # float model, or already quantized
        scratch = self._scratch.get(info.name)
        if scratch is None or scratch.shape != x.shape:
            scratch = self._scratch[info.name] = np.empty(x.shape, np.float32)
        lim = np.iinfo(np.dtype(info.dtype))
        np.multiply(x, np.float32(1.0 / info.scale), out=scratch)
        np.rint(scratch, out=scratch)
        scratch += np.float32(info.zero_point or 0)
        np.clip(scratch, lim.min, lim.max, out=scratch)
        return scratch.astype(info.dtype)

    def run(self, feeds):
        feeds = self._as_feeds(feeds)
        for detail, info in zip(self._in, self.inputs):
            self._interp.set_tensor(detail["index"], self._quantize_input(np.asarray(feeds[info.name]), info))
        self._interp.invoke()
        return {info.name: dequantize(self._interp.get_tensor(d["index"]), info)
                for d, info in zip(self._out, self.outputs)}

    def run_raw(self, feeds):
        for detail, info in zip(self._in, self.inputs):
            self._interp.set_tensor(detail["index"], feeds[info.name])
        self._interp.invoke()
        return [self._interp.get_tensor(d["index"]) for d in self._out]
