import numpy as np

from edgecell.convert.train_rbc import balanced_sampling, choose_type_thresholds


def test_balanced_sampling_draws_each_type_about_equally_at_power_one():
    types = np.zeros((100, 2), np.uint8)
    types[:90, 0] = 1  # 90 patches of a common type
    types[90:, 1] = 1  # 10 of a rare one
    p = balanced_sampling(types, 1.0)
    assert np.isclose(p.sum(), 1.0)
    assert np.isclose(p[types[:, 0] == 1].sum(), p[types[:, 1] == 1].sum())
    np.testing.assert_allclose(balanced_sampling(types, 0.0), np.full(100, 0.01))


def test_type_thresholds_move_to_where_every_patch_is_right():
    truth = np.array([[1, 0], [0, 1], [0, 0], [1, 1]], np.uint8)
    probs = np.array([[0.9, 0.1], [0.2, 0.3], [0.1, 0.2], [0.8, 0.35]])  # type 1 is called low: best cut 0.25-0.3
    thr = choose_type_thresholds(probs, truth)
    assert thr[0] == 0.5 and 0.2 < thr[1] <= 0.3
    assert ((probs >= thr) == truth.astype(bool)).all()


def test_type_thresholds_ignore_dont_care_entries():
    truth = np.array([[1, 0], [0, 1], [0, 0]], np.uint8)
    probs = np.array([[0.9, 0.45], [0.2, 0.6], [0.1, 0.2]])  # patch 0's 0.45 for type 1 is in its band
    care = np.array([[True, False], [True, True], [True, True]])
    assert choose_type_thresholds(probs, truth, care).tolist() == [0.5, 0.5]
    assert choose_type_thresholds(probs, truth)[1] > 0.45  # counted, it would push type 1's cut up
