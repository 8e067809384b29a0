"""The counting rules are one product: an export's FP32 sidecar gets the INT8 file's thresholds
and rules (so FP32 against INT8 measures quantization alone), keeping its own threshold choice as
a record and its own unfamiliar statistics (they describe its own features)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecell.convert import train_cells
from edgecell.convert.train_cells import share_settings
from edgecell.modelinfo import ModelInfo, read_model_info, write_sidecar
from edgecell.tasks import cells

INT8 = {"thresholds": {"RBC": 0.35, "WBC": 0.25, "Platelets": 0.35}, "wbc_rules": {"min_rbc_size": 1.0, "max_inside": 0.5},
        "auto_scale": {"below_rbc_px": 39.4, "tiles": 2, "overlap": 0.4, "min_cells": 10},
        "platelet_stain": {"min_relative_spread": 0.25}, "unfamiliar": {"threshold": 83.6}}
FP32_OWN = {"RBC": 0.35, "WBC": 0.20, "Platelets": 0.50}


def _export(tmp_path):
    write_sidecar(tmp_path / "cells_int8.tflite", ModelInfo(task="cells", precision="int8", settings=dict(INT8)))
    write_sidecar(tmp_path / "cells_fp32.tflite", ModelInfo(task="cells", precision="fp32", settings={
        "thresholds": dict(FP32_OWN), "unfamiliar": {"threshold": 53.3}}))
    share_settings(tmp_path / "cells_int8.json", tmp_path)
    return read_model_info(tmp_path / "cells_fp32.tflite")


def test_fp32_sidecar_counts_with_the_int8_files_rules(tmp_path):
    fp32 = _export(tmp_path)
    assert cells.counting_settings(fp32) == cells.counting_settings(read_model_info(tmp_path / "cells_int8.tflite"))


def test_fp32_sidecar_keeps_its_own_threshold_choice_and_unfamiliar_statistics(tmp_path):
    fp32 = _export(tmp_path)
    assert fp32.settings["own_thresholds"] == FP32_OWN
    assert fp32.settings["unfamiliar"] == {"threshold": 53.3}


def test_sharing_again_keeps_the_first_own_thresholds(tmp_path):
    _export(tmp_path)
    share_settings(tmp_path / "cells_int8.json", tmp_path)
    assert read_model_info(tmp_path / "cells_fp32.tflite").settings["own_thresholds"] == FP32_OWN


def test_int8_logit_offset_stays_with_the_int8_file(tmp_path):
    """The heatmap bias correction is the INT8 file's (measured against the float file): sharing
    the counting rules does not give it to FP32."""
    write_sidecar(tmp_path / "cells_int8.tflite", ModelInfo(task="cells", precision="int8", settings={
        **INT8, cells.INT8_LOGIT_OFFSET: {"RBC": 0.02, "WBC": 0.0, "Platelets": 0.09}}))
    write_sidecar(tmp_path / "cells_fp32.tflite", ModelInfo(task="cells", precision="fp32", settings={"thresholds": dict(FP32_OWN)}))
    share_settings(tmp_path / "cells_int8.json", tmp_path)
    assert cells.logit_offset(read_model_info(tmp_path / "cells_fp32.tflite")) is None


def _shipped_pair(tmp_path):
    """The shipped INT8 file twice: as the INT8 file and as its own "float reference"."""
    import shutil

    models = Path(cells.__file__).resolve().parent.parent / "models"
    for stem in ("quantized", "reference"):
        shutil.copyfile(models / "cells_int8.tflite", tmp_path / f"{stem}.tflite")
        info = read_model_info(models / "cells_int8.tflite")
        info.settings.pop(cells.INT8_LOGIT_OFFSET, None)
        write_sidecar(tmp_path / f"{stem}.tflite", info)
    return tmp_path / "quantized.tflite", tmp_path / "reference.tflite"


def test_int8_offset_measured_against_an_identical_network_is_zero(tmp_path, monkeypatch):
    """`--int8-offset` on real smears (the shipped samples standing in for the Training smears):
    a file measured against the same network finds no shift, stores a zero offset and says what
    it was fitted on."""
    quantized, reference = _shipped_pair(tmp_path)
    samples = sorted((Path(cells.__file__).resolve().parent.parent / "samples" / "bccd").glob("*.jpg"))
    monkeypatch.setattr(train_cells, "training_side_smears", lambda data=None: samples)
    result = train_cells.store_int8_offset(quantized, reference, threads=1)
    assert result["offset"] == {"RBC": 0.0, "WBC": 0.0, "Platelets": 0.0}
    assert min(result["peaks"].values()) >= 1
    info = read_model_info(quantized)
    assert info.settings[cells.INT8_LOGIT_OFFSET] == result["offset"]
    assert "4 unlabelled" in info.settings["int8_logit_offset_fitted_on"]


def test_int8_offset_refuses_a_float_file(tmp_path, monkeypatch):
    quantized, reference = _shipped_pair(tmp_path)
    info = read_model_info(quantized)
    info.precision = "fp32"
    write_sidecar(quantized, info)
    monkeypatch.setattr(train_cells, "training_side_smears", lambda data=None: [])
    with pytest.raises(SystemExit, match="INT8 files"):
        train_cells.store_int8_offset(quantized, reference, threads=1)
