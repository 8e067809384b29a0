"""The flag study scores the features' second opinion with the device's own arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from edgecell.convert import xray_flag_study as study
from edgecell.tasks import xray


def test_study_disagreement_is_the_devices_disagreement_score():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 30)
    train = rng.normal(size=(90, 5)) + 2.0 * np.eye(3, 5)[y]
    g = study.fit_gaussians(train, y, 3)
    films = rng.normal(size=(12, 5))
    head = {"w": rng.normal(size=(5, 3)), "b": np.zeros(3)}
    logits = films @ head["w"]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = study.signals(films, probs, probs, head, g)["maha_vs_softmax"]
    stats = {"maha_means": g["means"].astype(np.float32), "maha_precision": g["shared"].astype(np.float32)}
    want = [xray.disagreement_score(xray.class_distances(f, stats), int(p))[0] for f, p in zip(films, probs.argmax(1))]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_auc_orders_wrong_above_right():
    assert study.auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert study.auc(np.array([1.0]), np.array([1.0])) == pytest.approx(0.5)
