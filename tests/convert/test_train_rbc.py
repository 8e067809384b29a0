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


def test_context_head_is_used_where_the_field_mean_separates_better():
    from edgecell.convert.train_rbc import fit_context_head, type_names

    rng = np.random.default_rng(0)

    def split(n_smears):
        smear = np.repeat(np.arange(n_smears), 30)
        small = rng.random(len(smear)) < 0.3  # "microcytes": small for THEIR smear
        size = rng.uniform(0, 3, n_smears)[smear] - small + rng.normal(0, 0.1, len(smear))
        types = np.zeros((len(smear), len(type_names())), np.uint8)
        types[:, type_names().index("microcyte")] = small
        feats = np.stack([size, rng.normal(0, 1, len(smear))], 1).astype(np.float32)
        return {"features": feats, "smear": smear, "types": types, "care": np.ones(types.shape, bool)}

    train, val = split(40), split(10)
    cnn_logits = -val["features"][:, :1] @ np.ones((1, len(type_names())), np.float32)  # absolute size only
    head = fit_context_head(train, val, cnn_logits)
    assert head["types"] == ["microcyte"] and head["val"]["microcyte"]["val_auc_context"] > 0.95
