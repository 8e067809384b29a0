"""What an image file says about itself before it is decoded: its format, its size, its EXIF
orientation and where its data ends.

Read from the bytes alone (no decoder, no allocation of pixels), so that `images.decode_bytes` can
refuse a "decompression bomb" of any format OpenCV reads before the decoder allocates it, tell a
file that was cut short (refused: the decoder would silently fill the missing part) from a
complete file followed by other bytes (accepted: motion photos append a video after the JPEG's
EOI, some cameras append maker data after PNG's IEND), and turn the image as a viewer shows it.

Formats: JPEG, PNG, WebP, TIFF (and BigTIFF), BMP, GIF, PNM/PAM/PFM, Sun raster, Radiance HDR,
JPEG 2000 (JP2 and raw codestream), AVIF. Unknown bytes give an `ImageHeader` with `format=None`;
OpenCV then has the last word (and its own pixel limit, set in `images`).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

#: EXIF/TIFF tag numbers read here
_TAG_WIDTH, _TAG_HEIGHT, _TAG_ORIENTATION = 256, 257, 274
#: a JPEG marker inside entropy-coded data: 0xFF followed by neither a stuffed zero, a restart
#: marker (D0-D7) nor another 0xFF (fill byte)
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
#: SOFn markers that carry the frame size (C4 = DHT, C8 = JPG extension, CC = DAC are not frames)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, 0xD8, *range(0xD0, 0xD8)])
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


@dataclass(frozen=True)
class ImageHeader:
    """The facts an encoded image states about itself. `width`/`height` are as stored (before the
    orientation is applied); `end` is the offset just past the image's own end (JPEG EOI, PNG IEND,
    the RIFF size of a WebP, the pixel array of a BMP) or None where the format has no such mark or
    it was not looked for; `truncated` says the bytes stop before that end."""

    format: str | None
    width: int | None = None
    height: int | None = None
    orientation: int = 1
    end: int | None = None
    truncated: bool = False

    @property
    def pixels(self) -> int | None:
        return self.width * self.height if self.width is not None and self.height is not None else None


def read_header(data: bytes) -> ImageHeader:
    """Format, stored size, EXIF orientation (1-8; 1 = as stored) and completeness of `data`."""
    parse = next((p for magic, p in _PARSERS if data.startswith(magic)), None)
    if parse is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        parse = _webp
    elif parse is None and data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis", b"mif1", b"msf1"):
        parse = _avif
    if parse is None:
        return ImageHeader(None)
    try:
        return parse(data)
    except (struct.error, IndexError, ValueError):  # a header too short or malformed to read:
        return ImageHeader(parse.__name__.strip("_"))  # the decoder will say it cannot read it


# --------------------------------------------------------------------------- EXIF / TIFF structure
def _tiff_tags(data: bytes, wanted: set[int]) -> dict[int, int]:
    """Integer values of the `wanted` tags in IFD0 of a TIFF structure (a TIFF file, or the body of
    an EXIF block); empty when the structure is not readable."""
    if len(data) < 8 or data[:2] not in (b"II", b"MM"):
        return {}
    e = "<" if data[:2] == b"II" else ">"
    magic = struct.unpack(e + "H", data[2:4])[0]
    if magic == 42:
        offset = struct.unpack(e + "I", data[4:8])[0]
        count_fmt, entry_size, value_at = "H", 12, 8
    elif magic == 43 and len(data) >= 16:  # BigTIFF: 8-byte offsets, 20-byte entries
        offset = struct.unpack(e + "Q", data[8:16])[0]
        count_fmt, entry_size, value_at = "Q", 20, 12
    else:
        return {}
    count_size = struct.calcsize(count_fmt)
    if offset + count_size > len(data):
        return {}
    count = struct.unpack(e + count_fmt, data[offset : offset + count_size])[0]
    found = {}
    for k in range(min(count, 4096)):
        at = offset + count_size + k * entry_size
        if at + entry_size > len(data):
            break
        tag, kind = struct.unpack(e + "HH", data[at : at + 4])
        if tag not in wanted:
            continue
        if kind == 3:  # SHORT
            found[tag] = struct.unpack(e + "H", data[at + value_at : at + value_at + 2])[0]
        elif kind == 4:  # LONG
            found[tag] = struct.unpack(e + "I", data[at + value_at : at + value_at + 4])[0]
        elif kind == 16:  # LONG8 (BigTIFF)
            found[tag] = struct.unpack(e + "Q", data[at + value_at : at + value_at + 8])[0]
    return found


def _exif_orientation(block: bytes) -> int:
    """Orientation (1-8) from an EXIF block, with or without its 'Exif\\0\\0' prefix; 1 if absent
    or out of range (a value a viewer would ignore)."""
    if block.startswith(b"Exif\x00\x00"):
        block = block[6:]
    value = _tiff_tags(block, {_TAG_ORIENTATION}).get(_TAG_ORIENTATION, 1)
    return value if 1 <= value <= 8 else 1


# --------------------------------------------------------------------------- one parser per format
def _jpeg(data: bytes) -> ImageHeader:
    """Walk the segments (skipping each by its length, so an EXIF thumbnail's own EOI is never
    taken for the end) and the entropy-coded scans to the EOI marker."""
    n, i = len(data), 2
    width = height = None
    orientation = 0
    while True:
        if i >= n:
            return ImageHeader("jpeg", width, height, orientation or 1, truncated=True)
        if data[i] != 0xFF:  # stray bytes between segments: libjpeg skips them too
            i = data.find(b"\xff", i)
            if i < 0:
                return ImageHeader("jpeg", width, height, orientation or 1, truncated=True)
            continue
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return ImageHeader("jpeg", width, height, orientation or 1, truncated=True)
        marker = data[i]
        i += 1
        if marker == 0xD9:  # EOI: what follows is not this image's
            return ImageHeader("jpeg", width, height, orientation or 1, end=i)
        if marker in _JPEG_STANDALONE:
            continue
        if i + 2 > n:
            return ImageHeader("jpeg", width, height, orientation or 1, truncated=True)
        seg_end = i + struct.unpack(">H", data[i : i + 2])[0]
        if seg_end > n:
            return ImageHeader("jpeg", width, height, orientation or 1, truncated=True)
        if marker in _JPEG_SOF and width is None:
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
        elif marker == 0xE1 and not orientation and data.startswith(b"Exif\x00\x00", i + 2):
            orientation = _exif_orientation(data[i + 8 : seg_end])
        i = seg_end
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            found = _JPEG_MARKER.search(data, i)
            if found is None:
                return ImageHeader("jpeg", width, height, orientation or 1, truncated=True)
            i = found.start()


def _png(data: bytes) -> ImageHeader:
    """Walk the chunks to IEND; the eXIf chunk holds the orientation."""
    n, i = len(data), 8
    width = height = None
    orientation = 1
    while True:
        if i + 8 > n:
            return ImageHeader("png", width, height, orientation, truncated=True)
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        end = i + 12 + length
        if end > n:
            return ImageHeader("png", width, height, orientation, truncated=True)
        if kind == b"IHDR":
            width, height = struct.unpack(">II", data[i + 8 : i + 16])
        elif kind == b"eXIf":
            orientation = _exif_orientation(data[i + 8 : i + 8 + length])
        elif kind == b"IEND":
            return ImageHeader("png", width, height, orientation, end=end)
        i = end


def _webp(data: bytes) -> ImageHeader:
    """RIFF container: its size field says where the file ends; VP8/VP8L/VP8X give the size, the
    EXIF chunk (extended format) the orientation."""
    end = 8 + struct.unpack("<I", data[4:8])[0]
    width = height = None
    orientation = 1
    i, stop = 12, min(end, len(data))
    while i + 8 <= stop:
        kind, length = struct.unpack("<4sI", data[i : i + 8])
        body = data[i + 8 : i + 8 + length]
        if kind == b"VP8X" and len(body) >= 10:
            width = 1 + int.from_bytes(body[4:7], "little")
            height = 1 + int.from_bytes(body[7:10], "little")
        elif kind == b"VP8 " and width is None and len(body) >= 10:
            width = struct.unpack("<H", body[6:8])[0] & 0x3FFF
            height = struct.unpack("<H", body[8:10])[0] & 0x3FFF
        elif kind == b"VP8L" and width is None and len(body) >= 5:
            bits = struct.unpack("<I", body[1:5])[0]
            width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        elif kind == b"EXIF":
            orientation = _exif_orientation(body)
        i += 8 + length + (length & 1)  # chunks are padded to an even size
    return ImageHeader("webp", width, height, orientation, end=end, truncated=len(data) < end)


def _tiff(data: bytes) -> ImageHeader:
    tags = _tiff_tags(data, {_TAG_WIDTH, _TAG_HEIGHT, _TAG_ORIENTATION})
    orientation = tags.get(_TAG_ORIENTATION, 1)
    return ImageHeader("tiff", tags.get(_TAG_WIDTH), tags.get(_TAG_HEIGHT),
                       orientation if 1 <= orientation <= 8 else 1)


def _bmp(data: bytes) -> ImageHeader:
    """BITMAPCOREHEADER (12 bytes, 16-bit sizes) or BITMAPINFOHEADER and later (signed 32-bit;
    a negative height means top-down rows). An uncompressed bitmap ends after its rows."""
    pixels_at, dib = struct.unpack("<I", data[10:14])[0], struct.unpack("<I", data[14:18])[0]
    if dib == 12:
        width, height = struct.unpack("<HH", data[18:22])
        bpp, compression = struct.unpack("<H", data[24:26])[0], 0
    else:
        width, height = struct.unpack("<ii", data[18:26])
        bpp, compression = struct.unpack("<H", data[28:30])[0], struct.unpack("<I", data[30:34])[0]
    width, height = abs(width), abs(height)
    end = None
    if compression in (0, 3, 6) and bpp in (1, 4, 8, 16, 24, 32):  # BI_RGB / BI_BITFIELDS: fixed row size
        end = pixels_at + (width * bpp + 31) // 32 * 4 * height
    # some writers leave out the last row's padding (up to 3 bytes): not a cut
    return ImageHeader("bmp", width, height, end=end, truncated=end is not None and len(data) < end - 3)


def _gif(data: bytes) -> ImageHeader:
    width, height = struct.unpack("<HH", data[6:10])
    return ImageHeader("gif", width, height)


def _pnm(data: bytes) -> ImageHeader:
    """PBM/PGM/PPM/PFM: whitespace-separated width and height after the magic (comments start with
    '#'); PAM (P7): WIDTH and HEIGHT lines."""
    head = data[:4096]
    if head.startswith(b"P7"):
        w, h = re.search(rb"\bWIDTH\s+(\d+)", head), re.search(rb"\bHEIGHT\s+(\d+)", head)
        return ImageHeader("pnm", int(w.group(1)) if w else None, int(h.group(1)) if h else None)
    tokens = re.sub(rb"#[^\n]*", b" ", head[2:]).split()
    return ImageHeader("pnm", int(tokens[0]), int(tokens[1]))


def _sun_raster(data: bytes) -> ImageHeader:
    width, height = struct.unpack(">II", data[4:12])
    return ImageHeader("sunras", width, height)


def _hdr(data: bytes) -> ImageHeader:
    """Radiance: text header, a blank line, then the resolution line ('-Y 480 +X 640')."""
    found = re.search(rb"\n\n([-+])([XY]) (\d+) ([-+])([XY]) (\d+)", data[:65536])
    if not found:
        return ImageHeader("hdr")
    first, second = int(found.group(3)), int(found.group(6))
    return ImageHeader("hdr", *((first, second) if found.group(2) == b"X" else (second, first)))


def _jp2(data: bytes) -> ImageHeader:
    at = data.find(b"ihdr", 0, 65536)
    if at < 0:
        return ImageHeader("jp2")
    height, width = struct.unpack(">II", data[at + 4 : at + 12])
    return ImageHeader("jp2", width, height)


def _j2k(data: bytes) -> ImageHeader:
    """Raw JPEG 2000 codestream: SIZ segment right after SOC gives the reference grid and offset."""
    xsiz, ysiz, xo, yo = struct.unpack(">IIII", data[8:24])
    return ImageHeader("j2k", xsiz - xo, ysiz - yo)


def _avif(data: bytes) -> ImageHeader:
    """ISO-BMFF: every 'ispe' property (image spatial extent) in the top-level 'meta' box states an
    item's size; the largest is the one a decoder allocates. Only the 'meta' box is searched: the
    same four letters inside the coded image data ('mdat') would be chance."""
    largest = None
    for start, end in _isobmff_boxes(data, b"meta"):
        for found in re.finditer(rb"ispe", data[start:end]):
            at = start + found.end() + 4  # version and flags
            if at + 8 <= end:
                w, h = struct.unpack(">II", data[at : at + 8])
                if largest is None or w * h > largest[0] * largest[1]:
                    largest = (w, h)
    return ImageHeader("avif", *(largest or (None, None)))


def _isobmff_boxes(data: bytes, kind: bytes) -> list[tuple[int, int]]:
    """(start, end) of each top-level ISO-BMFF box of type `kind` (its body, header excluded)."""
    found, i, n = [], 0, len(data)
    while i + 8 <= n:
        size, box = struct.unpack(">I4s", data[i : i + 8])
        header = 8
        if size == 1 and i + 16 <= n:  # 64-bit size
            size, header = struct.unpack(">Q", data[i + 8 : i + 16])[0], 16
        elif size == 0:  # to the end of the file
            size = n - i
        if size < header:
            break
        if box == kind:
            found.append((i + header, min(i + size, n)))
        i += size
    return found


_PARSERS = (
    (b"\xff\xd8", _jpeg), (_PNG_SIGNATURE, _png), (b"II*\x00", _tiff), (b"MM\x00*", _tiff),
    (b"II+\x00", _tiff), (b"MM\x00+", _tiff), (b"BM", _bmp), (b"GIF87a", _gif), (b"GIF89a", _gif),
    *((b"P" + bytes([c]), _pnm) for c in b"1234567Ff"), (b"\x59\xa6\x6a\x95", _sun_raster),
    (b"#?RADIANCE", _hdr), (b"#?RGBE", _hdr), (_JP2_SIGNATURE, _jp2), (b"\xff\x4f\xff\x51", _j2k),
)


def orient(image, orientation: int):
    """The array as a viewer shows it, for EXIF orientation 1-8 (flips and transposes only: exact,
    the same on every machine). Works on H x W and H x W x C arrays; returns a view."""
    if orientation in (5, 6, 7, 8):
        image = image.swapaxes(0, 1)
    flips = {2: (slice(None), slice(None, None, -1)), 3: (slice(None, None, -1), slice(None, None, -1)),
             4: (slice(None, None, -1),), 6: (slice(None), slice(None, None, -1)),
             7: (slice(None, None, -1), slice(None, None, -1)), 8: (slice(None, None, -1),)}
    return image[flips[orientation]] if orientation in flips else image
