"""edgecell.convert.adapt_xray: the numpy parts of adapting the X-ray head to a site (no training in
tests: the head refit is a few hundred numpy steps on given features)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecell.commission import LabelledFilm


def test_head_refit_learns_the_sites_films_and_stays_tied_to_the_shipped_head():
    from edgecell.convert.adapt_xray import fit_head

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (60, 8)) + 3.0
    y = (x[:, 0] > 3.0).astype(int)  # the site's rule, which the shipped head (zeros) does not know
    w0, b0 = np.zeros((8, 2), np.float32), np.zeros(2, np.float32)
    w, b = fit_head(x, y, w0, b0, tie=1e-3)
    assert ((x @ w + b).argmax(1) == y).mean() >= 0.9
    w_tied, _ = fit_head(x, y, w0, b0, tie=100.0)
    assert np.abs(w_tied).max() < np.abs(w).max() / 5


def test_films_to_adapt_on_are_spread_over_the_labels():
    from edgecell.convert.adapt_xray import split_films

    films = [LabelledFilm(f"{k}.png", Path(f"{k}.png"), "a" if k < 20 else "b") for k in range(24)]
    train, rest = split_films(films, 6, seed=0)
    assert sorted(f.label for f in train) == ["a", "a", "a", "b", "b", "b"]
    assert len(rest) == 18 and not {f.file for f in train} & {f.file for f in rest}
