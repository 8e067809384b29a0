"""A real small matrix: two backends x two precisions on tiny models, few iterations; a corrupt
model and a backend that is not installed give "skipped" rows; results.jsonl grows row by row.

Tiny real models:

Prefers the committed fixtures in tests/fixtures/models/ (FP32 + INT8 siblings in TFLite,
OpenVINO IR and ONNX). Until they exist, builds a KB-sized conv classifier as ONNX with the
`onnx` helper (no TensorFlow), an INT8 ONNX with ONNX Runtime's static quantization, and the
OpenVINO IR of both: two backends (onnxruntime, openvino) x two precisions (fp32, int8).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "models"
SIZE = 32


def _committed_pairs() -> list[Path] | None:
    """The committed tiny classifier as TFLite + OpenVINO IR, FP32 + INT8 (LiteRT exercises the
    full-integer input quantization, OpenVINO the async-throughput path), or None."""
    names = ["tiny_classifier_fp32.tflite", "tiny_classifier_int8.tflite",
             "tiny_classifier_fp32.xml", "tiny_classifier_int8.xml"]
    files = [FIXTURES / n for n in names]
    if all(f.is_file() and f.stat().st_size > 0 for f in files) and all(
            f.with_suffix(".bin").is_file() for f in files if f.suffix == ".xml"):
        return files
    return None


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
    committed = None if os.environ.get("EDGECELL_TEST_BUILD_MODELS") else _committed_pairs()
    if committed:
        return {"dir": FIXTURES, "files": committed, "backends": ["litert", "openvino"], "committed": True}
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


def copy_family(files: list[Path], dest: Path) -> list[Path]:
    out = []
    for f in files:
        for side in (f, f.with_suffix(".bin"), f.with_suffix(".json")):
            if side.is_file() and not (dest / side.name).exists():
                shutil.copy(side, dest / side.name)
        out.append(dest / f.name)
    return out


# ------------------------------------------------------------------------------------------
from edgecell.benchmarks import matrix, report  # noqa: E402
from edgecell.benchmarks.vendor import parse_benchmark_app  # noqa: E402

FORMATS = {".tflite": ["litert", "tflite-runtime"], ".xml": ["openvino"], ".onnx": ["onnxruntime"]}


@pytest.fixture(scope="module")
def matrix_run(tiny_models, tmp_path_factory):
    """Run the matrix once: 4 real rows + a corrupt .tflite; tflite-runtime reported as not installed."""
    d = tmp_path_factory.mktemp("bench")
    models = copy_family(tiny_models["files"], d)
    broken = d / "broken_fp32.tflite"
    broken.write_bytes(b"this is not a flatbuffer" * 10)
    models.append(broken)
    mp = pytest.MonkeyPatch()
    real = matrix._installed
    mp.setattr(matrix, "_installed", lambda b: False if b == "tflite-runtime" else real(b))
    planned = matrix.plan(models, threads=[1], iterations=15, warmup=2, with_siblings=False, formats=FORMATS)
    mp.undo()
    results = d / "out" / "results.jsonl"
    lines_seen = []

    def on_row(row, done, total):
        lines_seen.append((done, len(results.read_text().splitlines())))

    rows = matrix.run_matrix(planned, results, on_row=on_row, timeout=120)
    return {"rows": rows, "results": results, "lines_seen": lines_seen, "dir": d, "broken": broken,
            "backends": tiny_models["backends"]}


def test_two_backends_two_precisions_measured(matrix_run):
    ok = [r for r in matrix_run["rows"] if r["status"] == "ok"]
    assert {(r["backend"], r["precision"]) for r in ok} == {
        (b, p) for b in matrix_run["backends"] for p in ("fp32", "int8")}
    for r in ok:
        lat = r["latency_ms"]
        assert lat["n"] == 15 and 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["raw_latency_ms"]["n"] == 15 and r["overhead_ratio"] > 0
        assert r["load_ms"] > 0 and r["first_ms"] > 0 and r["peak_rss_mb"] > 10 and r["size_bytes"] > 0
        assert r["threads"] == 1 and r["pid"] != ok[0]["pid"] or r is ok[0]  # each row in its own process
        assert r["pipeline_ms"]["total"]["median"] > 0  # classify task: pre / inference / post split
        assert len(r["timings_ms"]) == 15
        if r["backend"] == "openvino":
            assert r["async"]["fps"] > 0 and r["async"]["requests"] >= 1
    assert len({r["input_sha1"] for r in ok}) == 1  # the same input tensor for every backend
    assert len({r["pid"] for r in ok}) == len(ok)


def test_corrupt_model_and_missing_backend_are_skipped(matrix_run):
    broken = [r for r in matrix_run["rows"] if r["model"] == str(matrix_run["broken"])]
    by_backend = {r["backend"]: r for r in broken}
    assert by_backend["litert"]["status"] == "skipped"
    assert "not a loadable" in by_backend["litert"]["reason"]
    for r in matrix_run["rows"]:
        if r["backend"] == "tflite-runtime":
            assert r["status"] == "skipped" and "not installed" in r["reason"]
            assert r["install"] == "pip install tflite-runtime"


def test_results_appended_row_by_row(matrix_run):
    assert matrix_run["lines_seen"] == [(i + 1, i + 1) for i in range(len(matrix_run["rows"]))]
    on_disk = matrix.read_jsonl(matrix_run["results"])
    assert [(r["model"], r["backend"], r["status"]) for r in on_disk] == [
        (r["model"], r["backend"], r["status"]) for r in matrix_run["rows"]]
    # an interrupted write leaves half a line: the reader keeps every complete row
    with open(matrix_run["results"], "a") as fh:
        fh.write('{"model": "half')
    assert len(matrix.read_jsonl(matrix_run["results"])) == len(on_disk)


def test_report_files(matrix_run, tmp_path):
    result = report.build(matrix_run["rows"], meta={"iterations": 15, "warmup": 2, "repeats": 1})
    files = report.write(result, tmp_path, formats=("json", "csv", "md", "png"))
    assert set(files) >= {"json", "csv", "md", "png"}
    md = (tmp_path / "results.md").read_text()
    assert "INT8 vs FP32" in md and "claims" in md and "GTX 1050 Ti" in md
    assert (tmp_path / "results.csv").read_text().count("\n") == len(matrix_run["rows"]) + 1
    assert result["int8_vs_fp32"] and all(c["int8_over_fp32"] > 0 for c in result["int8_vs_fp32"])
    assert (tmp_path / "latency.png").stat().st_size > 1000
    report.print_table(result)


def test_crashing_or_hanging_row_fails_alone(tmp_path, matrix_run):
    ok = next(r for r in matrix_run["rows"] if r["status"] == "ok")
    planned = [{"spec": {"model": "a_fp32.onnx", "backend": "onnxruntime", "threads": 1}},
               {"spec": {"model": ok["model"], "backend": ok["backend"], "threads": 1}}]

    def runner(spec):
        if spec["model"] == "a_fp32.onnx":
            raise RuntimeError("row process died")
        return {"model": spec["model"], "backend": spec["backend"], "status": "ok"}

    rows = matrix.run_matrix(planned, tmp_path / "r.jsonl", row_runner=runner, repeats=2)
    assert [r["status"] for r in rows] == ["failed", "ok", "ok", "failed"]  # second pass reversed
    hung = matrix.run_row_subprocess({"model": ok["model"], "backend": ok["backend"], "threads": 1,
                                      "iterations": 10**9}, timeout=3)
    assert hung["status"] == "failed" and "did not finish" in hung["reason"]


def test_missing_file_one_skipped_row(tmp_path):
    planned = matrix.plan([tmp_path / "nothing_int8.tflite"], threads=[1, 2])
    assert len(planned) == 1 and "no such model file" in planned[0]["skip"]["reason"]


def test_siblings_and_family(tmp_path):
    for n in ("m_int8.tflite", "m_fp32.tflite", "m_fp32.onnx", "m_int8.xml", "other_fp32.tflite"):
        (tmp_path / n).write_bytes(b"x")
    assert matrix.family(tmp_path / "m_int8.tflite") == "m"
    assert [p.name for p in matrix.siblings(tmp_path / "m_int8.tflite")] == [
        "m_fp32.onnx", "m_fp32.tflite", "m_int8.tflite", "m_int8.xml"]


def test_parse_benchmark_app_output():
    text = """[ INFO ] Count:               100 iterations
