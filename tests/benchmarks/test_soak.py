"""The soak benchmark runs frames through the real run loop and reports memory and speed per pass."""

from __future__ import annotations

import json
from pathlib import Path

from edgecell.benchmarks import soak

CLASSIFIER = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "tiny_classifier_int8.tflite"


def test_soak_reports_rss_and_fps_for_each_pass(real_jpeg, tmp_path, capsys):
    assert soak.main(["--model", str(CLASSIFIER), "--image", str(real_jpeg), "--frames", "60", "--warmup", "20",
                      "--every", "10", "--overlay-every", "5", "--out", str(tmp_path),
                      "--json", str(tmp_path / "soak.json")]) == 0
    report = json.loads((tmp_path / "soak.json").read_text())
    none, overlays = report["passes"]
    assert none["overlays"] == "none" and none["overlay_files"] == 0 and none["failed"] == 0
    assert overlays["overlays"] == "every:5" and overlays["overlay_files"] == 12
    assert none["rss_growth_mb"] is not None and none["fps_after_warmup"] > 0
    assert [i for i, _ in none["samples"]] == [10, 20, 30, 40, 50, 60]
