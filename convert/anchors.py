"""YOLOv2 anchors by k-means on box sizes with the distance d = 1 - IoU (boxes centred together).

Sizes are given in model-input pixels (the letterboxed input the network sees), so the anchors
can be stored as they are in the model's settings (`info.settings["anchors"]`, pixels of the
model input).
"""

from __future__ import annotations

import numpy as np


def wh_iou(wh: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """IoU of N x 2 (w, h) against K x 2 (w, h), both centred at the origin -> N x K."""
    inter = np.minimum(wh[:, None, 0], centroids[None, :, 0]) * np.minimum(wh[:, None, 1], centroids[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (centroids[:, 0] * centroids[:, 1])[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def kmeans_anchors(wh: np.ndarray, k: int = 5, seed: int = 0, iters: int = 300, restarts: int = 10) -> tuple[np.ndarray, float]:
    """k anchors (K x 2, sorted by area) and their mean best IoU over the boxes.

    k-means++ style initialisation and a few restarts; the centroid update is the median, which
    is steadier than the mean with the 1 - IoU distance."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    wh = wh[(wh[:, 0] > 0) & (wh[:, 1] > 0)]
    if len(wh) < k:
        raise ValueError(f"need at least {k} boxes for {k} anchors, got {len(wh)}")
    rng = np.random.default_rng(seed)
    best, best_iou = None, -1.0
    for _ in range(restarts):
        cent = wh[rng.integers(len(wh))][None]
        while len(cent) < k:
            d = 1 - wh_iou(wh, cent).max(1)
            p = d**2 / max((d**2).sum(), 1e-12)
            cent = np.vstack([cent, wh[rng.choice(len(wh), p=p)]])
        assign = None
        for _ in range(iters):
            new = wh_iou(wh, cent).argmax(1)
            if assign is not None and (new == assign).all():
                break
            assign = new
            for j in range(k):
                if (assign == j).any():
                    cent[j] = np.median(wh[assign == j], axis=0)
        miou = float(wh_iou(wh, cent).max(1).mean())
        if miou > best_iou:
            best, best_iou = cent.copy(), miou
    order = np.argsort(best[:, 0] * best[:, 1])
    return best[order].astype(np.float32), best_iou
