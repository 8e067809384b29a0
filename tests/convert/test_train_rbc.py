import numpy as np

from edgecell.convert.train_rbc import balanced_sampling


def test_balanced_sampling_draws_each_type_about_equally_at_power_one():
    types = np.zeros((100, 2), np.uint8)
    types[:90, 0] = 1  # 90 patches of a common type
    types[90:, 1] = 1  # 10 of a rare one
    p = balanced_sampling(types, 1.0)
    assert np.isclose(p.sum(), 1.0)
    assert np.isclose(p[types[:, 0] == 1].sum(), p[types[:, 1] == 1].sum())
    np.testing.assert_allclose(balanced_sampling(types, 0.0), np.full(100, 0.01))
