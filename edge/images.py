"""Decode and validate images once, at the edge of the program.

Everything after `decode_image` sees an H x W x 3 uint8 RGB array, turned as a viewer shows it
(EXIF orientation 2-8 applied, for JPEG, PNG, WebP and TIFF). Problems a user can meet (empty or
unreadable file, truncated JPEG/PNG/WebP/BMP, a PDF renamed .jpg, a header claiming 20000 x 20000
in any format OpenCV reads) become one `ImageError` line instead of a crash deep inside a backend;
bytes after an image's end marker (motion photos) are not an error. `image_headers` reads what the
file says about itself before anything is decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecell.errors import ImageError
from edgecell.image_headers import ImageHeader, orient, read_header

#: Largest image we decode, in pixels (width x height). A 3246 x 2448 microscope frame is 8 MP;
#: a 20000 x 20000 PNG would need 1.2 GB as RGB. Override with EDGECELL_MAX_PIXELS.
MAX_PIXELS = int(os.environ.get("EDGECELL_MAX_PIXELS", 64_000_000))
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import cv2  # noqa: E402  (after the pixel limit is set)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dcm")


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as stored, read from the header of any format OpenCV reads, without
    decoding; None if the format or its size is unknown."""
    header = read_header(data)
    return (int(header.width), int(header.height)) if header.pixels is not None else None


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any decoded array (grey, BGR, BGRA, 16-bit) as H x W x 3 uint8 RGB.

    16-bit images (X-ray detectors write 12- or 16-bit PNG) are scaled by their bit depth, not by
    their min/max, so that brightness means the same thing in every image.
    """
    if image.dtype == np.uint16:
        depth = 4095.0 if image.max(initial=0) <= 4095 else 65535.0
        image = np.clip(image.astype(np.float32) * (255.0 / depth) + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


#: Formats whose OpenCV decoder turns the image by its orientation tag itself (libtiff's RGBA
#: reader); for every other format the tag is read by `image_headers` and applied here.
_DECODER_ORIENTS = frozenset({"tiff"})
#: Decode with the stored bit depth and colour/grey, alpha dropped, the orientation left to us.
_IMREAD_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR | cv2.IMREAD_IGNORE_ORIENTATION


def decode_bytes(data: bytes, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes to RGB uint8 as a viewer shows it (EXIF orientation applied),
    or raise one clear `ImageError`: empty, over the pixel limit (checked in the header, before
    any decoder allocates), cut short, or not decodable. Bytes after the image's own end (a motion
    photo's video after the JPEG EOI, data after PNG's IEND) are not part of it and are ignored."""
    if len(data) == 0:
        raise ImageError(f"{name}: file is empty (0 bytes); expected a JPEG, PNG, BMP or TIFF image")
    header = read_header(data)
    kind = (header.format or "image").upper()
    if header.pixels is not None and header.pixels > MAX_PIXELS:
        raise ImageError(
            f"{name}: image is {header.width}x{header.height} = {header.pixels / 1e6:.0f} MP, over the "
            f"{MAX_PIXELS / 1e6:.0f} MP limit; downscale it or raise EDGECELL_MAX_PIXELS"
        )
    if header.truncated:
        raise ImageError(f"{name}: image file is truncated ({kind} data stops before its end); "
                         "re-copy or re-export it")
    buf = np.frombuffer(memoryview(data)[: header.end], dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, _IMREAD_FLAGS)
    except cv2.error as exc:  # e.g. OpenCV's own pixel limit, a header it refuses
        reason = "over the pixel limit" if "MAX_IMAGE_PIXELS" in str(exc) else _cv2_reason(exc)
        raise ImageError(f"{name}: OpenCV cannot decode this {kind} file ({reason})") from None
    except MemoryError:
        raise ImageError(f"{name}: {kind} image too large to decode in this machine's memory") from None
    if image is None or image.size == 0:
        raise ImageError(f"{name}: not a readable image; expected a JPEG, PNG, BMP or TIFF file")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageError(f"{name}: image is {image.shape[1]}x{image.shape[0]}, over the pixel limit")
    if header.format not in _DECODER_ORIENTS or _not_turned(image, header):
        image = np.ascontiguousarray(orient(image, header.orientation))
    return to_rgb8(image)


