"""Detection and counting metrics for the cells model (placeholder core; extended below)."""

from __future__ import annotations

import numpy as np

from edgecell.tasks.cells import box_iou


def match_detections(boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """True-positive flags for detections of one class in one image, in the given order's
    descending score; each ground truth matches at most one detection (VOC rule)."""
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros(len(scores), bool)
    if len(gt_boxes) == 0 or len(boxes) == 0:
        return tp
    ious = box_iou(boxes[order], gt_boxes)
    used = np.zeros(len(gt_boxes), bool)
    for k in range(len(order)):
        j = int(np.argmax(np.where(used, -1, ious[k])))
        if not used[j] and ious[k, j] >= iou:
            used[j] = True
            tp[order[k]] = True
    return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> tuple[float, np.ndarray, np.ndarray]:
    """VOC all-point interpolated AP from pooled detections; also the precision/recall curve."""
    if n_gt == 0:
        return float("nan"), np.zeros(0), np.zeros(0)
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.asarray(tp, bool)[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(~tp)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1])), precision, recall


def map50(predictions: list[tuple[np.ndarray, np.ndarray, np.ndarray]], truths: list[tuple[np.ndarray, np.ndarray]],
          labels: list[str] | tuple[str, ...], iou: float = 0.5) -> dict:
    """predictions: per image (boxes, classes, scores); truths: per image (boxes, labels).
    Returns {"ap": {label: AP}, "map": mean, "curves": {label: (precision, recall)}}."""
    aps, curves = {}, {}
    for c, name in enumerate(labels):
        all_scores, all_tp, n_gt = [], [], 0
        for (pb, pc, ps), (gb, gl) in zip(predictions, truths):
            m, g = pc == c, gb[gl == c]
            n_gt += len(g)
            all_scores.append(ps[m])
            all_tp.append(match_detections(pb[m], ps[m], g, iou))
        ap, prec, rec = average_precision(np.concatenate(all_scores) if all_scores else np.zeros(0),
                                          np.concatenate(all_tp) if all_tp else np.zeros(0, bool), n_gt)
        aps[name], curves[name] = ap, (prec, rec)
    vals = [v for v in aps.values() if not np.isnan(v)]
    return {"ap": aps, "map": float(np.mean(vals)) if vals else float("nan"), "curves": curves}
