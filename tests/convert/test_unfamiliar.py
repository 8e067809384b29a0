"""The unfamiliar-image statistics' arrays moved out of the sidecar read back as the same numbers."""

from __future__ import annotations

import numpy as np

from edgecell.convert.unfamiliar import save_arrays, unfamiliar_stats
from edgecell.modelinfo import ModelInfo
from edgecell.tasks.familiarity import load_arrays, mahalanobis2


def test_arrays_in_the_npz_give_the_scores_the_sidecar_lists_gave(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.random((40, 6)).astype(np.float32)
    stats = unfamiliar_stats(features, classes=np.arange(40) % 2)
    rest = save_arrays(stats, tmp_path / "stats.npz")
    assert "mean" not in rest and "precision" not in rest and rest["threshold"] == stats["threshold"]
    info = ModelInfo(task="products", settings={"unfamiliar": rest, "unfamiliar_arrays": "stats.npz"})
    load_arrays(info, tmp_path)
    assert [mahalanobis2(f, rest) for f in features] == [mahalanobis2(f, stats) for f in features]


def test_an_array_that_float32_cannot_hold_is_kept_in_float64(tmp_path):
    stats = {"mean": [[0.1, 0.2]], "precision": [[1.0, 0.0], [0.0, 1.0]], "threshold": 1.0}
    save_arrays(stats, tmp_path / "stats.npz")
    with np.load(tmp_path / "stats.npz") as data:
        assert data["mean"].dtype == np.float64 and data["precision"].dtype == np.float32
