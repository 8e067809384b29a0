"""Image degradations for the utility gate (issue 7; Khan et al., EUSIPCO 2022,
`shared/seeds/003_eda17a086f8a98f6.txt`), as plain functions on RGB uint8 images.

The paper labels JPEG-compressed copies "at 9 different compression ratios" but does not list
them. We use 9 JPEG quality factors (OpenCV/libjpeg scale 1..100), dense at the low end:

    JPEG_QUALITIES = (1, 2, 3, 4, 6, 8, 10, 20, 40)

Why so low: the 8-class product classifier (MobileNet V1 0.25 at 224) sees a ~400 x 533 photo
shrunk to 224 px, which hides most blocking; measured on 40 held-out photos (INT8 LiteRT) its
top-1 only falls from 93 % (pristine) to 75-78 % at quality 1-2, and almost never to a true-class
probability < 0.1 (the paper's "not useful"). Quality 40 and above changes nothing measurable.

Extras the paper lists as future work, which a device meets as well, with levels running from
harmless to destructive for that classifier (same probe: blur sigma 6 -> 3 % top-1, noise 220
-> 17 %, gain 0.05 -> 20 %, gain 10 -> 38 %). Levels are in the model's frame of reference so
they do not depend on the file's resolution:

- `blur`: Gaussian blur, sigma in pixels of a 224-px short side (scaled to the image's size);
- `noise`: additive Gaussian noise, standard deviation in 8-bit grey levels (seeded);
- `exposure`: linear gain on the pixel values, clipped (< 1 under-, > 1 over-exposure).

Every function is deterministic: the same image, level and seed give the same bytes (only
`noise` uses the seed; it is accepted everywhere so callers need not care). A degradation is
named by a spec string `"kind:level"` (`"jpeg:10"`, `"blur:2"`, `"noise:25"`, `"exposure:0.3"`,
`"none"`), which is what the labels CSV stores, so a training run can rebuild the exact image.
Needs only numpy and OpenCV.
"""

from __future__ import annotations

import zlib

import cv2
import numpy as np

#: the paper's 9 JPEG levels (its values are not published; these are ours, see above)
JPEG_QUALITIES: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 10, 20, 40)
#: Gaussian blur sigma, in pixels of a 224-px short side
BLUR_SIGMAS: tuple[float, ...] = (1.0, 2.0, 3.0, 4.5, 7.0)
#: additive Gaussian noise, standard deviation in grey levels (0..255)
NOISE_SIGMAS: tuple[float, ...] = (20.0, 50.0, 90.0, 140.0, 200.0)
#: exposure gain: three under-exposed, three over-exposed
EXPOSURE_GAINS: tuple[float, ...] = (0.05, 0.1, 0.2, 3.0, 6.0, 10.0)

KINDS = ("none", "jpeg", "blur", "noise", "exposure")
REFERENCE_SHORT_SIDE = 224


def _check(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 H x W x 3 image, got {image.dtype} {image.shape}")
    return image


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at `quality` (1..100, libjpeg scale, 4:2:0 chroma as OpenCV's default)
    and decode again: exactly what a device gets from a compressed upload."""
    _check(image)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; `sigma` in pixels of a 224-px short side (scaled to this image)."""
    _check(image)
    if sigma <= 0:
        return image.copy()
    s = float(sigma) * min(image.shape[:2]) / REFERENCE_SHORT_SIDE
    return cv2.GaussianBlur(image, (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT101)


def noise(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Additive white Gaussian noise of standard deviation `sigma` grey levels, seeded. A grey
    image (three equal channels, e.g. an X-ray) gets the same noise in every channel: a grey
    sensor makes grey noise, and colour speckle would trip the X-ray model's colour check."""
    _check(image)
    rng = np.random.default_rng(seed)
    grey = bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
    shape = image.shape[:2] + (1,) if grey else image.shape
    noisy = image.astype(np.float32) + rng.normal(0.0, float(sigma), shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def exposure(image: np.ndarray, gain: float) -> np.ndarray:
    """Linear gain on the pixel values, clipped to 0..255 (gain < 1: under-, > 1: over-exposed)."""
    _check(image)
    if gain <= 0:
        raise ValueError(f"exposure gain must be > 0, got {gain}")
    return np.clip(np.rint(image.astype(np.float32) * float(gain)), 0, 255).astype(np.uint8)


def parse_spec(spec: str) -> tuple[str, float | None]:
    """"jpeg:10" -> ("jpeg", 10.0); "none" -> ("none", None). One clear error otherwise."""
    spec = spec.strip()
    if spec == "none":
        return "none", None
    kind, _, level = spec.partition(":")
    if kind not in KINDS or kind == "none" or not level:
        raise ValueError(f"degradation {spec!r}: expected 'none' or KIND:LEVEL with KIND in "
                         f"{', '.join(k for k in KINDS if k != 'none')}")
    return kind, float(level)


def spec_name(kind: str, level: float | None) -> str:
    if kind == "none":
        return "none"
    if kind == "jpeg":
        return f"jpeg:{int(level)}"
    return f"{kind}:{float(level):g}"


def apply(image: np.ndarray, spec: str, seed: int = 0) -> np.ndarray:
    """Apply one degradation named by its spec string (see the module docstring)."""
    kind, level = parse_spec(spec)
    if kind == "none":
        return _check(image).copy()
    if kind == "jpeg":
        return jpeg(image, int(level))
    if kind == "blur":
        return blur(image, level)
    if kind == "noise":
        return noise(image, level, seed)
    return exposure(image, level)


def default_specs(extras: bool = True, pristine: bool = True) -> list[str]:
    """The degradations a labelling run makes of every image: pristine ("none"), the 9 JPEG
    levels, and (with `extras`) blur, noise and exposure."""
    out = ["none"] if pristine else []
    out += [f"jpeg:{q}" for q in JPEG_QUALITIES]
    if extras:
        out += [spec_name("blur", s) for s in BLUR_SIGMAS]
        out += [spec_name("noise", s) for s in NOISE_SIGMAS]
        out += [spec_name("exposure", g) for g in EXPOSURE_GAINS]
    return out


def sample_seed(image_key: str, spec: str, base_seed: int = 0) -> int:
    """A stable per-(image, degradation) seed (CRC32: the same on every machine and run)."""
    return (zlib.crc32(f"{image_key}|{spec}".encode()) + int(base_seed)) & 0x7FFFFFFF
