"""Gate evaluation arithmetic on hand-made data (no model, no training)."""

from __future__ import annotations

import pytest

from edgecell.evaluation import gate as ev


def test_gate_metrics_hand_values():
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    p = [0.9, 0.6, 0.2, 0.1, 0.4, 0.7, 0.3, 0.8]
    m = ev.gate_metrics(y, p, 0.5)
    # TP: 0.9 0.6 0.8 -> 3; FN: 0.2 -> 1; TN: 0.1 0.4 0.3 -> 3; FP: 0.7 -> 1
    assert m["confusion"] == [[3, 1], [1, 3]]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["balanced_accuracy"] == pytest.approx(0.75)
    assert m["recall_useful"] == pytest.approx(0.75) and m["recall_not_useful"] == pytest.approx(0.75)
    # threshold is inclusive: 0.6 >= 0.6 accepted
    assert ev.gate_metrics([1], [0.6], 0.6)["accuracy"] == 1.0
    # imbalanced: balanced accuracy differs from accuracy
    m = ev.gate_metrics([1, 1, 1, 0], [0.9, 0.9, 0.9, 0.9], 0.5)
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == 0.5


def test_task_accuracy_rises_on_accepted():
    correct = [True, True, False, False, True, False]
    accepted = [True, True, False, False, False, True]
    t = ev.task_with_gate(correct, accepted)
    assert t["accuracy_all"] == pytest.approx(3 / 6)
    assert t["accuracy_accepted"] == pytest.approx(2 / 3)
    assert t["share_rejected"] == pytest.approx(0.5)
    assert t["rejected_but_correct"] == 1 and t["accepted_but_wrong"] == 1
    assert t["n"] == 6 and t["n_accepted"] == 3
    none = ev.task_with_gate([True, False], [False, False])
    assert none["accuracy_accepted"] is None and none["share_rejected"] == 1.0


def test_by_group_and_jpeg_axis():
    groups = ["jpeg:2", "jpeg:2", "none", "blur:4"]
    g = ev.by_group(groups, [False, True, True, False], [False, True, True, False])
    assert list(g) == ["jpeg:2", "none", "blur:4"]
    assert g["jpeg:2"]["accuracy_all"] == 0.5 and g["jpeg:2"]["accuracy_accepted"] == 1.0
    assert ev.jpeg_quality("jpeg:15") == 15 and ev.jpeg_quality("none") == 100 and ev.jpeg_quality("noise:40") is None
    assert ev.agreement([0.1, 0.6, 0.9], [0.2, 0.4, 0.95], 0.5) == pytest.approx(2 / 3)


def test_report_and_plot(tmp_path):
    per = {"none": ev.task_with_gate([True, True], [True, True]),
           "jpeg:2": ev.task_with_gate([False, True, False], [False, True, False])}
    report = {"task_model": {"file": "products_int8.tflite"}, "test_originals": 2, "test_samples": 5,
              "test_labelled": 4, "test_label_counts": {"useful": 3, "not_useful": 1, "left_out": 1},
              "gates": {"litert-int8": {"file": "gate_int8.tflite", "threshold": 0.5}},
              "gate_accuracy": {"litert-int8": ev.gate_metrics([1, 1, 1, 0], [0.9, 0.8, 0.7, 0.2], 0.5)},
              "task_accuracy": {"litert-int8": ev.task_with_gate([False, True, False], [False, True, False])},
              "int8_vs_fp32_agreement": {"litert": 0.98}, "per_degradation": {"litert-int8": per},
              "jpeg_curve": {"litert-int8": {"2": per["jpeg:2"], "100": per["none"]}},
              "latency": {"gate_int8.tflite": {"gate": "gate_int8.tflite", "task_model": "t.tflite", "variants": {
                  v: {"wall_ms": {"median": m, "p90": 2 * m}, "cpu_ms": {"median": m}}
                  for v, m in (("ungated", 4.0), ("gated", 5.0), ("gated_separate", 6.0))}, "overhead": {
                  v: {"median_ratio": r, "p90_ratio": r, "cpu_median_ratio": r, "paired_median_ratio": r,
                      "per_repeat_median_ratio": [r]} for v, r in (("gated", 1.25), ("gated_separate", 1.5))}}}}
    png = ev.plot_accuracy_vs_jpeg(report, tmp_path / "curve.png")
    assert png == "curve.png" and (tmp_path / "curve.png").stat().st_size > 1000
    from edgecell.benchmarks.gate_overhead import markdown as overhead_table

    md = ev.markdown_report(report, png, overhead_table)
    assert "100.0 %" in md and "33.3 %" in md and "| 1.250 |" in md and "![task accuracy" in md


def test_unlabelled_task_split_rows_give_task_figures_but_no_gate_accuracy(tmp_path):
    """--task-split: degraded copies of images the task model never saw, no labels: the report has
    the task accuracy all vs accepted and the share rejected, and no (empty) gate accuracy."""
    import json
    import shutil
    from pathlib import Path

    from edgecell.calibration.gate_data import degraded_rows
    from edgecell.modelinfo import read_model_info

    models = Path(__file__).resolve().parents[2] / "edge" / "models"
    for p in sorted((models.parent / "samples" / "products").glob("*.jpg"))[:2]:
        folder = tmp_path / "data" / "test" / p.name.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / p.name)
    task = models / "products_int8.tflite"
    info = read_model_info(task)
    rows = degraded_rows("products", tmp_path / "data", "test", info.labels, info.settings,
                         specs=["none", "blur:7"])
    report = ev.evaluate_gate([models / "gate_products_int8.tflite"], task, None, None, tmp_path / "data",
                              tmp_path / "out", rows=rows)
    assert report["gate_accuracy"] == {} and report["test_samples"] == 4 and report["test_labelled"] == 0
    t = report["task_accuracy"]["litert-int8"]
    assert t["n"] == 2 and t["pristine"]["n"] == 2 and 0 <= t["share_rejected"] <= 1
    assert json.loads((tmp_path / "out" / "gate.json").read_text())["labels_csv"] is None
