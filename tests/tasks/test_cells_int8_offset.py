"""The INT8 heatmap bias correction (`int8_logit_offset`): an INT8 file's sidecar can carry a
per-class logit added to its heatmap before decoding (measured against the float model by
`edgecell.convert.train_cells --int8-offset`); a file without it (FP32) decodes its raw scores."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest

from edgecell.errors import ModelError
from edgecell.model import load_model
from edgecell.modelinfo import ModelInfo, read_model_info, write_sidecar
from edgecell.tasks import cells
from test_cells import MODELS, SHIPPED, _samples, encode_centernet, make_centernet_info

BOXES = np.array([[20, 20, 60, 60], [100, 100, 112, 112]], np.float32)  # a red cell, a platelet


def _scores(info, score=0.3):
    out = encode_centernet(BOXES, [0, 2], info, score=score)
    _, classes, scores = cells.decode(out, info, floor=0.05)
    return dict(zip(classes.tolist(), scores.tolist()))


def test_offset_raises_the_named_class_logit_only():
    plain = _scores(make_centernet_info())
    shifted = _scores(make_centernet_info(int8_logit_offset={"Platelets": 0.5}))
    logit = np.log(0.3 / 0.7)
    assert shifted[2] == pytest.approx(1 / (1 + np.exp(-(logit + 0.5))), abs=1e-5)
    assert shifted[0] == pytest.approx(plain[0]) and plain[2] == pytest.approx(0.3, abs=1e-5)


def test_offset_moves_a_platelet_across_its_threshold():
    info = make_centernet_info(thresholds={"Platelets": 0.35}, int8_logit_offset={"Platelets": 0.25})
    out = encode_centernet(BOXES, [0, 2], info, score=0.32)
    _, ctx = cells.preprocess(np.full((192, 256, 3), 200, np.uint8), info)
    assert cells.postprocess({"out": out}, ctx, info).counts["Platelets"] == 1
    info.settings.pop("int8_logit_offset")
    assert cells.postprocess({"out": out}, ctx, info).counts["Platelets"] == 0


def test_sidecar_without_offset_is_not_shifted():
    assert cells.logit_offset(make_centernet_info()) is None
    assert cells.logit_offset(ModelInfo(task="cells", precision="fp32", settings={"head": "centernet"})) is None


def test_offset_naming_an_unknown_class_is_refused_in_one_line():
    with pytest.raises(ModelError) as exc:
        cells.logit_offset(make_centernet_info(int8_logit_offset={"Eosinophils": 0.1}))
    assert "\n" not in str(exc.value) and "Eosinophils" in str(exc.value)


def _int8_files_with_offset(folder, offset):
    """Copies of the shipped INT8 file and its OpenVINO / ONNX siblings, their one sidecar carrying `offset`."""
    for suffix in (".tflite", ".xml", ".bin", ".onnx"):
        shutil.copyfile(MODELS / f"cells_int8{suffix}", folder / f"cells_int8{suffix}")
    info = read_model_info(SHIPPED)
    info.settings[cells.INT8_LOGIT_OFFSET] = offset
    write_sidecar(folder / "cells_int8.tflite", info)


def _logit(s):
    return np.log(s / (1 - s))


@pytest.mark.parametrize("suffix", [".tflite", ".xml", ".onnx"])
def test_every_file_sharing_the_int8_sidecar_decodes_with_its_offset(tmp_path, suffix):
    """The .tflite and its OpenVINO / ONNX siblings share one sidecar, so each decodes the real
    network's platelet heatmap (a shipped sample smear) raised by exactly its offset, and its red-
    and white-cell heatmaps as they are."""
    _int8_files_with_offset(tmp_path, {"Platelets": 0.1})
    model = load_model(tmp_path / f"cells_int8{suffix}")
    raw_info = replace(model.info, settings={k: v for k, v in model.info.settings.items() if k != cells.INT8_LOGIT_OFFSET})
    outputs = model.session.run(cells.preprocess(_samples()[0], model.info)[0])
    raw = cells.decode(outputs, raw_info, floor=0.05)
    fixed = cells.decode(outputs, model.info, floor=0.05)
    k = cells.CLASSES.index("Platelets")
    assert (raw[1] == k).sum() >= 1 and (fixed[1] == k).sum() >= (raw[1] == k).sum()
    moved, before = np.sort(_logit(fixed[2][fixed[1] == k])), np.sort(_logit(raw[2][raw[1] == k]))
    np.testing.assert_allclose(moved[-len(before):], before + 0.1, atol=1e-4)
    for c in (0, 1):
        np.testing.assert_array_equal(np.sort(fixed[2][fixed[1] == c]), np.sort(raw[2][raw[1] == c]))


def test_shipped_int8_sidecar_carries_the_measured_platelet_correction():
    """The shipped INT8 file decodes with the bias measured against its float model (card: +0.092
    logit for platelets, median over 694 peaks on 300 unlabelled Training smears)."""
    offset = cells.logit_offset(read_model_info(SHIPPED))
    assert offset is not None and 0.05 < offset[cells.CLASSES.index("Platelets")] < 0.15
    assert "unlabelled" in read_model_info(SHIPPED).settings["int8_logit_offset_fitted_on"]
