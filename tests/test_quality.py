"""Image-quality checks (blur, contrast, size, colour, chest crop) on real images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecell.images import decode_image
from edgecell.quality import blur_score, check_quality, chest_crop, contrast_stats


def _data_root() -> Path | None:
    try:
        from edgecell.calibration import data_root

        return data_root()
    except Exception:
        return None


@pytest.fixture(scope="module")
def xray() -> np.ndarray:
    """A real chest X-ray from the dataset beside the repo (X-ray images are not shipped: their
    licences are unclear)."""
    root = _data_root()
    path = root / "covid19_radiography_db_subset" / "train" / "Normal" if root else None
    files = sorted(path.glob("*.png"))[:40] if path and path.is_dir() else []
    if not files:
        pytest.skip("chest X-ray data not found (set EDGECELL_DATA)")
    # the sharpest of a few, so that "sharp" is unambiguous
    return max((decode_image(f) for f in files[:10]), key=blur_score)


def test_sharp_xray_passes_and_blurred_copy_is_flagged(xray):
    q = check_quality(xray, min_side=0)  # the subset is 224 px: judge the pixels, not the size
    assert q.ok, q.to_dict()
    blurred = cv2.GaussianBlur(xray, (0, 0), 3.0)
    qb = check_quality(blurred, min_side=0)
    assert blur_score(blurred) < blur_score(xray) / 4
    assert "blurry" in qb.flags
    assert "Retake the image" in qb.message() and "blurred" in qb.message()


def test_flat_and_burnt_out_copies_are_contrast_flagged(xray):
    grey = xray.astype(np.float32)
    flat = np.clip(grey.mean() + (grey - grey.mean()) * 0.15, 0, 255).astype(np.uint8)
    assert "low_contrast" in check_quality(flat, min_side=0).flags
    burnt = np.where(xray > np.median(xray), 255, 0).astype(np.uint8)
    assert "high_contrast" in check_quality(burnt, min_side=0).flags


@pytest.mark.parametrize("value", [0, 255])
def test_uniform_images_flagged_not_crashing(value):
    image = np.full((512, 512, 3), value, np.uint8)
    q = check_quality(image)
    assert {"blurry", "low_contrast"} <= set(q.flags)
    assert q.to_dict()["ok"] is False


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (40, 60, 3)])
def test_tiny_images_flagged_not_crashing(shape):
    rng = np.random.default_rng(0)
    q = check_quality(rng.integers(0, 255, shape, dtype=np.uint8))
    assert "too_small" in q.flags
    crop, box = chest_crop(np.zeros(shape, np.uint8))
    assert crop.shape[:2] == shape[:2] or crop.size > 0


def test_colour_photo_flagged(real_jpeg):
    q = check_quality(decode_image(real_jpeg))  # a stained blood smear: colourful, not an X-ray
    assert "colour" in q.flags


def test_chest_crop_removes_a_black_frame(xray):
    framed = cv2.copyMakeBorder(xray, 30, 30, 50, 50, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    crop, (x0, y0, x1, y1) = chest_crop(framed)
    assert 45 <= x0 <= 60 and 25 <= y0 <= 40
    assert framed.shape[1] - x1 >= 45 and framed.shape[0] - y1 >= 25
    assert contrast_stats(crop)["mean"] > contrast_stats(framed)["mean"]
