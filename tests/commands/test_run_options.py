"""`edgecell run` refuses options that cannot be right at the option, in one line with the valid
range, before any model loads; a sidecar whose labels do not fit the model is refused at load,
naming the sidecar (issue 12 item 5)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"


def edgecell(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EDGECELL_DEBUG"}
    return subprocess.run([sys.executable, "-m", "edgecell", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.parametrize("option, value, expected", [
    ("--tiles", "50", "0 (automatic) to 8"),
    ("--max-frames", "-1", "1 or more"),
    ("--fps", "-5", "above 0"),
    ("--min-confidence", "5", "0.0 to 1.0"),
    ("--threads", "0", "1 to 1024"),
    ("--top-k", "0", "1 or more"),
    ("--gate-threshold", "-1", "0.0 or more"),
    ("--threshold", "RBC=5", "0.0 to 1.0"),
])
def test_option_out_of_range_is_one_line_with_the_range(option, value, expected, real_jpeg):
    out = edgecell("run", "cells", real_jpeg, option, value)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith(f"edgecell: error: {option}") and expected in lines[-1]
    assert "Traceback" not in out.stderr and "results" not in out.stdout


def test_sidecar_with_the_wrong_label_count_is_refused_at_load_naming_the_sidecar(tmp_path, real_jpeg):
    shutil.copy(FIXTURES / "tiny_classifier_int8.tflite", tmp_path / "m.tflite")
    info = json.loads((FIXTURES / "tiny_classifier_int8.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**info, "labels": ["red", "green", "blue", "violet"]}))
    out = edgecell("run", tmp_path / "m.tflite", real_jpeg, "-o", tmp_path / "out")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]  # one line, before any image
    assert "m.json lists 4 labels" in out.stderr and "gives 3 class scores" in out.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_rbc_counts_option_adds_the_cell_counters_counts_to_the_json():
    from edgecell.resources import shipped_path

    done = edgecell("run", "rbc", shipped_path("samples", "chula") / "chula_1.jpg", "--counts", "--json")
    record = json.loads(done.stdout.splitlines()[0])
    assert record["result"]["blood_counts"]["counts"]["RBC"] > 0, done.stderr