[ INFO ] Duration:            12.34 ms
[ INFO ] Latency:
[ INFO ]    Median:           0.11 ms
[ INFO ]    Average:          0.12 ms
[ INFO ]    Min:              0.09 ms
[ INFO ]    Max:              0.55 ms
[ INFO ] Throughput:          8103.73 FPS"""
    p = parse_benchmark_app(text)
    assert p == {"median_ms": 0.11, "average_ms": 0.12, "min_ms": 0.09, "max_ms": 0.55, "fps": 8103.73, "count": 100}
    us = parse_benchmark_app("[ INFO ]    Median:        152.28 us\n[ INFO ]    Average:    2.5 ms")
    assert us["median_ms"] == pytest.approx(0.15228) and us["average_ms"] == 2.5


def test_accuracy_column_from_eval_report(tmp_path):
    ev = {"models": {"litert-int8": {"path": "/m/cells_int8.tflite", "backend": "litert", "precision": "int8",
                                     "map50": {"mean": 0.61}},
                     "openvino-int8": {"path": "/m/cells_int8.xml", "backend": "openvino", "top1": 0.9}}}
    (tmp_path / "detection.json").write_text(json.dumps(ev))
    acc = report.load_accuracy(tmp_path)
    rows = [{"model": "/x/cells_int8.tflite", "name": "cells_int8", "backend": "litert", "status": "ok"},
            {"model": "/x/cells_int8.xml", "name": "cells_int8", "backend": "openvino", "status": "ok"}]
    assert [report._accuracy_for(r, acc) for r in rows] == [0.61, 0.9]


def test_timed_runs_interleaves_and_honours_budget():
    from edgecell.benchmarks.harness import timed_runs

    calls = []
    a, b = timed_runs(lambda x: calls.append("ours"), None, lambda x: calls.append("raw"), None,
                      iterations=20, seconds=None, chunks=4)
    assert len(a) == len(b) == 20 and calls[:5] == ["ours"] * 5 and calls[5:10] == ["raw"] * 5
    import time

    t0 = time.perf_counter()
    a, b = timed_runs(lambda x: time.sleep(0.002), None, None, None, iterations=10**6, seconds=0.1)
    assert 0.09 < time.perf_counter() - t0 < 1.0 and len(a) >= 5 and not b
    assert all(t >= 1.9 for t in a)  # milliseconds
