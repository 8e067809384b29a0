"""edgecell.convert.train_xray_mobilenet: the numpy part of the INT8 feature correction (no
training, no model: the fit is least squares on given features)."""

from __future__ import annotations

import numpy as np


def test_linear_correction_undoes_a_cross_channel_mix_that_a_per_channel_map_cannot():
    from edgecell.convert.train_xray_mobilenet import fit_linear_correction

    rng = np.random.default_rng(0)
    r = rng.normal(1.0, 0.5, (400, 6))
    mix = np.eye(6) + 0.2 * rng.normal(0, 1, (6, 6))  # INT8 rounding leaking one channel into others
    q = r @ np.linalg.inv(mix) + 0.1
    w, b = rng.normal(0, 1, (6, 3)), np.zeros(3)
    matrix, penalty, errors = fit_linear_correction(q, r, w, b)
    assert matrix.shape == (7, 6) and penalty == min(errors, key=errors.get)
    assert np.abs(q @ matrix[:-1] + matrix[-1] - r).max() < 0.05
