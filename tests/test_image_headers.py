import io
import struct

import cv2
import numpy as np
import pytest

from edgecell.image_headers import orient, read_header

#: every format this OpenCV can write, with the array it writes (PFM/HDR want float, PGM/PBM grey)
_IMAGE = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
_ENCODABLE = [(".jpg", "jpeg"), (".png", "png"), (".bmp", "bmp"), (".tif", "tiff"), (".webp", "webp"),
              (".ppm", "pnm"), (".pgm", "pnm"), (".pbm", "pnm"), (".pam", "pnm"), (".pfm", "pnm"),
              (".sr", "sunras"), (".hdr", "hdr"), (".jp2", "jp2"), (".gif", "gif"), (".avif", "avif")]


def _encode(ext: str) -> bytes:
    arr = _IMAGE.astype(np.float32) / 255 if ext in (".pfm", ".hdr") else _IMAGE
    arr = arr[:, :, 0] if ext in (".pgm", ".pbm") else arr
    try:
        ok, buf = cv2.imencode(ext, arr)
    except cv2.error:
        ok = False
    if not ok:
        pytest.skip(f"this OpenCV build cannot write {ext}")
    return buf.tobytes()


@pytest.mark.parametrize("ext, fmt", _ENCODABLE)
def test_header_gives_format_and_size_of_every_format_opencv_writes(ext, fmt):
    header = read_header(_encode(ext))
    assert (header.format, header.width, header.height, header.truncated) == (fmt, 53, 37, False)


def test_unknown_bytes_have_no_format():
    assert read_header(b"%PDF-1.4 not an image").format is None


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".bmp"])
def test_file_cut_short_is_truncated(ext):
    data = _encode(ext)
    assert read_header(data[: len(data) * 2 // 3]).truncated


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp", ".bmp"])
def test_bytes_after_the_end_are_not_truncation(ext):
    data = _encode(ext)
    header = read_header(data + b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)  # a motion photo's video
    assert not header.truncated and header.end == len(data)


def test_jpeg_end_is_found_past_an_exif_thumbnail_and_in_a_progressive_scan():
    from PIL import Image

    thumb = io.BytesIO()
    Image.fromarray(_IMAGE[:8, :8]).save(thumb, "JPEG")  # a JPEG (with its own EOI) inside APP1
    exif = b"Exif\x00\x00" + b"II*\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00" + thumb.getvalue()
    buf = io.BytesIO()
    Image.fromarray(_IMAGE).save(buf, "JPEG", progressive=True, exif=exif)
    data = buf.getvalue()
    assert read_header(data).end == len(data)
    cut = data.index(b"\xff\xda") + 40  # inside the first scan: after the thumbnail's EOI
    assert read_header(data[:cut]).truncated


def _exif(orientation: int, big_endian: bool = False) -> bytes:
    e = ">" if big_endian else "<"
    return (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "IH", 8, 1) + \
        struct.pack(e + "HHIHH", 274, 3, 1, orientation, 0) + struct.pack(e + "I", 0)


@pytest.mark.parametrize("big_endian", [False, True])
def test_png_exif_orientation_in_either_byte_order(big_endian):
    data = _encode(".png")
    body = _exif(6, big_endian)
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + b"\x00\x00\x00\x00"
    at = data.index(b"IDAT") - 4
    assert read_header(data[:at] + chunk + data[at:]).orientation == 6


def test_out_of_range_orientation_is_ignored():
    data = _encode(".png")
    chunk = struct.pack(">I", 26) + b"eXIf" + _exif(9) + b"\x00\x00\x00\x00"
    assert read_header(data[:33] + chunk + data[33:]).orientation == 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow_exif_transpose(orientation):
    from PIL import Image, ImageOps

    image = Image.fromarray(_IMAGE)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(buf)))
    np.testing.assert_array_equal(orient(_IMAGE, orientation), expected)


def test_avif_size_is_read_from_its_meta_box_only():
    data = _encode(".avif")
    chance = struct.pack(">I4s", 24, b"free") + b"ispe" + bytes(4) + struct.pack(">II", 60000, 60000)
    assert (read_header(data + chance).width, read_header(data + chance).height) == (53, 37)


def test_bmp_without_its_last_rows_padding_is_not_truncated():
    data = _encode(".bmp")  # 53 px x 3 bytes = 159 per row, padded to 160
    assert not read_header(data[:-1]).truncated and read_header(data[: len(data) - 160]).truncated
