"""The product classifier's unfamiliar-image flag: its pooled-feature output scored against the
training photos' statistics in its sidecar; on the shipped model (and its OpenVINO and ONNX
siblings) a blood smear is flagged, a product photo is not (the exit status of `edgecell run`:
tests/commands/test_run_unfamiliar.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecell.images import decode_image
from edgecell.model import load_model
from edgecell.modelinfo import ModelInfo
from edgecell.pipeline import predict
from edgecell.resources import shipped_path
from edgecell.tasks import classify

MODEL = shipped_path("models", "products_int8.tflite")
SMEAR = sorted(shipped_path("samples", "bccd").glob("*.jpg"))[0]
STATS = {"mean": [[0.0, 0.0], [10.0, 0.0]], "precision": [[1.0, 0.0], [0.0, 1.0]], "threshold": 4.0}


def _postprocess(features, stats=STATS):
    settings = {"probs_output": "probs", "features_output": "features", **({"unfamiliar": stats} if stats else {})}
    info = ModelInfo(task="products", labels=["a", "b"], settings=settings)
    outputs = {"probs": np.array([[0.9, 0.1]], np.float32), "features": np.asarray([features], np.float32)}
    return classify.postprocess(outputs, None, info)


def test_score_is_the_distance_to_the_nearest_class_mean():
    assert _postprocess([9.0, 1.0]).unfamiliar_score == pytest.approx(2.0)


def test_far_features_flag_the_answer_unfamiliar_and_uncertain_and_say_why():
    r = _postprocess([5.0, 3.0])
    d = r.to_dict()
    assert r.unfamiliar and r.needs_attention and d["unfamiliar"] is True and "not to be trusted" in d["message"]


def test_model_without_statistics_has_no_score():
    r = _postprocess([50.0, 50.0], stats=None)
    assert r.unfamiliar is False and r.unfamiliar_score is None and not r.needs_attention


@pytest.mark.parametrize("suffix", [".tflite", ".xml", ".onnx"])
def test_shipped_model_flags_a_smear(suffix):
    r, _ = predict(load_model(MODEL.with_suffix(suffix)), decode_image(SMEAR))
    assert r.unfamiliar, r.unfamiliar_score


@pytest.mark.parametrize("suffix", [".tflite", ".xml", ".onnx"])
def test_shipped_model_does_not_flag_its_product_samples(suffix):
    model = load_model(MODEL.with_suffix(suffix))
    for path in sorted(shipped_path("samples", "products").glob("*.jpg")):
        r, _ = predict(model, decode_image(path))
        assert not r.unfamiliar, (path.name, r.unfamiliar_score)


def test_shipped_statistics_arrays_sit_beside_the_sidecar_and_travel_with_it():
    """The 256 x 256 precision lives in a .npz (a 2.1 MB JSON sidecar cost every cold start ~30 ms);
    a bundle carries the file as one of the model's companion files."""
    from edgecell.bundle.common import companion_files

    sidecar = MODEL.with_suffix(".json")
    arrays = sidecar.parent / load_model(MODEL).info.settings["unfamiliar_arrays"]
    assert sidecar.stat().st_size < 50_000 and arrays.is_file()
    assert arrays in companion_files(sidecar)


def test_model_whose_statistics_file_is_missing_is_refused_at_load(tmp_path):
    import shutil

    from edgecell.errors import ModelError

    for suffix in (".tflite", ".json"):
        shutil.copy(MODEL.with_suffix(suffix), tmp_path)
    with pytest.raises(ModelError, match="products_unfamiliar.npz: the unfamiliar-image statistics"):
        load_model(tmp_path / MODEL.name)
