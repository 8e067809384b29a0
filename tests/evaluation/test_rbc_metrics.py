import numpy as np

from edgecell.evaluation.rbc import match_points, multilabel_report, patch_truth, patch_type_truth, roc_auc, roc_curve


def test_roc_auc_equals_the_pairwise_count_with_ties_half():
    rng = np.random.default_rng(0)
    truth = rng.random(200) < 0.3
    scores = np.round(rng.random(200) + 0.4 * truth, 1)  # many ties
    pos, neg = scores[truth], scores[~truth]
    pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert abs(roc_auc(truth, scores) - pairs) < 1e-12
    assert np.isnan(roc_auc(np.ones(5, bool), np.arange(5)))


def test_roc_curve_runs_from_origin_to_one():
    fpr, tpr = roc_curve(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1]))
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1] and tpr.tolist() == [0, 0.5, 0.5, 1, 1]


def test_exact_match_needs_every_head_right():
    truth = np.array([[1, 0], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.1], [0.8, 0.4], [0.2, 0.3]])
    report = multilabel_report(truth, probs, ["a", "b"])
    assert abs(report["exact_match"] - 2 / 3) < 1e-9 and report["per_type"]["b"]["positives"] == 1


def test_exact_match_takes_one_threshold_per_type():
    truth = np.array([[1, 0], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.1], [0.8, 0.4], [0.2, 0.3]])
    assert multilabel_report(truth, probs, ["a", "b"], np.array([0.5, 0.35]))["exact_match"] == 1.0


def test_match_points_one_to_one_within_radius_best_score_first():
    gt = np.array([[10, 10], [50, 50]], np.float32)
    det = np.array([[12, 10], [10, 13], [80, 80]], np.float32)
    match = match_points(det, np.array([0.5, 0.9, 0.99]), gt, radius=5)
    assert match.tolist() == [-1, 0, -1]  # the 0.9 detection takes the cell; the other is a duplicate


def test_patch_truth_holds_every_labelled_type_inside_the_patch():
    points = np.array([[100, 100], [130, 100], [200, 100]], np.float32)
    classes = np.array([0, 2, 1])  # normal, uncategorised (no head), burr
    truth = patch_type_truth(points, classes, ["normal", "burr"], ["normal", "burr", "uncategorised"], crop=80)
    assert truth.tolist() == [[1, 0], [1, 0], [0, 1]]


def test_patch_truth_holds_the_touching_cells_and_leaves_the_band_open():
    # own cell normal at 0; a burr touching (38 px), a target in the band (50 px), a macrocyte far (70 px)
    points = np.array([[100, 100], [138, 100], [100, 150], [170, 100]], np.float32)
    classes = np.array([0, 1, 2, 3])
    truth, care, cells = patch_truth(points, classes, ["normal", "burr", "target", "macro"],
                                     ["normal", "burr", "target", "macro"], core_px=40, dont_care_px=56)
    assert truth[0].tolist() == [1, 1, 0, 0] and care[0].tolist() == [True, True, False, True] and cells[0] == 2


def test_exact_match_and_auc_skip_dont_care_entries():
    truth = np.array([[1, 0], [0, 0], [0, 1]])
    probs = np.array([[0.9, 0.8], [0.2, 0.1], [0.3, 0.6]])
    care = np.array([[True, False], [True, True], [True, True]])  # patch 0's "b" is in its band
    report = multilabel_report(truth, probs, ["a", "b"], care=care)
    assert report["exact_match"] == 1.0 and report["per_type"]["b"]["auc"] == 1.0
