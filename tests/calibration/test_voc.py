"""VOC XML and YOLO txt loaders, on real BCCD annotations where the dataset is present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecell.calibration.voc import CELL_CLASSES, list_split, load_split, missing_class, parse_voc
from edgecell.calibration.yolo_txt import parse_yolo_txt, write_yolo_txt
from edgecell.errors import EdgecellError


@pytest.fixture(scope="module")
def cbc() -> Path:
    from edgecell.calibration import dataset_dir

    try:
        return dataset_dir("cbc_bccd_cleaned")
    except EdgecellError:
        pytest.skip("cbc_bccd_cleaned dataset not found (set EDGECELL_DATA)")


def test_parse_real_bccd_xml(cbc):
    a = parse_voc(cbc / "Training" / "Annotations" / "BloodImage_00000.xml")
    assert (a.width, a.height) == (640, 480)
    assert a.image_path.is_file() and a.stem == "BloodImage_00000"
    assert a.boxes.dtype == np.float32 and a.boxes.shape[1] == 4
    assert CELL_CLASSES[a.labels[0]] == "WBC"
    np.testing.assert_array_equal(a.boxes[0], [260, 177, 491, 376])
    assert a.counts()["WBC"] == 1 and a.counts()["RBC"] > 5
    assert (a.boxes[:, 2] > a.boxes[:, 0]).all() and (a.boxes[:, 3] > a.boxes[:, 1]).all()


def test_zero_area_boxes_are_dropped(cbc):
    a = parse_voc(cbc / "Training" / "Annotations" / "BloodImage_00338.xml")
    assert len(a.dropped) == 1 and "zero-area RBC" in a.dropped[0]
    kept = parse_voc(cbc / "Training" / "Annotations" / "BloodImage_00338.xml", drop_zero_area=False)
    assert len(kept.labels) == len(a.labels) + 1


def test_split_counts_match_source_md(cbc):
    train = load_split(cbc, "Training")
    assert len(train) == 300 and len(list_split(cbc, "Testing")) == 60
    totals = np.bincount(np.concatenate([a.labels for a in train]), minlength=3)
    assert totals.tolist() == [3340, 307, 304]  # SOURCE.md's 3341 RBC minus the zero-area box
    empty = missing_class(train, "RBC")
    assert len(empty) == 14 and "BloodImage_00134" in empty


def test_unknown_class_and_bad_xml(tmp_path):
    bad = tmp_path / "x.xml"
    bad.write_text("<annotation><object><name>Neutrophil</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
                   "<xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>")
    with pytest.raises(EdgecellError, match="unknown class 'Neutrophil'"):
        parse_voc(bad)
    broken = tmp_path / "y.xml"
    broken.write_text("<annotation><object>")
    with pytest.raises(EdgecellError, match="not a readable Pascal VOC XML"):
        parse_voc(broken)


def test_yolo_txt_round_trip(tmp_path):
    boxes = np.array([[10, 20, 110, 80], [300, 200, 340, 260]], np.float32)
    labels = np.array([0, 2])
    path = write_yolo_txt(tmp_path / "a.txt", boxes, labels, 640, 480)
    b, l = parse_yolo_txt(path, 640, 480, num_classes=3)
    np.testing.assert_allclose(b, boxes, atol=0.01)
    assert l.tolist() == [0, 2]
    (tmp_path / "z.txt").write_text("1 0.5 0.5 0 0.1\n")  # zero width: dropped
    assert len(parse_yolo_txt(tmp_path / "z.txt", 640, 480)[0]) == 0
    (tmp_path / "e.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(EdgecellError, match="out of range"):
        parse_yolo_txt(tmp_path / "e.txt", 640, 480, num_classes=3)
