"""The shared pre-processing: for a full-integer model the quantized tensor is written directly
through a lookup table; it must equal normalising to float and quantizing, value for value."""

from pathlib import Path

import numpy as np
import pytest

from edgecell.backends.base import quantize
from edgecell.images import decode_image
from edgecell.model import load_model
from edgecell.tasks import get_task

MODELS = Path(__file__).resolve().parents[2] / "edge" / "models"


@pytest.mark.parametrize("name", ["cells", "products"])
def test_lookup_table_equals_float_then_quantize(name, real_jpeg):
    path = MODELS / f"{name}_int8.tflite"
    assert path.is_file(), f"shipped model {path.name} missing"
    model = load_model(path)
    assert model.info.input_quantization is not None
    task, image = get_task(model.info.task), decode_image(real_jpeg)
    direct, _ = task.preprocess(image, model.info)
    quant, model.info.input_quantization = model.info.input_quantization, None
    as_float, _ = task.preprocess(image, model.info)
    model.info.input_quantization = quant
    assert direct.dtype == np.int8 and as_float.dtype == np.float32
    np.testing.assert_array_equal(direct, quantize(as_float, model.session.inputs[0]))


def test_float_models_get_float_inputs(real_jpeg):
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "tiny_classifier_fp32.tflite"
    model = load_model(fixture)
    tensor, _ = get_task(model.info.task).preprocess(decode_image(real_jpeg), model.info)
    assert model.info.input_quantization is None and tensor.dtype == np.float32


def test_input_quantization_never_reaches_the_sidecar():
    model = load_model(MODELS / "cells_int8.tflite")
    assert model.info.input_quantization and "input_quantization" not in model.info.to_json()
