"""ONNX models through ONNX Runtime. Execution providers are selectable: on a Jetson,
`--providers TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecell.backends import import_backend
from edgecell.backends.base import Session, TensorInfo
from edgecell.errors import BackendNotInstalled, ModelError

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
              "tensor(int8)": "int8", "tensor(int64)": "int64", "tensor(int32)": "int32"}


class OnnxRuntimeSession(Session):
    backend = "onnxruntime"

    def __init__(self, path: Path, *, backend: str = "onnxruntime", threads: int | None = None,
                 device: str = "CPU", providers: list[str] | None = None):
        ort = import_backend(backend)
        self.path = Path(path)
        self.threads = threads
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        available = ort.get_available_providers()
        wanted = providers or ["CPUExecutionProvider"]
        missing = [p for p in wanted if p not in available]
        if missing:
            raise BackendNotInstalled(f"ONNX Runtime provider(s) {', '.join(missing)} not available; "
                                      f"this onnxruntime has: {', '.join(available)}")
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=opts, providers=wanted)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path}: not a loadable ONNX model ({first}); re-export or re-copy the file") from None
        self.embedded_metadata = self._sess.get_modelmeta().custom_metadata_map.get("edgecell")
        self.inputs = [self._info(a) for a in self._sess.get_inputs()]
        self.outputs = [self._info(a) for a in self._sess.get_outputs()]
        self._out_names = [o.name for o in self.outputs]
        self._refuse_unknown_quantization()

    @staticmethod
    def _info(arg) -> TensorInfo:
        shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
        return TensorInfo(name=arg.name, shape=shape, dtype=_ORT_TYPES.get(arg.type, arg.type))

    def run(self, feeds):
        feeds = self._as_feeds(feeds)
        arrays = self._sess.run(self._out_names, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})
        return {name: np.asarray(a, dtype=np.float32) for name, a in zip(self._out_names, arrays)}

    def run_raw(self, feeds):
        return self._sess.run(self._out_names, feeds)
