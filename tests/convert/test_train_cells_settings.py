"""The counting rules are one product: an export's FP32 sidecar gets the INT8 file's thresholds
and rules (so FP32 against INT8 measures quantization alone), keeping its own threshold choice as
a record and its own unfamiliar statistics (they describe its own features)."""

from __future__ import annotations

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
