"""Every backend really runs, on the small real models in tests/fixtures/models (made by
tests/fixtures/make_tiny_models.py through edgecell's own converter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecell.backends import (BackendNotInstalled, dequantize, installed_backends, load_session, quantize,
                               resolve_backend)
from edgecell.backends.base import TensorInfo
from edgecell.errors import ModelError
from edgecell.images import decode_image
from edgecell.model import load_model
from edgecell.tasks.common import to_input_tensor

FIXTURE_MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"
FORMATS = {"litert": ".tflite", "openvino": ".xml", "onnxruntime": ".onnx"}


def fixture(precision: str, suffix: str) -> Path:
    found = sorted(FIXTURE_MODELS.glob(f"*classifier*_{precision}{suffix}"))
    if not found:
        pytest.fail(f"fixture model *classifier*_{precision}{suffix} missing; run tests/fixtures/make_tiny_models.py")
    return found[0]


@pytest.fixture(scope="module")
def image_tensor(real_jpeg):
    model = load_model(fixture("fp32", ".tflite"))
    tensor, _ = to_input_tensor(decode_image(real_jpeg), model.info)
    return tensor


def test_all_three_backends_are_installed_here():
    assert {"litert", "openvino", "onnxruntime"} <= set(installed_backends())


@pytest.mark.parametrize("backend", list(FORMATS))
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_backend_runs_fixture_and_returns_probabilities(backend, precision, image_tensor):
    session = load_session(fixture(precision, FORMATS[backend]), backend, threads=1)
    assert session.backend == backend
    assert session.inputs[0].shape[0] == 1
    out = next(iter(session.run(image_tensor).values()))
    assert out.dtype == np.float32 and out.shape == (1, 3)
    assert abs(float(out.sum()) - 1.0) < 0.05  # softmax head survives conversion


def test_fp32_backends_agree(image_tensor):
    outs = {b: next(iter(load_session(fixture("fp32", s), b).run(image_tensor).values())) for b, s in FORMATS.items()}
    for b in ("openvino", "onnxruntime"):
        np.testing.assert_allclose(outs[b], outs["litert"], atol=1e-4)


def test_int8_backends_stay_near_fp32(image_tensor):
    reference = next(iter(load_session(fixture("fp32", ".tflite")).run(image_tensor).values()))
    for backend, suffix in FORMATS.items():
        out = next(iter(load_session(fixture("int8", suffix), backend).run(image_tensor).values()))
        assert np.abs(out - reference).max() < 0.06, backend
        assert out.argmax() == reference.argmax(), backend


def test_int8_tflite_io_is_quantized_and_hidden_from_callers():
    session = load_session(fixture("int8", ".tflite"))
    assert session.inputs[0].dtype == "int8" and session.inputs[0].scale
    out = session.run(np.zeros(session.inputs[0].shape, np.float32))
    assert next(iter(out.values())).dtype == np.float32


def test_openvino_also_reads_tflite_and_onnx(image_tensor):
    a = next(iter(load_session(fixture("fp32", ".tflite"), "openvino").run(image_tensor).values()))
    b = next(iter(load_session(fixture("fp32", ".onnx"), "openvino").run(image_tensor).values()))
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_metadata_is_read_from_sidecar_and_embedded(tmp_path):
    for suffix in (".tflite", ".onnx", ".xml"):
        assert load_model(fixture("int8", suffix)).info.task == "classify"
    # without the sidecar, ONNX still carries its metadata inside the file
    src = fixture("int8", ".onnx")
    copy = tmp_path / src.name
    copy.write_bytes(src.read_bytes())
    assert load_model(copy).info.labels == load_model(src).info.labels


def test_auto_picks_backend_from_file_type():
    assert resolve_backend("m.tflite") == "litert"
    assert resolve_backend("m.xml") == "openvino"
    assert resolve_backend("m.onnx") == "onnxruntime"


def test_backend_not_installed_names_the_install_command():
    if "tflite-runtime" in installed_backends():
        pytest.skip("tflite-runtime is installed here")
    with pytest.raises(BackendNotInstalled, match="pip install tflite-runtime"):
        resolve_backend("m.tflite", "tflite-runtime")


def test_backend_that_cannot_read_the_format_lists_the_ones_that_can():
    with pytest.raises(ModelError, match="for .xml use one of openvino"):
        resolve_backend("m.xml", "litert")


def test_unknown_suffix_lists_model_types():
    with pytest.raises(ModelError, match=r"expected \.tflite, \.xml, \.onnx"):
        resolve_backend("model.pt")


@pytest.mark.parametrize("suffix", [".tflite", ".onnx", ".xml"])
def test_truncated_model_file_is_one_line_model_error(tmp_path, suffix):
    src = fixture("fp32", suffix)
    bad = tmp_path / src.name
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    if suffix == ".xml":
        (tmp_path / src.with_suffix(".bin").name).write_bytes(src.with_suffix(".bin").read_bytes())
    with pytest.raises(ModelError) as info:
        load_session(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value)


def test_foreign_file_as_model_is_refused(tmp_path, real_jpeg):
    fake = tmp_path / "photo.tflite"
    fake.write_bytes(real_jpeg.read_bytes())
    with pytest.raises(ModelError, match="not a loadable TFLite model"):
        load_session(fake)


def test_quantize_dequantize_round_trip():
    info = TensorInfo("x", (4,), "int8", scale=0.5, zero_point=-3)
    q = quantize(np.array([-100.0, 0.0, 1.0, 100.0], np.float32), info)
    assert q.tolist() == [-128, -3, -1, 127]  # saturates at the int8 range
    np.testing.assert_allclose(dequantize(q, info), [-62.5, 0.0, 1.0, 65.0])
