"""The paper's utility formula and labelling rules on hand-made values (no model, no training)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecell.convert import gate_labels as gl


def test_utility_formula_hand_values():
    # f = (phi - phi_rec) / (1 - (phi' - phi_rec))
    assert gl.utility(0.9, 0.95, 0.5) == pytest.approx(0.4 / 0.55)
    assert gl.utility(0.5, 0.8, 0.5) == pytest.approx(0.0)
    assert gl.utility(0.2, 0.9, 0.5) == pytest.approx(-0.3 / 0.6)  # below phi_rec: negative
    assert gl.utility(1.0, 1.0, 0.0) > 1e5  # denominator clipped, not a ZeroDivisionError
    # as printed, a higher pristine confidence shrinks the denominator: 0.2 / 0.51 vs 0.2 / 0.8
    assert gl.utility(0.7, 0.99, 0.5) == pytest.approx(0.2 / 0.51)
    assert gl.utility(0.7, 0.7, 0.5) == pytest.approx(0.2 / 0.8)


def test_classification_rule():
    truth = 3
    assert gl.classification_label(3, 3, truth, 0.95) == 1  # same as pristine, right, confident
    assert gl.classification_label(3, 3, truth, 0.90) == 1  # >= T_H
    assert gl.classification_label(3, 3, truth, 0.89) is None  # right but not confident enough
    assert gl.classification_label(3, 5, truth, 0.05) == 0  # wrong, true class < T_L
    assert gl.classification_label(3, 5, truth, 0.10) is None  # wrong but true class not < T_L
    assert gl.classification_label(2, 3, truth, 0.99) is None  # pristine already wrong: left out
    assert gl.classification_label(2, 5, truth, 0.01) is None
    # relaxed thresholds
    assert gl.classification_label(3, 3, truth, 0.6, t_high=0.5, t_low=0.5) == 1
    assert gl.classification_label(3, 1, truth, 0.3, t_high=0.5, t_low=0.5) == 0


def test_combine_by_agreement():
    assert gl.combine_labels([1, 1]) == 1
    assert gl.combine_labels([0, 0, 0]) == 0
    assert gl.combine_labels([1, 0]) is None
    assert gl.combine_labels([1, None]) is None
    assert gl.combine_labels([]) is None
    assert gl.count_labels([1, 1, 0, None]) == {"useful": 2, "not_useful": 1, "left_out": 1}


def test_detection_rule():
    gt = np.array([[10, 10, 50, 50]], np.float32)
    hit = np.array([[12, 12, 50, 50]], np.float32)  # IoU 0.9
    miss = np.array([[40, 40, 90, 90]], np.float32)  # IoU < 0.5
    assert gl.detection_useful(hit, [0.8], gt)
    assert not gl.detection_useful(hit, [0.4], gt)  # confidence below 0.5
    assert gl.detection_useful(hit, [0.5], gt)  # >= 0.5
    assert not gl.detection_useful(miss, [0.9], gt)
    assert gl.detection_useful(np.vstack([miss, hit]), [0.9, 0.6], gt)  # at least one box
    assert not gl.detection_useful(np.zeros((0, 4)), [], gt)
    assert not gl.detection_useful(hit, [0.9], np.zeros((0, 4)))
    assert not gl.detection_useful(hit, [0.9], gt, classes=[1], gt_classes=[0])
    assert gl.detection_useful(hit, [0.9], gt, classes=[0], gt_classes=[0])
    with pytest.raises(ValueError):
        gl.detection_useful(hit, [0.9, 0.8], gt)


def _row(image, truth, pp, p, phi):
    return {"image": image, "truth": truth, "m0_pred_pristine": pp, "m0_pred": p, "m0_phi": phi}


def test_relabel_and_split_by_original():
    rows = [_row("a.jpg", 0, 0, 0, 0.95), _row("a.jpg", 0, 0, 1, 0.3), _row("b.jpg", 1, 1, 1, 0.6)]
    assert gl.relabel(rows, 1, 0.9, 0.1) == [1, None, None]
    assert gl.relabel(rows, 1, 0.5, 0.5) == [1, 0, 1]
    rows = [_row(f"{c}/{i}.jpg", c, c, c, 0.9) for c in range(2) for i in range(10) for _ in range(3)]
    held = gl.split_by_original(rows, 0.2, seed=1)
    assert len(held) == 4 and sum(h.startswith("0/") for h in held) == 2
    assert held == gl.split_by_original(rows, 0.2, seed=1)
    train_images = {r["image"] for r in rows if r["image"] not in held}
    assert not train_images & held


def test_gate_sidecar_and_threshold_choice():
    from edgecell.convert import train_gate as tg

    info = tg.gate_info(128, 0.75, "products")
    assert info.task == "gate" and info.labels == ["not_useful", "useful"] and info.input_size == (128, 128)
    assert info.settings == {"threshold": 0.75, "for_task": "products"}
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    p = np.array([0.1, 0.3, 0.62, 0.7, 0.8, 0.9, 0.95, 0.99])
    assert tg.balanced_accuracy(y, p, 0.5) == pytest.approx((2 / 3 + 1) / 2)
    t = tg.choose_threshold(y, p)
    assert 0.62 < t <= 0.7 and tg.balanced_accuracy(y, p, t) == 1.0


def test_degraded_rows_and_a_labelling_run_on_a_folder_dataset(tmp_path):
    """Products-style folders: every image x every degradation, seeded, paths relative to the
    dataset; then the real labelling run on two photos with the shipped product classifier."""
    import csv
    import shutil
    from pathlib import Path

    from edgecell.calibration import degrade

    models = Path(__file__).resolve().parents[2] / "edge" / "models"
    photos = sorted((models.parent / "samples" / "products").glob("*.jpg"))[:2]
    for p in photos:
        folder = tmp_path / "test" / p.name.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / p.name)
    from edgecell.modelinfo import read_model_info

    info = read_model_info(models / "products_int8.tflite")
    specs = ["none", "jpeg:2", "noise:50"]
    rows = gl.degraded_rows("products", tmp_path, "test", info.labels, info.settings, specs=specs)
    assert len(rows) == 2 * len(specs) and all(r["label"] is None for r in rows)
    assert rows[0]["image"].startswith("test/") and rows[0]["seed"] == degrade.sample_seed(rows[0]["image"], "none")
    out = tmp_path / "labels.csv"
    summary = gl.label_dataset([models / "products_int8.tflite"], tmp_path, out, splits="test", specs=specs,
                               t_high=0.9, t_low=0.1, phi_rec=None, seed=0)
    assert summary["task"] == "products" and summary["samples"] == 6
    back = gl.read_labels(out)
    assert [r["degradation"] for r in back] == specs * 2
    assert sum(summary["counts"].values()) == 6
    with open(out) as f:
        assert "m0_phi" in next(csv.reader(f))
