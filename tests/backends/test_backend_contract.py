"""The contract every backend of the registry keeps alike (in the style of nncf's test templates):
one parametrised suite, every row of `edgecell.backends.REGISTRY`, every file type it reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecell.backends import (BACKENDS, BY_SUFFIX, REGISTRY, Session, import_backend, install_hint, is_installed,
                               load_session)
from edgecell.backends.tflite_file import read_io
from edgecell.errors import BackendNotInstalled, ModelError

FIXTURE_MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"
CASES = [(b.name, suffix, precision) for b in REGISTRY for suffix in b.reads + b.also_reads
         for precision in ("fp32", "int8")]


def _fixture(suffix: str, precision: str) -> Path:
    return FIXTURE_MODELS / f"tiny_classifier_{precision}{suffix}"


@pytest.fixture
def session(request) -> Session:
    backend, suffix, precision = request.param
    if not is_installed(backend):
        pytest.skip(f"{backend} is not installed here")
    return load_session(_fixture(suffix, precision), backend, threads=1)


def _input(session: Session, seed: int = 0) -> np.ndarray:
    shape = tuple(1 if d < 0 else d for d in session.inputs[0].shape)
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize("row", REGISTRY, ids=lambda b: b.name)
def test_registry_row_is_complete_and_consistent(row):
    assert BACKENDS[row.name] is row
    assert row.reads and all(row.name in BY_SUFFIX[s] for s in row.reads + row.also_reads)
    assert row.requirement in install_hint(row.name)
    module_name, class_name = row.session.split(":")
    import importlib

    assert issubclass(getattr(importlib.import_module(module_name), class_name), Session)


@pytest.mark.parametrize("row", REGISTRY, ids=lambda b: b.name)
def test_installed_means_importable_and_missing_names_the_install(row):
    if is_installed(row.name):
        assert import_backend(row.name) is not None
    else:
        with pytest.raises(BackendNotInstalled, match=row.requirement.replace("[", r"\[").replace("]", r"\]")):
            import_backend(row.name)


@pytest.mark.parametrize("session", CASES, ids=[f"{b}-{s}-{p}" for b, s, p in CASES], indirect=True)
def test_session_describes_itself(session):
    assert session.backend in BACKENDS
    assert session.inputs and session.outputs
    described = session.describe()
    assert described["backend"] == session.backend and len(described["outputs"]) == len(session.outputs)


@pytest.mark.parametrize("session", CASES, ids=[f"{b}-{s}-{p}" for b, s, p in CASES], indirect=True)
def test_run_takes_floats_and_returns_float32_by_output_name(session):
    x = _input(session)
    by_array = session.run(x)
    by_dict = session.run({session.inputs[0].name: x})
    assert list(by_array) == [o.name for o in session.outputs]
    for name, out in by_array.items():
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, by_dict[name])


@pytest.mark.parametrize("session", CASES, ids=[f"{b}-{s}-{p}" for b, s, p in CASES], indirect=True)
def test_integer_ports_carry_their_quantization(session):
    """A session never hands out a raw integer: every int8/uint8 port has its scale and zero point."""
    for t in session.inputs + session.outputs:
        if t.dtype in ("int8", "uint8"):
            assert t.scale and t.zero_point is not None, t


@pytest.mark.parametrize("session", CASES, ids=[f"{b}-{s}-{p}" for b, s, p in CASES], indirect=True)
def test_pre_quantized_input_gives_the_same_answer_as_float(session):
    first = session.inputs[0]
    if first.scale is None:
        pytest.skip("float input")
    x = _input(session, seed=1)
    q = session._quantize_input(x, first).copy()
    a, b = session.run(x), session.run({first.name: q})
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("session", CASES, ids=[f"{b}-{s}-{p}" for b, s, p in CASES], indirect=True)
def test_backend_agrees_with_its_format_reference(session):
    """The same file on this backend and on the backend made for its format: same top-1."""
    reference = load_session(session.path, BY_SUFFIX[session.path.suffix][0], threads=1)
    x = _input(session, seed=2)
    a = next(iter(reference.run(x).values()))
    b = next(iter(session.run(x).values()))
    assert a.argmax() == b.argmax() and np.abs(a - b).max() < 0.02


@pytest.mark.parametrize("backend,suffix", sorted({(b, s) for b, s, _ in CASES}))
def test_missing_file_is_one_line_model_error(backend, suffix, tmp_path):
    with pytest.raises(ModelError) as info:
        load_session(tmp_path / f"absent{suffix}", backend)
    assert "\n" not in str(info.value)


def test_tflite_reader_gives_litert_quantization():
    path = _fixture(".tflite", "int8")
    inputs, outputs = read_io(path)
    litert = load_session(path, "litert")
    assert inputs == litert.inputs and outputs == litert.outputs


def test_tflite_reader_refuses_a_foreign_file(tmp_path):
    fake = tmp_path / "x.tflite"
    fake.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="not a TFLite flatbuffer"):
        read_io(fake)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_integer_io_without_known_quantization_is_refused(backend, tmp_path):
    """An ONNX file with an int8 input says nothing of its scale: refuse it, never guess."""
    onnx = pytest.importorskip("onnx")
    if not is_installed(backend):
        pytest.skip(f"{backend} is not installed here")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "int8_in",
                              [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 8, 8, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 3])])
    path = tmp_path / "int8_in.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ModelError, match="does not give its scale and zero point") as info:
        load_session(path, backend)
    assert "\n" not in str(info.value)
