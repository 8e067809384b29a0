"""The CLI as a user meets it: real processes, real files, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE_MODELS = Path(__file__).resolve().parent / "fixtures" / "models"


def edgecell(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EDGECELL_DEBUG"}
    return subprocess.run([sys.executable, "-m", "edgecell", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)  # a whole held-out split on a busy shared machine


@pytest.fixture(scope="module")
def classifier() -> Path:
    found = sorted(FIXTURE_MODELS.glob("*classifier*_int8.tflite"))
    assert found, "fixture classifier missing; run tests/fixtures/make_tiny_models.py"
    return found[0]


def test_help_lists_commands():
    out = edgecell("--help")
    assert out.returncode == 0
    for command in ("run", "info", "models", "eval", "bench"):
        assert command in out.stdout


def test_info_describes_device_as_json():
    out = edgecell("info", "--json")
    data = json.loads(out.stdout)
    assert data["cores"] >= 1 and "litert" in data["backends"]


def test_info_describes_model(classifier):
    data = json.loads(edgecell("info", classifier, "--json").stdout)
    assert data["backend"] == "litert" and data["inputs"][0]["dtype"] == "int8"
    assert data["metadata"]["task"] == "classify"


def test_run_single_image_writes_jsonl_and_overlay(classifier, real_jpeg, tmp_path):
    out = edgecell("run", classifier, real_jpeg, "-o", tmp_path)
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert record["ok"] and record["result"]["label"] in ("red", "green", "blue")
    assert set(record["timings"]) == {"pre_ms", "infer_ms", "post_ms", "total_ms"}
    assert Path(record["overlay"]).is_file()


def test_run_json_prints_one_line_per_image(classifier, real_jpeg, tmp_path):
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(real_jpeg.read_bytes())
    out = edgecell("run", classifier, tmp_path, "--json")
    assert [json.loads(l)["ok"] for l in out.stdout.splitlines()] == [True, True]


def test_batch_goes_on_past_bad_files_and_keeps_results(classifier, real_jpeg, bad_inputs, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, path in bad_inputs.items():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "good.jpg").write_bytes(real_jpeg.read_bytes())
    out = edgecell("run", classifier, folder, "-o", tmp_path / "out")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    records = [json.loads(l) for l in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(records) == len(bad_inputs) + 1
    assert [r["ok"] for r in records].count(True) == 1
    assert (tmp_path / "out" / "results.csv").read_text().count("\n") == len(records) + 1


@pytest.mark.parametrize("kind", ["empty", "truncated", "not_image", "bomb"])
def test_single_bad_image_is_one_line_and_nonzero(classifier, bad_inputs, kind):
    out = edgecell("run", classifier, bad_inputs[kind])
    assert out.returncode != 0
    errors = [l for l in out.stderr.splitlines() if l.startswith("edgecell: error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr


def test_foreign_model_file_is_one_line(tmp_path, real_jpeg):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model at all")
    out = edgecell("run", bad, real_jpeg)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "not a loadable ONNX model" in out.stderr


def test_missing_backend_names_the_extra(classifier, real_jpeg):
    if "tflite_runtime" in sys.modules or _has("tflite_runtime"):
        pytest.skip("tflite-runtime installed here")
    out = edgecell("run", classifier, real_jpeg, "--backend", "tflite-runtime")
    assert out.returncode == 2 and "pip install tflite-runtime" in out.stderr


def test_camera_that_does_not_exist(classifier):
    out = edgecell("run", classifier, "--camera", "97")
    assert out.returncode == 2 and "camera 97: cannot be opened" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_model_name_lists_shipped_models(real_jpeg):
    out = edgecell("run", "no-such-model", real_jpeg)
    assert out.returncode == 2 and "not a shipped model name" in out.stderr


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_model_whose_input_cannot_take_the_image_is_refused_at_load(classifier, real_jpeg, tmp_path):
    model = tmp_path / classifier.name
    model.write_bytes(classifier.read_bytes())
    meta = json.loads(classifier.with_suffix(".json").read_text())
    meta["input_size"] = [64, 64]
    model.with_suffix(".json").write_text(json.dumps(meta))
    out = edgecell("run", model, real_jpeg)
    assert out.returncode == 2 and "expects shape [1, 32, 32, 3]" in out.stderr


def test_run_bundle_uses_its_configured_pipeline_and_refuses_a_changed_byte(classifier, real_jpeg, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(real_jpeg.read_bytes())
    made = edgecell("bundle", classifier, "--profile", "x86-legacy", "--out", tmp_path / "b", "--no-wheels",
                    "--folder", "--json", "--run", f"{images} --out {tmp_path / 'results'} --top-k 2")
    assert made.returncode == 0, made.stderr
    folder = Path(json.loads(made.stdout)["bundle"])
    out = edgecell("run", folder)
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(l) for l in (tmp_path / "results" / "results.jsonl").read_text().splitlines()]
    assert record["ok"] and len(record["result"]["top"]) == 2
    model_file = next(p for p in sorted((folder / "models").iterdir()) if p.suffix in (".tflite", ".onnx", ".bin"))
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    out = edgecell("run", folder)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert model_file.name in out.stderr


def test_eval_products_reports_the_model_cards_accuracy(tmp_path):
    out = edgecell("eval", "products", "-o", tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "classification.json").read_text())
    top1 = report["models"]["litert-int8"]["top1"]
    assert 0.80 <= top1 <= 0.84  # model card: 82.0 % INT8 (QAT model) on the 345 test images
    assert "top-1" in out.stdout and (tmp_path / "confusion_matrices.png").is_file()


def test_eval_cells_reports_map_and_counting_accuracy(tmp_path):
    out = edgecell("eval", "cells", "-o", tmp_path)
    assert out.returncode == 0, out.stderr
    entry = json.loads((tmp_path / "cells_eval.json").read_text())["models"]["litert-int8"]
    assert 0.84 <= entry["map50"]["mean"] <= 0.88  # model card: 0.858 against the CBC labels (INT8)
    complete = entry["complete_labels"]["testing"]["counting"]
    assert complete["RBC"]["accuracy"] >= 0.95  # card: 1424/1385 red cells, 97.2 % against the complete labels
    assert complete["Platelets"]["accuracy"] >= 0.90  # card: 68/68 platelets (third round: stain rule, 0.35)
    assert "mAP@0.5" in out.stdout and "against complete labels" in out.stdout


def test_eval_cells_prints_the_complete_labels_before_the_partial_ones(tmp_path):
    """The CBC labels box about 57 % of the red cells, so their "RBC 20 %" must not read as the headline."""
    out = edgecell("eval", "cells", "-o", tmp_path)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("litert-int8:"))
    assert 0 <= line.index("against complete labels") < line.index("only part of the red cells")


def test_eval_xray_rebuilds_the_held_out_split_and_reports_the_cards_accuracy(tmp_path):
    out = edgecell("eval", "xray", "-o", tmp_path)
    assert out.returncode == 0, out.stderr
    entry = json.loads((tmp_path / "classification.json").read_text())["models"]["litert-int8"]
    assert entry["n"] == 601 and 0.885 <= entry["top1"] <= 0.925  # model card: 90.5 % INT8 LiteRT (pooled split)


def test_output_folder_it_cannot_write_is_one_line(classifier, real_jpeg, tmp_path):
    """A service's state folder it may not write (here: a path under a file) is one line, no traceback."""
    blocker = tmp_path / "state"
    blocker.write_text("a file, not a folder")
    out = edgecell("run", classifier, real_jpeg, "--out", str(blocker / "results"))
    assert out.returncode == 2 and out.stderr.startswith("edgecell: error: ") and str(blocker) in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
