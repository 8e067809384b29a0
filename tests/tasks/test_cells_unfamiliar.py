"""The cells counter's unfamiliar-smear flag: a Mahalanobis score of the pooled-feature output
against the training smears' statistics in the sidecar; on the shipped model, product photos are
flagged and the shipped smears are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecell.modelinfo import ModelInfo
from edgecell.tasks import cells

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "edge" / "models" / "cells_int8.tflite"
SAMPLES = ROOT / "edge" / "samples"


def _info(stats=None):
    settings = {"head": "centernet", "features_output": "features"}
    if stats:
        settings["unfamiliar"] = stats
    return ModelInfo(task="cells", labels=list(cells.CLASSES), input_size=(416, 320), settings=settings)


def _outputs(features):
    return {"head_out": np.full((1, 40, 52, 7), -10.0, np.float32), "features": np.asarray(features, np.float32)[None]}


def _postprocess(outputs, info):
    tensor, ctx = cells.preprocess(np.zeros((480, 640, 3), np.uint8), info)
    return cells.postprocess(outputs, ctx, info)


STATS = {"mean": [0.0, 0.0], "precision": [[1.0, 0.0], [0.0, 4.0]], "threshold": 9.0}


def test_score_is_squared_mahalanobis_distance():
    assert cells.mahalanobis2(np.array([3.0, 1.0]), STATS) == pytest.approx(9.0 + 4.0)


def test_far_features_flag_the_result_and_say_why():
    r = _postprocess(_outputs([3.0, 1.0]), _info(STATS))
    assert r.unfamiliar and r.unfamiliar_score == pytest.approx(13.0)
    d = r.to_dict()
    assert d["unfamiliar"] is True and "unfamiliar" in d["message"] and "not to be trusted" in d["message"]


def test_near_features_are_familiar():
    r = _postprocess(_outputs([1.0, 0.5]), _info(STATS))
    assert not r.unfamiliar and r.unfamiliar_score == pytest.approx(2.0) and r.message == ""


def test_model_without_statistics_has_no_score():
    r = _postprocess(_outputs([30.0, 30.0]), _info())
    assert r.unfamiliar is False and r.unfamiliar_score is None


def test_detection_map_is_picked_beside_a_features_output():
    out = cells.centernet_output(_outputs([0.0, 0.0]), 3)
    assert out.shape == (40, 52, 7)


@pytest.mark.parametrize("folder,expected", [("products", True), ("bccd", False)])
def test_shipped_model_flags_photos_not_smears(folder, expected):
    from edgecell.images import decode_image
    from edgecell.model import load_model
    from edgecell.pipeline import predict

    model = load_model(MODEL)
    for path in sorted((SAMPLES / folder).glob("*.jpg")):
        r, _ = predict(model, decode_image(path))
        assert r.unfamiliar is expected and r.needs_attention is expected, (path.name, r.unfamiliar_score)
