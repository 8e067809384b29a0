import struct
import sys

import cv2
import numpy as np
import pytest

from edgecell.errors import ImageError
from edgecell.images import Letterbox, decode_image, header_size, letterbox, write_image_atomic
from edgecell.images import resize as images_resize


def test_real_jpeg_decodes_to_rgb_uint8(real_jpeg):
    image = decode_image(real_jpeg)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert header_size(real_jpeg.read_bytes()) == (image.shape[1], image.shape[0])


@pytest.mark.parametrize("kind, words", [
    ("empty", "0 bytes"), ("truncated", "truncated"), ("not_image", "not a readable image"),
    ("bomb", "20000x20000"), ("truncated_png", "truncated"),
])
def test_bad_file_gives_one_line_error(bad_inputs, kind, words):
    with pytest.raises(ImageError) as info:
        decode_image(bad_inputs[kind])
    message = str(info.value)
    assert words in message and "\n" not in message


def test_missing_file_is_image_error(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        decode_image(tmp_path / "nope.jpg")


def test_rgba_png_drops_alpha(odd_images, real_jpeg):
    image = decode_image(odd_images["rgba"])
    assert image.shape[2] == 3
    assert np.abs(image.astype(int) - decode_image(real_jpeg).astype(int)).mean() < 3  # PNG of the JPEG's pixels


def test_16bit_grey_png_scales_by_bit_depth(odd_images):
    wide = decode_image(odd_images["grey16"])
    narrow = decode_image(odd_images["grey8"])
    assert wide.shape == narrow.shape and wide.dtype == np.uint8
    assert np.abs(wide.astype(int) - narrow.astype(int)).max() <= 1


def test_letterbox_keeps_aspect_and_maps_boxes_back():
    image = np.zeros((480, 640, 3), np.uint8)
    canvas, box = letterbox(image, (416, 320))
    assert canvas.shape == (320, 416, 3)
    assert box == Letterbox(scale=0.65, pad_x=0, pad_y=4)
    back = box.to_image(np.array([[0, 4, 416, 316]], np.float32))
    np.testing.assert_allclose(back, [[0, 0, 640, 480]], atol=0.01)


def test_write_image_atomic_leaves_no_temp_file(tmp_path):
    path = write_image_atomic(tmp_path / "o" / "x.png", np.full((8, 8, 3), 200, np.uint8))
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["x.png"]


def _ramp(h: int = 64, w: int = 80) -> np.ndarray:
    return (np.arange(h * w, dtype=np.float32).reshape(h, w) * (4095.0 / (h * w - 1))).astype(np.uint16)


def test_dicom_12bit_monochrome2_is_windowed_to_full_range(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "chest.dcm", _ramp())
    image = decode_image(path)
    assert image.shape == (64, 80, 3) and image.dtype == np.uint8
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 255  # percentile window stretches the 12 bits
    assert np.all(np.diff(image[:, :, 0].ravel().astype(int)) >= 0)  # ramp order kept


def test_dicom_monochrome1_is_inverted(tmp_path, make_dicom):
    mono2 = decode_image(make_dicom(tmp_path / "a.dcm", _ramp()))
    mono1 = decode_image(make_dicom(tmp_path / "b.dcm", _ramp(), photometric="MONOCHROME1"))
    assert np.array_equal(mono1, 255 - mono2)


def test_dicom_uses_its_own_voi_window(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "w.dcm", _ramp(), WindowCenter=1024, WindowWidth=1024)
    grey = decode_image(path)[:, :, 0].astype(int)
    values = _ramp().astype(int)
    assert grey[values <= 512].max() == 0 and grey[values >= 1536].min() == 255


def test_dicom_without_suffix_is_recognised(tmp_path, make_dicom):
    from edgecell.sources import list_images

    make_dicom(tmp_path / "IM000001", _ramp())
    (tmp_path / "README").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["IM000001"]
    assert decode_image(tmp_path / "IM000001").shape == (64, 80, 3)


def test_truncated_dicom_is_one_line_error(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "cut.dcm", _ramp())
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(ImageError) as err:
        decode_image(path)
    assert "DICOM" in str(err.value) and "\n" not in str(err.value)


def test_dicom_without_pydicom_names_the_extra(tmp_path, make_dicom, monkeypatch):
    path = make_dicom(tmp_path / "x.dcm", _ramp())
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom now raises ImportError
    with pytest.raises(ImageError, match=r"pip install 'edgecell\[dicom\]'"):
        decode_image(path)


def test_linear_letterbox_into_a_reused_canvas_places_like_the_reference():
    import cv2

    canvas = np.empty((320, 416, 3), np.uint8)
    for shape in ((480, 640, 3), (640, 480, 3), (100, 120, 3)):
        image = np.full(shape, 90, np.uint8)
        fast, lb = letterbox(image, (416, 320), interpolation=cv2.INTER_LINEAR, canvas=canvas)
        ref, lb_ref = letterbox(image, (416, 320))
        assert lb == lb_ref and fast.shape == ref.shape
        np.testing.assert_array_equal(fast, ref)  # flat image: interpolation makes no difference
    a, _ = letterbox(np.zeros((480, 640, 3), np.uint8), (416, 320), interpolation=cv2.INTER_LINEAR, canvas=canvas)
    assert a[0, 0, 0] == 114 and a[10, 10, 0] == 0  # the reused canvas gets its bands refilled


# --------------------------------------------------------------------------- orientation (issue 12 item 2)
def _asymmetric() -> np.ndarray:
    """RGB image whose every flip and turn is different: coloured blocks in three corners."""
    image = np.full((40, 60, 3), 30, np.uint8)
    image[:12, :20] = (250, 20, 20)
    image[28:, 45:] = (20, 20, 250)
    image[:6, 52:] = (20, 250, 20)
    return image


def _with_orientation(path, image: np.ndarray, orientation: int, fmt: str):
    from PIL import Image

    pil = Image.fromarray(image)
    if fmt == "TIFF":
        pil.save(path, fmt, tiffinfo={274: orientation})
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        pil.save(path, fmt, exif=exif.tobytes(), **({"lossless": True} if fmt == "WEBP" else {"quality": 95}))
    return path


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_image_is_read_as_a_viewer_shows_it(tmp_path, fmt, orientation):
    from PIL import Image, ImageOps

    path = _with_orientation(tmp_path / f"o{orientation}.{fmt.lower()}", _asymmetric(), orientation, fmt)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")).astype(int)
    image = decode_image(path)
    assert image.shape == shown.shape
    assert np.abs(image.astype(int) - shown).mean() < (2.0 if fmt == "JPEG" else 1e-9)


def test_16bit_png_orientation_is_applied(tmp_path):
    from PIL import Image

    grey = np.zeros((40, 60), np.uint16)
    grey[:10, :20] = 65535
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: a viewer rotates it 90 degrees clockwise
    Image.fromarray(grey).save(tmp_path / "film.png", exif=exif.tobytes())
    image = decode_image(tmp_path / "film.png")
    assert image.shape == (60, 40, 3)
    assert image[:20, -10:].min() == 255 and image[20:, :].max() == 0  # the bright block is now top right


# --------------------------------------------------------------------------- trailing data (item 3)
@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_bytes_after_the_end_marker_are_accepted(tmp_path, real_jpeg, ext):
    ok, buf = cv2.imencode(ext, cv2.imread(str(real_jpeg)))
    plain = tmp_path / f"plain{ext}"
    plain.write_bytes(buf.tobytes())
    motion = tmp_path / f"motion{ext}"  # a motion photo: the video follows the still image
    motion.write_bytes(buf.tobytes() + b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00" + bytes(range(256)) * 16)
    np.testing.assert_array_equal(decode_image(motion), decode_image(plain))


@pytest.mark.parametrize("ext", [".bmp", ".webp"])
def test_other_formats_cut_short_are_refused(tmp_path, real_jpeg, ext):
    ok, buf = cv2.imencode(ext, cv2.imread(str(real_jpeg)))
    path = tmp_path / f"cut{ext}"
    path.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(ImageError, match="truncated"):
        decode_image(path)


# --------------------------------------------------------------------------- input errors (item 10)
def _bomb(kind: str, side: int = 20000) -> bytes:
    """A small file whose header claims side x side pixels."""
    if kind == "bmp":
        return b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24,
                                                                             0, 0, 2835, 2835, 0, 0) + bytes(64)
    if kind == "tiff":
        entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
                   (273, 4, 1, 200), (277, 3, 1, 1), (278, 4, 1, side), (279, 4, 1, side * side)]
        ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + bytes(4)
        return b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(300)
    if kind == "webp":
        body = struct.pack("<I", 0) + (side - 1).to_bytes(3, "little") + (side - 1).to_bytes(3, "little")
        chunk = b"VP8X" + struct.pack("<I", len(body)) + body
        return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk
    if kind == "gif":
        return b"GIF89a" + struct.pack("<HH", side, side) + b"\x00\x00\x00" + b",\x00\x00\x00\x00" + bytes(40) + b";"
    if kind == "pnm":
        return f"P5\n{side} {side}\n255\n".encode() + bytes(100)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["bmp", "tiff", "webp", "gif", "pnm"])
