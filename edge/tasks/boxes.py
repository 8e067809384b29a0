"""Box utilities shared by every detector task, evaluation and tiling: IoU matrices and greedy
non-maximum suppression on N x 4 float boxes (x1, y1, x2, y2), numpy only."""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of N x 4 and M x 4 boxes (x1, y1, x2, y2)."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    # column by column (no N x M x 2 temporaries, no np.prod): ~4x faster for NMS-sized inputs
    ax1, ay1, ax2, ay2 = a[:, 0:1], a[:, 1:2], a[:, 2:3], a[:, 3:4]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    iw = np.minimum(ax2, bx2) - np.maximum(ax1, bx1)
    ih = np.minimum(ay2, by2) - np.maximum(ay1, by1)
    np.maximum(iw, 0, out=iw)
    np.maximum(ih, 0, out=ih)
    inter = iw * ih
    area_a = np.maximum(ax2 - ax1, 0) * np.maximum(ay2 - ay1, 0)
    area_b = np.maximum(bx2 - bx1, 0) * np.maximum(by2 - by1, 0)
    return inter / np.maximum(area_a + area_b - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.45) -> np.ndarray:
    """Greedy NMS; indices kept, highest score first. One IoU matrix, then a loop over booleans
    (a few microseconds per box instead of an IoU row per kept box)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    if order.size <= 1:
        return order.astype(np.int64)
    over = box_iou(boxes[order], boxes[order]) > iou
    suppressed = np.zeros(order.size, bool)
    keep = []
    for k in range(order.size):
        if not suppressed[k]:
            keep.append(k)
            suppressed |= over[k]
    return order[keep].astype(np.int64)


def nms_per_class(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, iou: float = 0.45) -> np.ndarray:
    """NMS within each class, in one call: each class's boxes are shifted by more than the span of
    all boxes, so boxes of different classes never overlap (as torchvision's batched_nms).
    Indices kept, highest score first."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    boxes = np.asarray(boxes, np.float32)
    span = float(boxes.max() - boxes.min()) + 1.0
    return nms(boxes + (np.asarray(classes, np.float32) * span)[:, None], scores, iou)