def _not_turned(image: np.ndarray, header: ImageHeader) -> bool:
    """A decoder that should have applied a quarter-turn orientation but returned the stored shape
    (an OpenCV build whose TIFF reader does not orient): apply it here."""
    h, w = image.shape[:2]
    return header.orientation >= 5 and h != w and (w, h) == (header.width, header.height)


def _cv2_reason(exc: cv2.error) -> str:
    """The one-line reason inside an OpenCV error message (which spans lines and names its source)."""
    text = getattr(exc, "err", None) or str(exc)
    return " ".join(text.split())[:160]


def is_dicom(head: bytes) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble, whatever their name (often none)."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def decode_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB. DICOM (by suffix or content) needs the `dicom` extra."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image file") from None
    except PermissionError:
        raise ImageError(f"{path}: cannot be read (permission denied); check its permissions") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if path.suffix.lower() == ".dcm" or is_dicom(data[:132]):
        return _decode_dicom(path)
    return decode_bytes(data, str(path))


def _decode_dicom(path: Path) -> np.ndarray:
    """DICOM -> 8-bit RGB as a viewer would show it: rescale, window (the file's own VOI window if it
    has one, else the 0.5-99.5 percentiles), MONOCHROME1 inverted, first frame of a multi-frame file."""
    try:
        import pydicom
    except ImportError:
        raise ImageError(f"{path}: DICOM needs pydicom; install it with: pip install 'edgecell[dicom]'") from None
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # pydicom raises many types for bad files
        raise ImageError(f"{path}: unreadable DICOM ({type(exc).__name__}: {exc})") from None
    if "PixelData" not in ds:
        raise ImageError(f"{path}: DICOM holds no image (no PixelData); expected an X-ray or other image object")
    rows, cols = int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0))
    if rows * cols > MAX_PIXELS:
        raise ImageError(f"{path}: image is {cols}x{rows}, over the pixel limit")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        if syntax is not None and getattr(syntax, "is_compressed", False):
            raise ImageError(f"{path}: compressed DICOM ({name}) needs a decoder; install it with: "
                             "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg") from None
        raise ImageError(f"{path}: unreadable DICOM pixel data ({type(exc).__name__}: {exc})") from None
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    if samples == 3:  # colour DICOM (photos, screenshots): pydicom returns RGB
        return to_rgb8(cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2BGR))
    values = pixels.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1) or 1) \
        + float(getattr(ds, "RescaleIntercept", 0) or 0)
    centre, width = _first_value(ds, "WindowCenter"), _first_value(ds, "WindowWidth")
    if centre is not None and width is not None and width > 1:
        lo, hi = centre - width / 2, centre + width / 2
    else:
        lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    grey = np.clip((values - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255).astype(np.uint8)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":  # white = low values
        grey = 255 - grey
    return to_rgb8(grey)


def _first_value(ds, keyword: str) -> float | None:
    """Window tags may hold one value or several (one per preset); the first is the default."""
    value = getattr(ds, keyword, None)
    if value is None:
        return None
    try:
        return float(value[0] if hasattr(value, "__len__") and not isinstance(value, str) else value)
    except (TypeError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed into the model input: model = image * scale + pad."""

    scale: float
    pad_x: int
    pad_y: int

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """Map N x 4 boxes (x1, y1, x2, y2) from model-input pixels back to image pixels."""
        out = boxes.astype(np.float32).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale
        return out


#: Every resize of pre-processing is OpenCV's bit-exact bilinear (INTER_LINEAR_EXACT): fixed-point
#: integer arithmetic on positions computed in IEEE double, so the same bytes on every CPU. INTER_LINEAR
#: and INTER_AREA are not: on arm64 OpenCV hands them to Carotene or KleidiCV and on x86 to IPP, whose
#: rounding differs (issue 13: 17 vs 16 RBC on the same smear on a Raspberry Pi and a PC). No platform
#: HAL of x86 or arm64 takes over INTER_LINEAR_EXACT; `tests/test_images.py` checks it against an
#: independent numpy implementation, so a build where one did would fail there.
EXACT_LINEAR = cv2.INTER_LINEAR_EXACT


def resize(image: np.ndarray, size: tuple[int, int], *, antialias: bool = True,
           dst: np.ndarray | None = None) -> np.ndarray:
    """`image` (H x W or H x W x C uint8) resized to (width, height), the same bytes on every CPU.

    Bilinear, bit-exact. With `antialias` (the default), an axis shrunk by 2x or more is first
    halved (exact 2 x 1 means) until the rest is under 2x: a box pre-filter, so that a large
    photo or film does not alias as plain bilinear would (what INTER_AREA was used for). `dst`:
    a height x width (x C) uint8 array (a view is fine) the result is written into."""
    width, height = int(size[0]), int(size[1])
    while antialias and (image.shape[1] >= 2 * width or image.shape[0] >= 2 * height):
        half_w = image.shape[1] // 2 if image.shape[1] >= 2 * width else image.shape[1]
        half_h = image.shape[0] // 2 if image.shape[0] >= 2 * height else image.shape[0]
        image = cv2.resize(image, (half_w, half_h), interpolation=EXACT_LINEAR)
    if image.shape[1] == width and image.shape[0] == height:
        if dst is None:
            return image.copy()
        dst[...] = image.reshape(dst.shape)
        return dst
    out = cv2.resize(image, (width, height), dst=dst, interpolation=EXACT_LINEAR)
    if dst is not None and out is not dst:  # OpenCV allocated (e.g. a single-channel view): copy in
        dst[...] = out.reshape(dst.shape)
        return dst
    return out


def _antialias(interpolation: int | str | None) -> bool:
    """Plain bilinear ('linear', cv2.INTER_LINEAR[_EXACT]: what the cells detector was trained with)
    or bilinear after the box pre-filter (the default; 'area', cv2.INTER_AREA)."""
    if interpolation in (None, "area", cv2.INTER_AREA):
        return True
    if interpolation in ("linear", cv2.INTER_LINEAR, cv2.INTER_LINEAR_EXACT):
        return False
    raise ValueError(f"interpolation {interpolation!r}: expected 'linear' or 'area'")


def letterbox(image: np.ndarray, size: tuple[int, int], fill: int = 114, *,
              interpolation: int | str | None = None,
              canvas: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio into (width, height), padding with grey; uint8 out, the same
    bytes on every CPU (`resize`).

    `interpolation`: 'linear' (or cv2.INTER_LINEAR) for plain bit-exact bilinear, else (default,
    'area', cv2.INTER_AREA) bilinear after a box pre-filter when shrinking by 2x or more.
    `canvas`: a height x width x C uint8 buffer to reuse (the resize is written straight into it,
    no copy); it is returned, so it is overwritten by the next call that gets it."""
    width, height = size
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    pad_x, pad_y = (width - nw) // 2, (height - nh) // 2
    if canvas is None:
        canvas = np.full((height, width, image.shape[2]), fill, dtype=np.uint8)
    else:
        canvas[:pad_y], canvas[pad_y + nh :] = fill, fill
        canvas[pad_y : pad_y + nh, :pad_x], canvas[pad_y : pad_y + nh, pad_x + nw :] = fill, fill
    resize(image, (nw, nh), antialias=_antialias(interpolation), dst=canvas[pad_y : pad_y + nh, pad_x : pad_x + nw])
    return canvas, Letterbox(scale, pad_x, pad_y)


def resize_stretch(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height) ignoring aspect ratio (what most classifiers were trained with),
    the same bytes on every CPU (`resize`)."""
    return resize(image, size)


def encode_image(image_rgb: np.ndarray, suffix: str = ".png") -> bytes:
    """An RGB image as the bytes of a file of that suffix (.png, .jpg at quality 90)."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(suffix or ".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageError(f"could not encode an image as {suffix}")
    return buf.tobytes()


def write_image_atomic(path: str | os.PathLike, image_rgb: np.ndarray) -> Path:
    """Write an RGB image so that a reader never sees half a file (temp file + rename; no
    temporary file left when the write fails)."""
    from edgecell.sinks import write_bytes_atomic

    path = Path(path)
    return write_bytes_atomic(path, encode_image(image_rgb, path.suffix or ".png"))