def test_header_claiming_20000x20000_is_one_line_error_in_every_format(tmp_path, kind):
    path = tmp_path / f"bomb.{kind}"
    path.write_bytes(_bomb(kind))
    with pytest.raises(ImageError) as err:
        decode_image(path)
    assert "20000x20000" in str(err.value) and "\n" not in str(err.value)


def test_opencv_refusal_becomes_one_line_image_error(tmp_path, monkeypatch, real_jpeg):
    from edgecell import images

    def refuse(buf, flags):  # what OpenCV raises past its own pixel limit
        raise cv2.error("OpenCV(5.0.0) loadsave.cpp:77: error: (-215:Assertion failed) "
                        "pixels <= CV_IO_MAX_IMAGE_PIXELS in function 'validateInputImageSize'\n")

    monkeypatch.setattr(images.cv2, "imdecode", refuse)
    with pytest.raises(ImageError) as err:
        decode_image(real_jpeg)
    assert "over the pixel limit" in str(err.value) and "\n" not in str(err.value)


def test_unreadable_file_is_one_line_image_error(tmp_path, monkeypatch, real_jpeg):
    from pathlib import Path

    path = tmp_path / "locked.jpg"
    path.write_bytes(real_jpeg.read_bytes())

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ImageError, match="permission denied"):
        decode_image(path)


