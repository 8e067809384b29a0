"""edgecell's wheel for a bundle is packed from the installed edgecell: no source tree, no build
backend, no network. Checked from this (editable) install and from a wheel installed elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgecell.bundle.wheel import build_edgecell_wheel, model_family


@pytest.fixture(scope="module")
def full_wheel(tmp_path_factory) -> Path:
    return build_edgecell_wheel(tmp_path_factory.mktemp("wheel"), keep_models=True)


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_model_family_strips_the_precision():
    assert model_family("cells_int8.tflite") == "cells"
    assert model_family("cells_tinyyolov2_fp32.onnx") == "cells_tinyyolov2"
    assert model_family("xray_gradcam_head.npz") == "xray_gradcam_head"


def test_wheel_holds_every_subpackage_the_metadata_and_the_command(full_wheel):
    names = _names(full_wheel)
    assert full_wheel.name.startswith("edgecell-") and full_wheel.name.endswith("-py3-none-any.whl")
    for module in ("edgecell/__init__.py", "edgecell/cli.py", "edgecell/resources.py", "edgecell/bundle/wheel.py",
                   "edgecell/convert/__init__.py", "edgecell/calibration/__init__.py",
                   "edgecell/benchmarks/claims.json", "edgecell/models/cells_int8.tflite"):
        assert module in names
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(full_wheel) as zf:
        assert "edgecell = edgecell.cli:main" in zf.read(info).decode()
        record = zf.read(info.replace("entry_points.txt", "RECORD")).decode()
    assert all(n in record for n in names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_models_not_asked_for_stay_out_but_the_samples_stay(tmp_path):
    names = _names(build_edgecell_wheel(tmp_path, keep_models={"xray"}))
    assert "edgecell/models/xray_int8.tflite" in names and "edgecell/models/xray_head.npz" in names
    assert "edgecell/models/xray_float.keras" not in names  # only commission --adapt (training side) reads it
    assert "edgecell/models/cells_int8.tflite" not in names
    assert any(n.startswith("edgecell/samples/bccd/") and n.endswith(".jpg") for n in names)


def test_an_rbc_wheel_keeps_the_centre_detector_it_cannot_run_without(tmp_path):
    names = _names(build_edgecell_wheel(tmp_path, keep_models={"rbc"}))
    for name in ("rbc_int8.tflite", "rbc_centres_int8.tflite", "rbc_centres_int8.json"):
        assert f"edgecell/models/{name}" in names


def test_wheel_packed_from_an_installed_wheel_is_the_same(full_wheel, tmp_path):
    """Install the wheel (no checkout beside it), pack it again from there: same files, and the
    shipped models are found by name through the installed package."""
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                           "--target", str(target), str(full_wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    code = ("import sys, edgecell; from edgecell.resources import resolve_model_path, source_checkout; "
            "from edgecell.bundle.wheel import build_edgecell_wheel; "
            "assert source_checkout() is None, source_checkout(); "
            "print(resolve_model_path('cells')); print(build_edgecell_wheel(sys.argv[1], keep_models=True))")
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "again")], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model, again = proc.stdout.split()
    assert Path(model) == target / "edgecell" / "models" / "cells_int8.tflite"
    assert sorted(n for n in _names(Path(again)) if "dist-info" not in n) == \
        sorted(n for n in _names(full_wheel) if "dist-info" not in n)
