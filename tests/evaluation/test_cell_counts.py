"""Counting against both ground truths, Chula points and the lab-shift frames (no model: made-up
detections, so each number can be checked by hand)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecell.calibration.cell_labels import PointAnnotation
from edgecell.calibration.voc import Annotation
from edgecell.evaluation.cell_counts import (Condition, against_both_truths, chula_counts, degrade, found_points,
                                             int8_vs_fp32, magnify)

LABELS = ("RBC", "WBC", "Platelets")


def _ann(stem, boxes, labels):
    from pathlib import Path

    return Annotation(Path(f"{stem}.jpg"), 640, 480, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels))


def test_both_truths_side_by_side():
    boxes = [[0, 0, 100, 100], [200, 0, 300, 100], [400, 0, 500, 100]]
    complete = [_ann("a", boxes, [0, 0, 0])]
    cbc = [_ann("a", boxes[:1], [0])]
    preds = [(np.array(boxes, np.float32), np.array([0, 0, 0]), np.array([0.9, 0.8, 0.7], np.float32))]
    r = against_both_truths(preds, complete, cbc, np.array([0.5, 0.5, 0.5]), LABELS)
    assert r["complete"]["counting"]["RBC"]["accuracy"] == 1.0
    assert r["cbc"]["counting"]["RBC"]["accuracy"] == -1.0  # 3 counted where CBC boxes 1
    assert r["complete"]["map50"]["per_class"]["RBC"] == 1.0


def test_chula_counts_split_by_label_coverage():
    pts = [PointAnnotation(Path(f"{n}.jpg"), np.zeros((n, 2), np.float32), np.zeros(n, np.int64)) for n in (10, 4)]
    preds = [(np.zeros((k, 4), np.float32), np.zeros(k, np.int64), np.full(k, 0.9, np.float32)) for k in (9, 40)]
    r = chula_counts(preds, pts, [0.9, 0.1], 0.5, 0.65)
    assert r["fully_labelled"]["accuracy"] == 0.9 and r["fully_labelled"]["images"] == 1
    assert r["all"]["estimated"] == 49 and r["all"]["ground_truth"] == 14


def test_zoom_in_keeps_cells_mostly_inside_the_frame():
    img = np.zeros((480, 640, 3), np.uint8)
    centre, corner = [300, 220, 340, 260], [0, 0, 40, 40]
    a = _ann("a", [centre, corner], [0, 2])
    out, b, lab = magnify([img], [a], 0, 2.0)
    assert out.shape == img.shape and list(lab) == [0]  # the corner platelet leaves the frame
    np.testing.assert_allclose(b[0], [280, 200, 360, 280])


def test_zoom_out_tiles_neighbouring_smears():
    imgs = [np.full((480, 640, 3), v, np.uint8) for v in (10, 20, 30, 40)]
    anns = [_ann(str(k), [[100, 100, 200, 200]], [0]) for k in range(4)]
    out, b, lab = magnify(imgs, anns, 1, 0.5)
    assert out[0, 0, 0] == 20 and out[0, 400, 0] == 30 and out[300, 0, 0] == 40 and out[300, 400, 0] == 10
    assert out[100, 322, 0] == 114  # the grey gutter between two smears
    assert len(lab) == 4 and b[0].tolist() == [50, 50, 100, 100]


def test_degrade_is_deterministic_and_changes_pixels():
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    cond = Condition("x", gains=(1.1, 1.0, 0.9), blur=1.0, noise=5, jpeg=50)
    a, b = degrade(img, cond, seed=3), degrade(img, cond, seed=3)
    assert (a == b).all() and not (a == img).all()


def test_found_points_pairs_each_point_with_one_near_detection():
    points = np.array([[10, 10], [50, 50], [200, 200]], np.float32)
    boxes = np.array([[0, 0, 22, 22], [2, 2, 20, 20], [40, 40, 64, 64], [300, 300, 340, 340]], np.float32)
    assert found_points(boxes, points, 15) == 2  # two detections near point 1 count once; point 3 unmatched


def _entry(backend, precision, accuracy, rules):
    counting = {c: {"accuracy": accuracy} for c in LABELS}
    return {"backend": backend, "precision": precision, "counting_settings": rules,
            "testing": {"complete": {"counting": counting, "map50": {"mean": 0.9}}}}


def test_int8_against_fp32_pairs_files_by_backend_and_says_whether_their_rules_match():
    shared, own = {"thresholds": {"Platelets": 0.35}}, {"thresholds": {"Platelets": 0.5}}
    models = {"litert-int8-0": _entry("litert", "int8", 0.88, shared), "litert-fp32-1": _entry("litert", "fp32", 0.98, shared),
              "openvino-int8-2": _entry("openvino", "int8", 0.90, shared), "openvino-fp32-3": _entry("openvino", "fp32", 0.60, own)}
    pairs = {d["backend"]: d for d in int8_vs_fp32(models)}
    assert round(pairs["litert"]["accuracy_delta_points"]["Platelets"], 6) == -10.0
    assert pairs["litert"]["same_counting_settings"] and not pairs["openvino"]["same_counting_settings"]
