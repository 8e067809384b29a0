from pathlib import Path

import pytest

from edgecell.calibration.folders import (class_counts, class_names, list_split, per_class_sample,
                                          stratified_split)
from edgecell.errors import EdgecellError


def _make(root: Path, split: str, layout: dict[str, int]) -> None:
    for name, n in layout.items():
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / f"img_{i:03d}.jpg").write_bytes(b"\xff\xd8fake\xff\xd9")
        (folder / "notes.txt").write_text("not an image")
        (folder / ".hidden.jpg").write_bytes(b"x")


def test_list_split_sorted_labels_from_folders(tmp_path):
    _make(tmp_path, "train", {"shoes": 3, "hat": 2, "pants": 1})
    (tmp_path / "train" / "empty").mkdir()
    assert class_names(tmp_path, "train") == ["hat", "pants", "shoes"]
    samples = list_split(tmp_path, "train")
    assert [(p.parent.name, p.name, y) for p, y in samples] == [
        ("hat", "img_000.jpg", 0), ("hat", "img_001.jpg", 0), ("pants", "img_000.jpg", 1),
        ("shoes", "img_000.jpg", 2), ("shoes", "img_001.jpg", 2), ("shoes", "img_002.jpg", 2)]


def test_fixed_class_order_and_missing_or_unknown_class(tmp_path):
    _make(tmp_path, "test", {"hat": 1, "shoes": 2})
    samples = list_split(tmp_path, "test", classes=["shoes", "pants", "hat"])
    assert class_counts(samples, ["shoes", "pants", "hat"]) == {"shoes": 2, "pants": 0, "hat": 1}
    with pytest.raises(EdgecellError, match="not among"):
        list_split(tmp_path, "test", classes=["shoes"])
    with pytest.raises(EdgecellError, match="no such split"):
        list_split(tmp_path, "validation")


def test_joined_splits(tmp_path):
    _make(tmp_path, "validation", {"hat": 1, "shoes": 1})
    _make(tmp_path, "test", {"hat": 2, "shoes": 1})
    samples = list_split(tmp_path, "validation+test")
    assert class_counts(samples, ["hat", "shoes"]) == {"hat": 3, "shoes": 2}


def test_stratified_split_is_seeded_and_per_class():
    samples = [(Path(f"c{c}/{i}.jpg"), c) for c in range(3) for i in range(10 + 5 * c)]
    fit, hold = stratified_split(samples, 0.2, seed=7)
    assert len(fit) + len(hold) == len(samples) and not set(fit) & set(hold)
    assert class_counts(hold, ["a", "b", "c"]) == {"a": 2, "b": 3, "c": 4}
    assert stratified_split(samples, 0.2, seed=7) == (fit, hold)
    assert stratified_split(samples, 0.2, seed=8)[1] != hold


def test_per_class_sample():
    samples = [(Path(f"c{c}/{i}.jpg"), c) for c in range(4) for i in range(30)]
    calib = per_class_sample(samples, 100, seed=0)
    assert class_counts(calib, list("abcd")) == {k: 25 for k in "abcd"}
