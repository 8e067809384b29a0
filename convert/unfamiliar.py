"""Training side of the unfamiliar-image check (`edgecell.tasks.familiarity`): the pooled-feature
statistics of the training images, and the threshold the device compares each image's score with."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def unfamiliar_stats(features: np.ndarray, quantile: float = 100.0, shrink: float = 0.1,
                     threshold_features: np.ndarray | None = None, threshold_on: str = "",
                     classes: np.ndarray | None = None, transform: str | None = None) -> dict:
    """Mean and (shrunk) precision of training images' pooled features; the threshold is the
    `quantile` percentile of the squared Mahalanobis distances of `threshold_features` (held-out
    in-distribution images) or, when None, of the training images themselves. With `classes` (the
    training images' labels): one mean per class and their pooled within-class covariance; with
    `transform` (a name in `edgecell.tasks.familiarity.TRANSFORMS`): applied to every feature first."""
    from edgecell.tasks.familiarity import transformed

    options = {"transform": transform} if transform else {}
    x = transformed(features, options)
    if classes is None:
        mean = x.mean(0)
        cov = np.cov(x, rowvar=False)
    else:
        classes = np.asarray(classes)
        mean = np.array([x[classes == c].mean(0) for c in np.unique(classes)])
        residual = x - mean[np.searchsorted(np.unique(classes), classes)]
        cov = residual.T @ residual / (len(x) - 1)
    cov = (1 - shrink) * cov + shrink * np.eye(len(cov)) * np.trace(cov) / len(cov)
    precision = np.linalg.inv(cov)
    stats = {"mean": mean.round(6).tolist(), "precision": precision.astype(np.float32).round(5).tolist(), **options}
    chosen_on = features if threshold_features is None else threshold_features
    scores = unfamiliar_scores(chosen_on, stats)
    stats["threshold"] = round(float(np.percentile(scores, quantile)), 2)
    stats["calibrated_on"] = (f"{len(features)} training images; threshold: {quantile} percentile of the scores of "
                              + (threshold_on or f"{len(chosen_on)} images"))
    return stats


def unfamiliar_scores(features: np.ndarray, stats: dict) -> np.ndarray:
    """The device's score (`edgecell.tasks.familiarity`: the transform, then the squared Mahalanobis
    distance) of each row of `features` (N x K raw pooled features)."""
    from edgecell.tasks.familiarity import mahalanobis2, transformed

    return np.array([mahalanobis2(f, stats) for f in transformed(features, stats)])


def save_arrays(stats: dict, npz_path: str | Path) -> dict:
    """Move the statistics' arrays (`familiarity.ARRAY_KEYS`) into `npz_path` and return the rest,
    for the sidecar (`settings["unfamiliar"]`, with `settings["unfamiliar_arrays"]` = the file's
    name). Why: the 256 x 256 precision as JSON is 2.1 MB that every cold start parses. An array
    whose values are all float32 numbers (the precision is rounded to them) is stored as float32, so
    the device reads back exactly the float64 numbers the JSON lists gave."""
    from edgecell.tasks.familiarity import ARRAY_KEYS

    arrays = {}
    for key in ARRAY_KEYS:
        wide = np.asarray(stats[key], np.float64)
        narrow = wide.astype(np.float32)
        arrays[key] = narrow if np.array_equal(narrow.astype(np.float64), wide) else wide
    np.savez(npz_path, **arrays)
    return {k: v for k, v in stats.items() if k not in ARRAY_KEYS}
