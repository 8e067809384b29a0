"""Degradations for the utility gate: deterministic, the right strength ordering, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from edgecell.calibration import degrade
from edgecell.images import decode_image


@pytest.fixture(scope="module")
def photo(real_jpeg) -> np.ndarray:
    return decode_image(real_jpeg)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_nine_jpeg_levels():
    assert len(degrade.JPEG_QUALITIES) == 9
    assert list(degrade.JPEG_QUALITIES) == sorted(set(degrade.JPEG_QUALITIES))
    specs = degrade.default_specs()
    assert specs[0] == "none" and sum(s.startswith("jpeg:") for s in specs) == 9
    assert degrade.default_specs(extras=False, pristine=False) == [f"jpeg:{q}" for q in degrade.JPEG_QUALITIES]


def test_jpeg_quality_5_changes_more_than_95(photo):
    low, high = degrade.jpeg(photo, 5), degrade.jpeg(photo, 95)
    assert low.shape == photo.shape and low.dtype == np.uint8
    assert _mad(low, photo) > 2 * _mad(high, photo)
    assert _mad(high, photo) > 0


def test_stronger_is_further(photo):
    assert _mad(degrade.blur(photo, 4), photo) > _mad(degrade.blur(photo, 1), photo) > 0
    assert _mad(degrade.noise(photo, 80, 1), photo) > _mad(degrade.noise(photo, 15, 1), photo) > 0
    dark = degrade.exposure(photo, 0.15)
    bright = degrade.exposure(photo, 4.0)
    assert dark.mean() < photo.mean() * 0.2 and bright.mean() > photo.mean()


def test_deterministic_from_seed(photo):
    a = degrade.apply(photo, "noise:40", seed=7)
    assert np.array_equal(a, degrade.apply(photo, "noise:40", seed=7))
    assert not np.array_equal(a, degrade.apply(photo, "noise:40", seed=8))
    for spec in degrade.default_specs():
        assert np.array_equal(degrade.apply(photo, spec, 3), degrade.apply(photo, spec, 3)), spec
    assert np.array_equal(degrade.apply(photo, "none"), photo)
    s1 = degrade.sample_seed("test/hat/a.jpg", "noise:40")
    assert s1 == degrade.sample_seed("test/hat/a.jpg", "noise:40") != degrade.sample_seed("test/hat/b.jpg", "noise:40")


def test_spec_round_trip_and_errors(photo):
    for spec in degrade.default_specs():
        kind, level = degrade.parse_spec(spec)
        assert degrade.spec_name(kind, level) == spec
    for bad in ("jpeg", "sharpen:2", "jpeg:"):
        with pytest.raises(ValueError):
            degrade.parse_spec(bad)
    with pytest.raises(ValueError):
        degrade.jpeg(photo, 0)
    with pytest.raises(ValueError):
        degrade.jpeg(photo[..., 0], 10)


def test_noise_on_a_grey_image_stays_grey(photo):
    grey = np.repeat(photo.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    noisy = degrade.noise(grey, 50, seed=1)
    assert np.array_equal(noisy[..., 0], noisy[..., 1]) and np.array_equal(noisy[..., 1], noisy[..., 2])
    assert np.abs(noisy.astype(int) - grey).mean() > 10
    colour = degrade.noise(photo, 50, seed=1)
    assert not np.array_equal(colour[..., 0] - photo[..., 0], colour[..., 1] - photo[..., 1])
