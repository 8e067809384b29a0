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
from edgecell.errors import ModelError

def interpreter_class(flavour: str):
    """The `Interpreter` class of a LiteRT flavour (where it is: the backend registry)."""
    from edgecell.backends import BACKENDS, import_backend

    found = import_backend(flavour)
    for attr in BACKENDS[flavour].interpreter.split("."):
        found = getattr(found, attr)
    return found


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
    def __init__(self, path: Path, *, backend: str = "litert", threads: int | None = None,
                 device: str = "CPU", providers: list[str] | None = None):
        Interpreter = interpreter_class(backend)  # device and providers: not LiteRT options
        self.backend = backend
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
        self.outputs = [_tensor_info(d) for d in self._out]

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
