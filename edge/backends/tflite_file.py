"""Read a `.tflite` file's input/output tensor facts (name, dtype, scale, zero point) without any
TFLite runtime.

A full-integer TFLite model exchanges int8/uint8 tensors whose real values are
`scale * (q - zero_point)`; those two numbers live in the file's flatbuffer. LiteRT reports them,
but other readers of the same file (OpenVINO's TFLite frontend) do not: their ports only say
"int8". A session that feeds such a port must quantize and dequantize exactly as LiteRT does, so
it reads the numbers from the file here. Only the few flatbuffer fields needed are decoded
(schema: tensorflow/compiler/mlir/lite/schema/schema.fbs), so a device with OpenVINO alone
needs nothing else installed.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from edgecell.backends.base import TensorInfo
from edgecell.errors import ModelError

#: schema.fbs `TensorType` -> numpy dtype name (the types a model input or output can have here)
_TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16",
                 9: "int8", 10: "float64", 12: "uint64", 15: "uint32", 16: "uint16"}


class _Table:
    """One flatbuffer table: fields are found through its vtable; absent fields read as None."""

    def __init__(self, buf: bytes, pos: int):
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_size = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, index: int) -> int | None:
        slot = 4 + 2 * index
        if slot >= self.vtable_size:
            return None
        offset = struct.unpack_from("<H", self.buf, self.vtable + slot)[0]
        return self.pos + offset if offset else None

    def _deref(self, at: int) -> int:
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def scalar(self, index: int, fmt: str, default=0):
        at = self._field(index)
        return default if at is None else struct.unpack_from("<" + fmt, self.buf, at)[0]

    def table(self, index: int) -> _Table | None:
        at = self._field(index)
        return None if at is None else _Table(self.buf, self._deref(at))

    def string(self, index: int) -> str:
        at = self._field(index)
        if at is None:
            return ""
        start = self._deref(at)
        length = struct.unpack_from("<I", self.buf, start)[0]
        return self.buf[start + 4:start + 4 + length].decode("utf-8", "replace")

    def vector(self, index: int, fmt: str) -> list:
        at = self._field(index)
        if at is None:
            return []
        start = self._deref(at)
        length = struct.unpack_from("<I", self.buf, start)[0]
        return list(struct.unpack_from(f"<{length}{fmt}", self.buf, start + 4))

    def tables(self, index: int) -> list[_Table]:
        at = self._field(index)
        if at is None:
            return []
        start = self._deref(at)
        length = struct.unpack_from("<I", self.buf, start)[0]
        return [_Table(self.buf, self._deref(start + 4 + 4 * i)) for i in range(length)]


def _tensor_info(tensor: _Table) -> TensorInfo:
    dtype = _TENSOR_TYPES.get(tensor.scalar(1, "b"), "unknown")
    quant = tensor.table(4)
    scales = quant.vector(2, "f") if quant else []
    zero_points = quant.vector(3, "q") if quant else []
    quantized = dtype in ("int8", "uint8", "int16") and len(scales) == 1 and scales[0] != 0.0
    return TensorInfo(name=tensor.string(3), shape=tuple(tensor.vector(0, "i")), dtype=dtype,
                      scale=float(scales[0]) if quantized else None,
                      zero_point=int(zero_points[0]) if quantized and zero_points else (0 if quantized else None))


def read_io(path: str | os.PathLike) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The main subgraph's inputs and outputs as `TensorInfo`s, with their quantization."""
    path = Path(path)
    buf = path.read_bytes()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelError(f"{path}: not a TFLite flatbuffer (no TFL3 identifier); re-export or re-copy the file")
    try:
        model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
        subgraph = model.tables(2)[0]
        tensors = subgraph.tables(0)
        return ([_tensor_info(tensors[i]) for i in subgraph.vector(1, "i")],
                [_tensor_info(tensors[i]) for i in subgraph.vector(2, "i")])
    except (struct.error, IndexError) as exc:
        raise ModelError(f"{path}: damaged TFLite flatbuffer ({exc}); re-export or re-copy the file") from None
