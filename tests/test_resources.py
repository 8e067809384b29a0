"""Shipped files are found through the installed package (importlib.resources), so a wheel in
site-packages finds them as a checkout does."""

from pathlib import Path

import pytest

from edgecell import resources
from edgecell.errors import ModelError


def test_shipped_models_are_found_by_name():
    models = resources.shipped_models()
    assert {"cells", "products", "xray"} <= set(models)
    assert all(p.is_file() and p.name.endswith("_int8.tflite") for p in models.values())


def test_shipped_path_is_inside_the_imported_package():
    import edgecell

    assert resources.shipped_path("models") == resources.shipped_path() / "models"
    assert resources.shipped_path().samefile(Path(edgecell.__file__).parent)


def test_package_data_of_a_subpackage():
    assert resources.shipped_path("claims.json", package="edgecell.benchmarks").is_file()


def test_shipped_samples_hold_images():
    assert any(p.suffix.lower() in (".jpg", ".png") for p in resources.shipped_samples("bccd").iterdir())


def test_a_model_file_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    (tmp_path / "cells").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert resources.resolve_model_path("cells") == Path("cells")


def test_a_shipped_name_gives_its_int8_model():
    assert resources.resolve_model_path("products") == resources.shipped_path("models", "products_int8.tflite")


def test_a_shipped_name_with_a_backend_gives_the_sibling_made_for_it(tmp_path, monkeypatch):
    for name in ("m_int8.tflite", "m_int8.xml", "m_int8.bin"):
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setattr(resources, "shipped_models", lambda: {"m": tmp_path / "m_int8.tflite"})
    assert resources.resolve_model_path("m", "openvino") == tmp_path / "m_int8.xml"
    assert resources.resolve_model_path("m", "onnxruntime") == tmp_path / "m_int8.tflite"  # no .onnx: the .tflite
    assert resources.resolve_model_path("m") == tmp_path / "m_int8.tflite"


def test_unknown_name_lists_the_shipped_names():
    with pytest.raises(ModelError, match="shipped: .*cells"):
        resources.resolve_model_path("no-such-model")


def test_no_module_finds_shipped_files_by_climbing_from_its_own_file():
    """The lookup that broke `edgecell bench` after `pip install .`: <parent>/edge/models."""
    import re

    repo = Path(resources.__file__).resolve().parent.parent
    pattern = re.compile(r"""(parent|parents\[\d\])\s*/\s*["']edge["']|PACKAGE_DIR\s*/\s*["'](models|samples)""")
    offenders = [str(p.relative_to(repo)) for folder in ("edge", "convert", "calibration", "benchmarks")
                 for p in (repo / folder).rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
