"""Shared fixtures: real images from the shipped samples (or the dataset beside the repo), and the
bad inputs a user meets, built from them."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAMPLES = REPO / "edge" / "samples"


def _first_image(*folders: Path) -> Path | None:
    for folder in folders:
        if folder.is_dir():
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if files:
                return files[0]
    return None


@pytest.fixture(scope="session")
def real_jpeg() -> Path:
    """A real smear photo (JPEG) shipped with the package."""
    path = _first_image(SAMPLES / "bccd", SAMPLES, REPO.parent / "shared" / "data" / "cbc_bccd_cleaned" / "Testing")
    if path is None:
        pytest.fail("no sample image found: edge/samples/ must ship images")
    return path


@pytest.fixture()
def bad_inputs(tmp_path: Path, real_jpeg: Path) -> dict[str, Path]:
    """The broken files of issue 2, each made from a real image."""
    data = real_jpeg.read_bytes()
    image = cv2.imread(str(real_jpeg))
    out = {}
    out["empty"] = tmp_path / "empty.jpg"
    out["empty"].write_bytes(b"")
    out["truncated"] = tmp_path / "truncated.jpg"
    out["truncated"].write_bytes(data[: len(data) // 2])
    out["not_image"] = tmp_path / "notes.jpg"
    out["not_image"].write_bytes(b"%PDF-1.4 this is not an image\n" * 20)
    out["bomb"] = tmp_path / "bomb.png"
    out["bomb"].write_bytes(_png_header_only(20000, 20000))
    out["truncated_png"] = tmp_path / "truncated.png"
    ok, buf = cv2.imencode(".png", image)
    out["truncated_png"].write_bytes(buf.tobytes()[: len(buf) // 2])
    return out


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's calling card)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 8)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture()
def odd_images(tmp_path: Path, real_jpeg: Path) -> dict[str, Path]:
    """Valid but unusual images: RGBA PNG, 16-bit greyscale PNG, 8-bit grey PNG."""
    bgr = cv2.imread(str(real_jpeg))
    out = {}
    rgba = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    rgba[..., 3] = 128
    out["rgba"] = tmp_path / "alpha.png"
    cv2.imwrite(str(out["rgba"]), rgba)
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    out["grey16"] = tmp_path / "grey16.png"
    cv2.imwrite(str(out["grey16"]), grey.astype(np.uint16) * 257)
    out["grey8"] = tmp_path / "grey8.png"
    cv2.imwrite(str(out["grey8"]), grey)
    return out


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                **tags) -> Path:
    """Write a minimal, valid DICOM Part 10 file (uncompressed) holding `pixels` (uint16 grey)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    try:
        ds.save_as(str(path), enforce_file_format=True)  # pydicom >= 3
    except TypeError:
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)  # pydicom 2.x
    return path


@pytest.fixture()
def make_dicom():
    """Factory: make_dicom(path, uint16 array, photometric=..., **tags) -> path (needs pydicom)."""
    pytest.importorskip("pydicom")
    return write_dicom
