"""Tiny real models for the benchmark tests.

Prefers the committed fixtures in tests/fixtures/models/ (FP32 + INT8 siblings in TFLite,
OpenVINO IR and ONNX). Until they exist, builds a KB-sized conv classifier as ONNX with the
`onnx` helper (no TensorFlow), an INT8 ONNX with ONNX Runtime's static quantization, and the
OpenVINO IR of both: two backends (onnxruntime, openvino) x two precisions (fp32, int8).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "models"
SIZE = 32


def _committed_pairs() -> list[Path] | None:
    """Committed fixture files of one family with fp32 + int8 in two formats, or None."""
    if not FIXTURES.is_dir():
        return None
    files = sorted(p for p in FIXTURES.iterdir() if p.suffix in (".tflite", ".xml", ".onnx"))
    by_format: dict[str, set[str]] = {}
    for p in files:
        stem = p.stem.lower()
        prec = "int8" if stem.endswith("int8") else "fp32" if stem.endswith("fp32") else None
        if prec:
            by_format.setdefault(p.suffix, set()).add(prec)
    complete = [s for s, precs in by_format.items() if {"fp32", "int8"} <= precs]
    if len(complete) < 2:
        return None
    return [p for p in files if p.suffix in complete[:2] and p.stem.lower().endswith(("int8", "fp32"))]


def _build_onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(np.zeros(8, np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (16, 8, 3, 3)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(np.zeros(16, np.float32), "b2")
    wf = numpy_helper.from_array(rng.normal(0, 0.3, (16, 4)).astype(np.float32), "wf")
    bf = numpy_helper.from_array(np.zeros(4, np.float32), "bf")
    perm = helper.make_node("Transpose", ["input"], ["x_nchw"], perm=[0, 3, 1, 2])
    c1 = helper.make_node("Conv", ["x_nchw", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2])
    r1 = helper.make_node("Relu", ["c1"], ["r1"])
    c2 = helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2])
    r2 = helper.make_node("Relu", ["c2"], ["r2"])
    gap = helper.make_node("GlobalAveragePool", ["r2"], ["gap"])
    flat = helper.make_node("Flatten", ["gap"], ["flat"])
    fc = helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"])
    sm = helper.make_node("Softmax", ["logits"], ["probs"], axis=1)
    graph = helper.make_graph(
        [perm, c1, r1, c2, r2, gap, flat, fc, sm], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 4])],
        [w1, b1, w2, b2, wf, bf])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


def _quantize_onnx(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.items = iter([{"input": rng.random((1, SIZE, SIZE, 3), dtype=np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(src), str(dst), Reader(), activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, reduce_range=True)


def _to_ir(src: Path, dst: Path) -> None:
    import openvino as ov

    ov.save_model(ov.convert_model(str(src)), str(dst), compress_to_fp16=False)


def _sidecar(path: Path, precision: str) -> None:
    path.with_suffix(".json").write_text(json.dumps({
        "task": "classify", "name": "tiny", "labels": ["a", "b", "c", "d"], "input_size": [SIZE, SIZE],
        "channels": 3, "layout": "NHWC", "mean": [0.0], "std": [255.0], "precision": precision}))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """{"dir": Path, "files": [...], "backends": [two backends], "committed": bool}"""
    committed = _committed_pairs()
    if committed:
        suffixes = sorted({p.suffix for p in committed})
        backend = {".tflite": "litert", ".xml": "openvino", ".onnx": "onnxruntime"}
        return {"dir": FIXTURES, "files": committed, "backends": [backend[s] for s in suffixes], "committed": True}
    d = tmp_path_factory.mktemp("models")
    fp32 = d / "tiny_fp32.onnx"
    int8 = d / "tiny_int8.onnx"
    _build_onnx(fp32)
    _quantize_onnx(fp32, int8)
    _to_ir(fp32, d / "tiny_fp32.xml")
    _to_ir(int8, d / "tiny_int8.xml")
    for p in (fp32, int8):
        _sidecar(p, "int8" if "int8" in p.stem else "fp32")
    files = [fp32, int8, d / "tiny_fp32.xml", d / "tiny_int8.xml"]
    return {"dir": d, "files": files, "backends": ["onnxruntime", "openvino"], "committed": False}


@pytest.fixture
def corrupt_model(tmp_path) -> Path:
    p = tmp_path / "broken_fp32.tflite"
    p.write_bytes(b"this is not a flatbuffer" * 10)
    return p


def copy_family(files: list[Path], dest: Path) -> list[Path]:
    out = []
    for f in files:
        for side in (f, f.with_suffix(".bin"), f.with_suffix(".json")):
            if side.is_file() and not (dest / side.name).exists():
                shutil.copy(side, dest / side.name)
        out.append(dest / f.name)
    return out
