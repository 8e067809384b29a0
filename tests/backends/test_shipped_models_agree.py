"""Every shipped model file on every installed backend that reads it gives LiteRT's answers on the
shipped samples (issue 12 item 1: OpenVINO read the INT8 .tflite files and answered garbage with
exit 0). Same tolerance as the backend tests: identical top-1 and gate decision, counts within one
cell per class (`edgecell.backends.agreement`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from edgecell.backends import BY_SUFFIX, is_installed
from edgecell.backends.agreement import REFERENCE_BACKEND, disagreement
from edgecell.images import decode_image
from edgecell.model import load_model
from edgecell.pipeline import predict

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "edge" / "models"
SAMPLES = REPO / "edge" / "samples"
SHIPPED = sorted(p for p in MODELS.iterdir() if p.suffix in BY_SUFFIX)
CASES = [(path, backend) for path in SHIPPED for backend in BY_SUFFIX[path.suffix]
         if is_installed(backend) and not (path.suffix == ".tflite" and backend == REFERENCE_BACKEND)]
XRAY_IMAGES_PER_CLASS = 2


def _xray_images() -> list[Path]:
    """X-ray films are not shipped (unclear licences): a few held-out ones from the data folder."""
    from edgecell.calibration import data_root
    from edgecell.errors import EdgecellError

    try:
        val = data_root() / "chest_xray_covid19_3class" / "Covid19-dataset" / "val"
    except EdgecellError:
        return []
    return [p for d in sorted(val.iterdir()) if d.is_dir()
            for p in sorted(d.iterdir())[:XRAY_IMAGES_PER_CLASS]] if val.is_dir() else []


def images_for(path: Path) -> list[Path]:
    if "xray" in path.stem:
        return _xray_images()
    if path.stem.startswith("rbc"):  # the red-cell models answer on Chula smears (products: "uncertain", no cells)
        folder = SAMPLES / "chula"
    else:
        folder = SAMPLES / ("bccd" if path.stem.startswith("cells") else "products")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


@lru_cache(maxsize=None)
def answers(path: Path, backend: str) -> tuple:
    model = load_model(path, backend, threads=1)
    return tuple(predict(model, decode_image(image))[0] for image in images_for(path))


def test_every_shipped_model_has_a_case_on_another_backend():
    assert {p.suffix for p, _ in CASES} >= {".tflite"}
    assert all(any(p == path for p, _ in CASES) for path in SHIPPED if path.suffix == ".tflite")


@pytest.mark.parametrize("path,backend", CASES, ids=[f"{p.name}-{b}" for p, b in CASES])
def test_backend_gives_litert_answers_on_shipped_samples(path, backend):
    if not images_for(path):
        pytest.skip(f"no images for {path.name} (X-ray data not found; set EDGECELL_DATA)")
    reference = answers(path.with_suffix(".tflite"), REFERENCE_BACKEND)
    got = answers(path, backend)
    wrong = {image.name: why for image, ref, res in zip(images_for(path), reference, got)
             if (why := disagreement(ref, res))}
    assert not wrong, f"{path.name} on {backend} disagrees with {REFERENCE_BACKEND}: {wrong}"
