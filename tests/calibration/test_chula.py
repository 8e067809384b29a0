from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecell.calibration.chula import (CLASS_NAMES, class_counts, list_smears, parse_labels, split_of)
from edgecell.errors import EdgecellError


def _make(root: Path, labels: dict[str, str]) -> Path:
    """A tiny chula_rbc12/ folder: one 8x6 image per label file, written as PNG data named .jpg."""
    data = root / "chula_rbc12"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    image = np.zeros((6, 8, 3), np.uint8)
    image[:, :, 2] = 200  # red in BGR
    for stem, text in labels.items():
        (data / "images" / f"{stem}.jpg").write_bytes(cv2.imencode(".png", image)[1].tobytes())
        (data / "labels" / f"{stem}.txt").write_text(text)
    return data


def test_png_data_named_jpg_is_read_by_content_as_rgb(tmp_path):
    _make(tmp_path, {"1": "3 2 0\n"})
    (smear,) = list_smears(tmp_path)
    image = smear.load()
    assert image.shape == (6, 8, 3) and image[0, 0].tolist() == [200, 0, 0]


def test_points_and_class_ids_in_numeric_file_order(tmp_path):
    _make(tmp_path, {"10": "5 4 8\n", "2": "1 2 0\n3 4 12\n"})
    smears = list_smears(tmp_path)
    assert [s.stem for s in smears] == ["2", "10"]
    assert smears[0].points.tolist() == [[1, 2], [3, 4]] and smears[0].classes.tolist() == [0, 12]
    assert class_counts(smears)["burr"] == 1 and CLASS_NAMES[12] == "elliptocyte"


def test_empty_label_file_is_unlabelled_and_left_out(tmp_path):
    _make(tmp_path, {"1": "3 2 0\n", "53": ""})
    assert [s.stem for s in list_smears(tmp_path)] == ["1"]
    assert [s.labelled for s in list_smears(tmp_path, include_unlabelled=True)] == [True, False]


def test_split_is_by_image_stable_and_roughly_70_10_20():
    stems = [str(i) for i in range(2000)]
    splits = [split_of(s) for s in stems]
    assert splits == [split_of(s) for s in stems]
    share = {sp: splits.count(sp) / len(stems) for sp in ("train", "val", "test")}
    assert abs(share["train"] - 0.7) < 0.04 and abs(share["val"] - 0.1) < 0.03 and abs(share["test"] - 0.2) < 0.03


def test_split_filter_keeps_only_that_split(tmp_path):
    stems = [str(i) for i in range(40)]
    _make(tmp_path, {s: "1 1 0\n" for s in stems})
    test = list_smears(tmp_path, "test")
    assert test and {s.stem for s in test} == {s for s in stems if split_of(s) == "test"}
    with pytest.raises(EdgecellError, match="unknown split"):
        list_smears(tmp_path, "validation")


def test_malformed_label_line_names_file_and_line(tmp_path):
    path = tmp_path / "7.txt"
    path.write_text("1 2 0\n1 2\n")
    with pytest.raises(EdgecellError, match=r"7.txt:2: expected 'x y class_id'"):
        parse_labels(path)
    path.write_text("1 2 13\n")
    with pytest.raises(EdgecellError, match="out of range"):
        parse_labels(path)
