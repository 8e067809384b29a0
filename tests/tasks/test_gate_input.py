"""The gate's input path: made from the task model's already resized image, computed once per image
in `predict_gated`, and equal, value for value, to running the two models separately."""

from pathlib import Path

import numpy as np
import pytest

from edgecell.images import decode_image, resize
from edgecell.model import load_model
from edgecell.pipeline import predict, predict_gated
from edgecell.tasks import common
from edgecell.tasks.gate import gate_pixels

MODELS = Path(__file__).resolve().parents[2] / "edge" / "models"
PHOTO = sorted((MODELS.parent / "samples" / "products").glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def pair():
    gate, task = load_model(MODELS / "gate_products_int8.tflite"), load_model(MODELS / "products_int8.tflite")
    assert gate.info.settings["resize_via"] == list(task.info.input_size)
    return gate, task


def test_gate_pixels_go_through_the_task_models_size(pair):
    gate, task = pair
    image = decode_image(PHOTO)
    via = resize(image, tuple(task.info.input_size))
    expected = resize(via, tuple(gate.info.input_size), antialias=False)
    np.testing.assert_array_equal(gate_pixels(image, gate.info), expected)
    settings = dict(gate.info.settings)
    del gate.info.settings["resize_via"]  # a gate without it: one direct resize of the full image
    try:
        direct = resize(image, tuple(gate.info.input_size))
        np.testing.assert_array_equal(gate_pixels(image, gate.info), direct)
    finally:
        gate.info.settings = settings


def test_predict_gated_resizes_the_full_image_once_and_changes_no_number(pair, monkeypatch):
    gate, task = pair
    image = decode_image(PHOTO)
    alone_gate, _ = predict(gate, image)
    alone_task, _ = predict(task, image, top_k=8)
    sizes = []
    real = common.resize_stretch

    def counting(img, size):
        sizes.append((img.shape[:2], tuple(size)))
        return real(img, size)

    monkeypatch.setattr(common, "resize_stretch", counting)
    g, result, timings, action = predict_gated(gate, task, image, policy="pass", top_k=8)
    full = [s for s in sizes if s[0] == image.shape[:2]]
    assert full == [(image.shape[:2], tuple(task.info.input_size))]  # one full-image resize, shared
    assert g.utility == alone_gate.utility and action == "ran" and timings.gate > 0
    assert result.index == alone_task.index and result.top == alone_task.top


def test_resize_once_is_scoped_to_one_image_object():
    a = np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)
    b = a.copy()
    with common.resize_once(a):
        first = common.resized(a, (64, 64))
        assert common.resized(a, (64, 64)) is first
        assert common.resized(b, (64, 64)) is not first  # another array: not served from the memo
    assert common.resized(a, (64, 64)) is not first  # outside the block: computed again
