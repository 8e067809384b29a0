"""Box utilities: IoU matrix and NMS (per class in one call)."""

from __future__ import annotations

import numpy as np

from edgecell.tasks.boxes import box_iou, nms, nms_per_class


def test_nms_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0])
    keep = nms_per_class(boxes, classes, scores, 0.45)
    assert sorted(keep.tolist()) == [0, 2, 3]  # box 1 suppressed by 0; class 1 box kept


def test_nms_keeps_highest_score_first():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [40, 40, 50, 50]], np.float32)
    keep = nms(boxes, np.array([0.5, 0.9, 0.7], np.float32), 0.45)
    assert keep.tolist() == [1, 2]


def test_box_iou_matrix():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 50 / 150, 0.0], atol=1e-6)