def test_folder_given_as_image_is_one_line_image_error(tmp_path):
    with pytest.raises(ImageError, match="is a folder"):
        decode_image(tmp_path)


# --------------------------------------------------------------------------- resize (issue 13 item 6)
def _reference_taps(n_src: int, n_dst: int):
    """Bit-exact bilinear along one axis, written from its definition: the source position of
    output i is (i + 0.5) * n_src / n_dst - 0.5 (IEEE double); its two neighbours get weights in
    1/256 (the right one rounded half to even); positions before the first or past the last
    source pixel take that pixel whole."""
    scale = 1.0 / (n_dst / n_src)
    x = (np.arange(n_dst, dtype=np.float64) + 0.5) * scale - 0.5
    left = np.floor(x).astype(np.int64)
    right_w = np.rint((x - left) * 256).astype(np.int64)
    edge = (left < 0) | (left >= n_src - 1)
    left = np.clip(left, 0, n_src - 1)
    return left, np.minimum(left + 1, n_src - 1), np.where(edge, 256, 256 - right_w), np.where(edge, 0, right_w)


def _reference_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Integer-only bilinear: rows first (weights in 1/256), then columns, rounded once (>> 16)."""
    x0, x1, wx0, wx1 = _reference_taps(image.shape[1], size[0])
    y0, y1, wy0, wy1 = _reference_taps(image.shape[0], size[1])
    src = image.astype(np.int64)
    col = (-1,) + (1,) * (image.ndim - 2)
    across = src[:, x0] * wx0.reshape(col) + src[:, x1] * wx1.reshape(col)
    row = (-1, 1) + (1,) * (image.ndim - 2)
    both = across[y0] * wy0.reshape(row) + across[y1] * wy1.reshape(row)
    return ((both + (1 << 15)) >> 16).astype(np.uint8)


def _reference_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Halve an axis while it shrinks by 2x or more, then bilinear: `images.resize`'s definition."""
    while image.shape[1] >= 2 * size[0] or image.shape[0] >= 2 * size[1]:
        image = _reference_bilinear(image, (image.shape[1] // 2 if image.shape[1] >= 2 * size[0] else image.shape[1],
                                            image.shape[0] // 2 if image.shape[0] >= 2 * size[1] else image.shape[0]))
    return _reference_bilinear(image, size)


def _texture(h: int, w: int, channels: int = 3) -> np.ndarray:
    """Fixed, sharp-edged test image (integer formula: the same on every machine)."""
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(channels), indexing="ij")
    return ((x * 37 + y * 101 + c * 59 + (x * y) % 17 * 13) % 256).astype(np.uint8)


@pytest.mark.parametrize("shape, size", [
    ((480, 640, 3), (416, 312)),   # a smear into the cells detector (1.5x)
    ((533, 400, 3), (224, 224)),   # a product photo, stretched (2.4x one way, 1.8x the other)
    ((640, 640, 3), (224, 224)),   # an X-ray film (2.9x: one halving first)
    ((2001, 1999, 1), (224, 224)),  # a large grey film (odd sizes, three halvings)
    ((224, 224, 3), (128, 128)),   # a gate's input from its task model's
    ((37, 53, 3), (416, 312)),     # a tiny image, enlarged
    ((480, 640, 3), (320, 240)),   # an exact 2x
])
def test_resize_is_bit_exact_against_an_integer_reference(shape, size):
    image = _texture(*shape)
    if shape[2] == 1:
        image = image[:, :, 0]
    np.testing.assert_array_equal(images_resize(image, size), _reference_resize(image, size))


def test_letterbox_pixels_are_the_reference_resize():
    image = _texture(480, 640)
    canvas, box = letterbox(image, (416, 416))
    np.testing.assert_array_equal(canvas[box.pad_y : box.pad_y + 312], _reference_resize(image, (416, 312)))
    linear, _ = letterbox(image, (416, 416), interpolation="linear", canvas=np.empty((416, 416, 3), np.uint8))
    np.testing.assert_array_equal(linear, canvas)  # under 2x both are plain bilinear


PINNED_STRETCH_SHA256 = "eb217d9e168cbba670144278a095abd2ff9c19417d0b1e26114aeaaa539cfe6b"


def test_stretched_resize_has_pinned_bytes():
    """The bytes every CPU must produce (sha256 recorded on x86-64; an arm64 run must match)."""
    import hashlib

    from edgecell.images import resize_stretch

    digest = hashlib.sha256(resize_stretch(_texture(533, 400), (224, 224)).tobytes()).hexdigest()
    assert digest == PINNED_STRETCH_SHA256
