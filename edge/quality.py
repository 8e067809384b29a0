"""Image-quality checks of the V-BreathNet paper, as plain functions used both to clean training
data (`edgecell.calibration.xray`) and on the device (`edgecell.tasks.xray`):

- blur score: variance of the Laplacian of the grey image, measured at a fixed analysis size
  (short side ANALYSIS_SIZE px) so that the score does not depend on the file's resolution;
- contrast: RMS contrast (standard deviation of grey levels) too low, or too high (most pixels
  pushed to pure black/white: a burnt-out or binarised image);
- plus what a device meets that a curated dataset does not: a tiny image, a colour photo (an
  X-ray is grey), an almost uniform image (all black / all white);
- optional crop to the chest area (uniform borders and burnt-in bands trimmed).

Everything takes an RGB (or grey) uint8 image and needs only numpy + OpenCV.
Thresholds are defaults chosen on the training data (see XRAY_MODEL_CARD.md); every function
takes them as arguments, and the task reads overrides from the model sidecar.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from edgecell.images import resize

ANALYSIS_SIZE = 256  # short side, px, at which blur and contrast are measured

DEFAULTS = {
    "min_blur": 12.0,  # variance of the Laplacian at ANALYSIS_SIZE; below: blurry
    "min_contrast": 25.0,  # std of grey levels (0..255); below: low contrast
    "max_contrast": 100.0,  # std of grey levels; above: high contrast (near-binary image)
    "max_clipped": 0.5,  # share of pixels at <= 2 or >= 253; above: high contrast (burnt out)
    "min_side": 128,  # px; a smaller image is too small to read
    "max_colour": 12.0,  # mean |R-G|,|G-B| spread; above: a colour photo, not an X-ray
}

MESSAGES = {
    "blurry": "the image is blurred",
    "low_contrast": "the contrast is too low (image too flat, too dark or too bright)",
    "high_contrast": "the contrast is too high (burnt-out or near black-and-white image)",
    "too_small": "the image is too small",
    "colour": "the image is in colour; a chest X-ray is greyscale",
}


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 grey H x W from RGB / grey / H x W x 1."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3:
        if image.shape[2] == 1:
            return image[:, :, 0]
        return cv2.cvtColor(image[:, :, :3], cv2.COLOR_RGB2GRAY)
    return image


def analysis_grey(image: np.ndarray, size: int = ANALYSIS_SIZE) -> np.ndarray:
    """Grey image resized so that its short side is `size` px (tiny images are enlarged)."""
    grey = to_grey(image)
    h, w = grey.shape[:2]
    if min(h, w) == 0:
        return np.zeros((size, size), np.uint8)
    s = size / min(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    return resize(grey, (nw, nh))  # the same bytes on every CPU, so flags do not depend on it


def blur_score(image: np.ndarray, size: int = ANALYSIS_SIZE) -> float:
    """Variance of the Laplacian at the analysis size: low = blurry (0 for a uniform image)."""
    grey = analysis_grey(image, size)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def contrast_stats(image: np.ndarray, size: int = ANALYSIS_SIZE) -> dict[str, float]:
    """RMS contrast (std of grey levels), mean level and share of clipped pixels."""
    grey = analysis_grey(image, size).astype(np.float32)
    return {"contrast": float(grey.std()), "mean": float(grey.mean()),
            "clipped": float(np.mean((grey <= 2) | (grey >= 253)))}


def colour_score(image: np.ndarray) -> float:
    """Mean channel spread (0 for a grey image stored as RGB)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] < 3:
        return 0.0
    small = image[:: max(1, image.shape[0] // 128), :: max(1, image.shape[1] // 128), :3].astype(np.int16)
    return float(np.mean(np.abs(small[..., 0] - small[..., 1]) + np.abs(small[..., 1] - small[..., 2])) / 2)


@dataclass
class Quality:
    """Measured values and the names of the failed checks (empty: good enough)."""

    blur: float
    contrast: float
    mean: float
    clipped: float
    colour: float
    width: int
    height: int
    flags: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.flags

    def message(self) -> str:
        """One plain sentence for the radiographer ("" when the image is fine)."""
        if not self.flags:
            return ""
        reasons = "; ".join(MESSAGES.get(f, f) for f in self.flags)
        return f"Retake the image: {reasons}."

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("blur", "contrast", "mean", "clipped", "colour"):
            d[k] = round(d[k], 3)
        d["ok"] = self.ok
        d["message"] = self.message()
        return d


def check_quality(image: np.ndarray, **thresholds) -> Quality:
    """All checks on one image; thresholds override DEFAULTS by name (None values ignored)."""
    t = dict(DEFAULTS)
    t.update({k: v for k, v in thresholds.items() if k in DEFAULTS and v is not None})
    image = np.asarray(image)
    h, w = image.shape[:2]
    stats = contrast_stats(image)
    q = Quality(blur=blur_score(image), contrast=stats["contrast"], mean=stats["mean"], clipped=stats["clipped"],
                colour=colour_score(image), width=int(w), height=int(h))
    if min(h, w) < t["min_side"]:
        q.flags.append("too_small")
    if q.blur < t["min_blur"]:
        q.flags.append("blurry")
    if q.contrast < t["min_contrast"]:
        q.flags.append("low_contrast")
    elif q.contrast > t["max_contrast"] or q.clipped > t["max_clipped"]:
        q.flags.append("high_contrast")
    if q.colour > t["max_colour"]:
        q.flags.append("colour")
    return q


def chest_crop(image: np.ndarray, *, border_std: float = 6.0, min_keep: float = 0.6) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Crop to the chest area: trims uniform borders (black frames, white margins, flat bands
    of burnt-in text background) from each side, row/column by row/column, as long as they are
    nearly uniform (std of the line < `border_std` grey levels) or much darker than the image.
    Never keeps less than `min_keep` of a side. Returns (cropped image, (x0, y0, x1, y1))."""
    grey = to_grey(image).astype(np.float32)
    h, w = grey.shape[:2]
    if h < 8 or w < 8:
        return image, (0, 0, w, h)
    level = float(np.median(grey))
    dark = 0.25 * level
    row_bad = (grey.std(axis=1) < border_std) | (grey.mean(axis=1) < dark)
    col_bad = (grey.std(axis=0) < border_std) | (grey.mean(axis=0) < dark)

    def span(bad: np.ndarray, n: int) -> tuple[int, int]:
        lo, hi = 0, n
        while lo < n and bad[lo]:
            lo += 1
        while hi > lo and bad[hi - 1]:
            hi -= 1
        if hi - lo < min_keep * n:  # nearly all "border": keep the image as it is
            return 0, n
        return lo, hi

    y0, y1 = span(row_bad, h)
    x0, x1 = span(col_bad, w)
    return image[y0:y1, x0:x1], (x0, y0, x1, y1)
