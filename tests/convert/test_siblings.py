"""OpenVINO IR and ONNX siblings of a full-integer .tflite: float ports, LiteRT's answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecell.backends import load_session
from edgecell.convert.siblings import main, make_siblings
from edgecell.errors import ModelError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "tiny_classifier_int8.tflite"


@pytest.fixture(scope="module")
def siblings(tmp_path_factory, real_jpeg):
    pytest.importorskip("tf2onnx")
    out = tmp_path_factory.mktemp("siblings")
    return out, make_siblings(FIXTURE, out, [real_jpeg])


def test_each_format_is_written_checked_and_kept(siblings):
    out, rows = siblings
    assert {r["file"] for r in rows} == {"tiny_classifier_int8.xml", "tiny_classifier_int8.onnx"}
    for r in rows:
        assert r["kept"] and r["agreement_with_litert"]["agree"] == 1 and len(r["sha256"]) == 64
        assert (out / r["file"]).is_file()
    assert (out / "tiny_classifier_int8.bin").is_file() and (out / "tiny_classifier_int8.json").is_file()


@pytest.mark.parametrize("suffix,backend", [(".xml", "openvino"), (".onnx", "onnxruntime"), (".onnx", "openvino")])
def test_siblings_take_and_give_floats(siblings, suffix, backend):
    """The int8 ports of the .tflite become float ports: quantization happens inside the model."""
    out, _ = siblings
    session = load_session(out / f"tiny_classifier_int8{suffix}", backend)
    assert [t.dtype for t in session.inputs + session.outputs] == ["float32"] * (len(session.inputs) + len(session.outputs))


def test_sibling_outputs_match_litert_closely(siblings):
    import numpy as np

    out, _ = siblings
    reference = load_session(FIXTURE, "litert")
    x = np.random.default_rng(0).uniform(-1, 1, reference.inputs[0].shape).astype(np.float32)
    expected = next(iter(reference.run(x).values()))
    for suffix in (".xml", ".onnx"):
        got = next(iter(load_session(out / f"tiny_classifier_int8{suffix}").run(x).values()))
        step = reference.outputs[0].scale
        assert np.abs(got - expected).max() <= 2 * step + 1e-6, suffix  # at most a rounding step or two


def test_not_a_tflite_is_one_line_error(tmp_path, real_jpeg):
    with pytest.raises(ModelError, match="expected a .tflite"):
        make_siblings(tmp_path / "x.onnx", tmp_path, [real_jpeg])


def test_min_agreement_outside_0_1_is_refused(tmp_path, real_jpeg, capsys):
    with pytest.raises(SystemExit):
        main([str(FIXTURE), "--out", str(tmp_path), "--images", str(real_jpeg), "--min-agreement", "5"])
    assert "--min-agreement 5.0" in capsys.readouterr().err


def test_a_refused_onnx_sibling_leaves_the_ir_weights(tmp_path, real_jpeg, monkeypatch):
    """Dropping a sibling deletes its own files only (the .onnx once took the IR's .bin with it)."""
    pytest.importorskip("tf2onnx")
    from edgecell.convert import siblings as module

    make_siblings(FIXTURE, tmp_path, [real_jpeg], ["xml"])
    monkeypatch.setattr(module, "compare_with_litert", lambda src, sib, images: {"images": 1, "agree": 0, "differ": {"x": "y"}})
    rows = make_siblings(FIXTURE, tmp_path, [real_jpeg], ["onnx"])
    assert not rows[0]["kept"] and not (tmp_path / "tiny_classifier_int8.onnx").exists()
    assert (tmp_path / "tiny_classifier_int8.bin").is_file()


MODELS = Path(__file__).resolve().parents[2] / "edge" / "models"
#: every shipped ONNX sibling (all made from their .tflite by `convert/siblings.py`)
SHIPPED_ONNX = sorted(p.name for p in MODELS.glob("*.onnx"))


def onnx_input_integers(onnx_path: Path, tflite: Path):
    """(the integers the ONNX sibling's own input quantizer makes of every pixel value, the integers
    edgecell's input table feeds LiteRT for the same pixels). Every pixel value, .5 ties included
    ((p - 127.5) / 127.5 at scale 2/255 lands on ties), must become the same integer."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from edgecell.backends.tflite_file import read_io
    from edgecell.model import load_model
    from edgecell.tasks.common import normalise, normalise_float

    t = read_io(tflite)[0][0]
    info = load_model(tflite, "litert").info
    model = onnx.load(str(onnx_path))
    quantized = next(n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear")
    model.graph.output.append(onnx.helper.make_tensor_value_info(quantized, onnx.TensorProto.INT8, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.resize(np.arange(256, dtype=np.uint8), t.shape)
    got = session.run([quantized], {t.name: normalise_float(pixels, info.mean, info.std)})[0]
    return got[0], normalise(pixels[0], info)


def test_onnx_sibling_quantizes_its_input_as_the_runtime_table_does(tmp_path):
    import numpy as np

    from edgecell.backends.tflite_file import read_io
    from edgecell.convert.siblings import onnx_from_tflite

    pytest.importorskip("tf2onnx")
    src = MODELS / "rbc_int8.tflite"
    assert read_io(src)[0][0].scale == pytest.approx(2 / 255)
    got, expected = onnx_input_integers(onnx_from_tflite(src, tmp_path / "rbc_int8.onnx"), src)
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("name", SHIPPED_ONNX)
def test_shipped_onnx_sibling_quantizes_its_input_as_litert_is_fed(name):
    """A shipped sibling made before the converter's input fix rounds .5 ties one step from LiteRT."""
    import numpy as np

    pytest.importorskip("onnxruntime")
    got, expected = onnx_input_integers(MODELS / name, (MODELS / name).with_suffix(".tflite"))
    assert np.array_equal(got, expected)
