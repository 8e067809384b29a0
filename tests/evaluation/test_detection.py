"""mAP@0.5, counting accuracy (Table 2), mean absolute count error and the threshold sweep
(Table 1), on hand-made boxes."""

from __future__ import annotations

import numpy as np
import pytest

from edgecell.evaluation.detection import (average_precision, count_matrix, counting_accuracy, counting_metrics,
                                           map50, match_detections, threshold_sweep)

LABELS = ["RBC", "WBC", "Platelets"]


def test_match_one_detection_per_truth():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 11], [50, 50, 60, 60]], np.float32)
    tp = match_detections(boxes, np.array([0.9, 0.8, 0.7]), gt)
    assert tp.tolist() == [True, False, False]  # the duplicate is a false positive


def test_map_perfect_and_hand_computed():
    gt = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.array([0, 1]))]
    perfect = [(gt[0][0].copy(), np.array([0, 1]), np.array([0.9, 0.8], np.float32))]
    m = map50(perfect, gt, LABELS)
    assert m["ap"]["RBC"] == 1.0 and m["ap"]["WBC"] == 1.0 and np.isnan(m["ap"]["Platelets"])
    assert m["map"] == 1.0
    # RBC: 2 truths; detections by score: FP (0.9), TP (0.8), TP (0.3)
    gt2 = [(np.array([[0, 0, 10, 10], [40, 40, 50, 50]], np.float32), np.array([0, 0]))]
    pred = [(np.array([[100, 100, 110, 110], [0, 0, 10, 10], [40, 41, 50, 51]], np.float32),
             np.array([0, 0, 0]), np.array([0.9, 0.8, 0.3], np.float32))]
    m = map50(pred, gt2, LABELS)
    # precision at recall 0.5 is 1/2, at recall 1.0 is 2/3 -> interpolated: 0.5 * 2/3 + 0.5 * 2/3
    assert m["ap"]["RBC"] == pytest.approx(2 / 3)
    ap, prec, rec = average_precision(np.array([0.9, 0.8, 0.3]), np.array([False, True, True]), 2)
    assert ap == pytest.approx(2 / 3) and rec[-1] == 1.0


def test_iou_below_half_is_a_miss():
    gt = [(np.array([[0, 0, 10, 10]], np.float32), np.array([2]))]
    pred = [(np.array([[5, 0, 15, 10]], np.float32), np.array([2]), np.array([0.9], np.float32))]  # IoU 1/3
    assert map50(pred, gt, LABELS)["ap"]["Platelets"] == 0.0


def test_counting_accuracy_and_mae():
    assert counting_accuracy(792 + 31, 792) == pytest.approx(1 - 31 / 792)
    assert counting_accuracy(0, 0) == 1.0
    est = np.array([[10, 1, 0], [12, 1, 2]])
    gt = np.array([[11, 1, 1], [10, 1, 1]])
    m = counting_metrics(est, gt, LABELS)
    assert m["RBC"]["accuracy"] == pytest.approx(1 - 1 / 21) and m["RBC"]["mae_per_image"] == pytest.approx(1.5)
    assert m["WBC"]["accuracy"] == 1.0 and m["Platelets"]["mae_per_image"] == pytest.approx(1.0)


def test_sweep_picks_threshold_with_smallest_error():
    # one image, 3 RBC truths; RBC scores 0.9, 0.8, 0.7, 0.3 -> best RBC threshold is > 0.3 (3 kept)
    # one WBC truth with score 0.25 -> best WBC threshold is 0.20 or 0.25 (lowest kept: 0.20)
    preds = [(np.zeros((5, 4), np.float32), np.array([0, 0, 0, 0, 1]), np.array([0.9, 0.8, 0.7, 0.3, 0.25], np.float32))]
    gt = np.array([[3, 1, 0]])
    sw = threshold_sweep(preds, gt, LABELS)
    assert sw["grid"][0] == 0.2 and sw["grid"][-1] == pytest.approx(0.6) and len(sw["grid"]) == 9
    assert sw["chosen"]["RBC"] == pytest.approx(0.35)
    assert sw["chosen"]["WBC"] == pytest.approx(0.20)
    assert sw["mae"]["0.20"]["RBC"] == 1.0
    counts = count_matrix(preds, np.array([0.5, 0.5, 0.5], np.float32), 3)
    assert counts.tolist() == [[3, 0, 0]]


def test_empty_predictions():
    gt = [(np.array([[0, 0, 10, 10]], np.float32), np.array([0]))]
    pred = [(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))]
    assert map50(pred, gt, LABELS)["ap"]["RBC"] == 0.0
    assert count_matrix(pred, np.full(3, 0.5, np.float32), 3).tolist() == [[0, 0, 0]]
