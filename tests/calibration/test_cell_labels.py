"""TXL complete labels and Chula centre points as cell-counting data, on the real datasets where
they are present."""

from __future__ import annotations

import numpy as np
import pytest

from edgecell.calibration.cell_labels import (PointAnnotation, chula_is_held_out, chula_split, label_coverage,
                                              load_chula_points, load_txl, point_boxes)
from edgecell.calibration.voc import CELL_CLASSES
from edgecell.errors import EdgecellError


def _skip_without(name):
    from edgecell.calibration import dataset_dir

    try:
        dataset_dir(name)
    except EdgecellError:
        pytest.skip(f"{name} dataset not found (set EDGECELL_DATA)")


def test_txl_testing_totals_and_class_order():
    _skip_without("txl_bccd_relabel")
    test = load_txl("Testing")
    totals = {c: sum(a.counts()[c] for a in test) for c in CELL_CLASSES}
    assert len(test) == 60 and totals == {"RBC": 1385, "WBC": 62, "Platelets": 68}  # SOURCE.md
    assert all(a.image_path.is_file() for a in test)


def test_txl_labels_boxes_by_size_per_class():
    _skip_without("txl_bccd_relabel")
    a = load_txl("Training")[0]
    side = {c: np.median((a.boxes[a.labels == k, 2] - a.boxes[a.labels == k, 0])) for k, c in enumerate(CELL_CLASSES)
            if (a.labels == k).any()}
    assert side["RBC"] > 60 and side.get("Platelets", 0) < 60  # red cells ~100 px, platelets ~40 px


def test_chula_split_is_fixed_by_stem_and_about_a_fifth():
    stems = [str(n) for n in range(1, 624)]
    train, held = chula_split(stems)
    assert 0.15 < len(held) / len(stems) < 0.25 and not set(train) & set(held)
    assert chula_split(list(reversed(stems)))[1] == list(reversed(held))  # order does not matter
    assert chula_is_held_out(held[0]) and not chula_is_held_out(train[0])


def test_chula_points_load_and_split_by_image():
    _skip_without("chula_rbc12")
    points = load_chula_points()
    train, held = chula_split(points)
    assert len(points) == 502 and len(train) + len(held) == 502
    assert all(p.points.shape[1] == 2 for p in held) and sum(len(p.points) for p in points) == 17945  # SOURCE.md class counts


def test_label_coverage_tells_full_from_sparse_labels():
    img = np.full((480, 640, 3), 230, np.uint8)
    centres = [(60 + 60 * i, 60 + 60 * j) for i in range(10) for j in range(7)]
    import cv2

    for c in centres:
        cv2.circle(img, c, 22, (150, 90, 120), -1)
    full = PointAnnotation(None, np.array(centres, np.float32), np.zeros(len(centres), np.int64))
    sparse = PointAnnotation(None, full.points[:6], full.classes[:6])
    assert label_coverage(full, img) > 0.8 and label_coverage(sparse, img) < 0.2


def test_point_boxes_centre_on_points():
    b = point_boxes(np.array([[100, 50]], np.float32), diameter=40)
    np.testing.assert_array_equal(b, [[80, 30, 120, 70]])
