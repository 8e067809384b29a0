"""The shared converter really converts: a tiny trained Keras classifier goes through TFLite,
OpenVINO (NNCF) and ONNX (QDQ) at FP32 and INT8, each file is run by its real backend, and INT8
must agree with FP32 on held-out inputs. Needs the `train` extra (TensorFlow, tf2onnx, NNCF)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
pytest.importorskip("nncf")

from edgecell.backends import load_session  # noqa: E402
from edgecell.convert.quantize import (compare_outputs, export_model, format_layer_report,  # noqa: E402
                                       layer_error_report, layer_names, main, mentions)
from edgecell.modelinfo import METADATA_KEY, ModelInfo  # noqa: E402
from edgecell.tasks.common import normalise  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures"))
import make_tiny_models as tiny  # noqa: E402

FORMATS = ("tflite", "openvino", "onnx")
INFO = ModelInfo(task="classify", name="t", labels=tiny.LABELS, input_size=(32, 32), mean=[0.0], std=[255.0])


@pytest.fixture(scope="module")
def trained():
    """(keras model, calibration inputs, held-out inputs): a few seconds of training."""
    import keras

    keras.utils.set_random_seed(1)
    images, labels = tiny.colour_images(400, 32, np.random.default_rng(1))
    x = np.stack([normalise(i, INFO) for i in images])
    model = tiny.build_classifier()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x[:320], labels[:320], epochs=4, batch_size=32, verbose=0)
    return model, x[:48], x[320:]


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, calib, _ = trained
    return export_model(model, INFO, calib, tmp_path_factory.mktemp("export"), "tiny")


@pytest.fixture(scope="module")
def kept_float(trained, tmp_path_factory):
    model, calib, _ = trained
    return export_model(model, INFO, calib, tmp_path_factory.mktemp("keep"), "tiny", precisions=("int8",),
                        keep_float=["conv2"])


def test_every_format_and_precision_is_written_with_its_sidecar(exported):
    assert set(exported) == {f"{f}-{p}" for f in FORMATS for p in ("fp32", "int8")}
    names = {p.name for p in exported.values()}
    assert names == {"tiny_fp32.tflite", "tiny_int8.tflite", "tiny_fp32.xml", "tiny_int8.xml",
                     "tiny_fp32.onnx", "tiny_int8.onnx"}
    for key, path in exported.items():
        side = json.loads(path.with_suffix(".json").read_text())
        assert side["precision"] == key.split("-")[1] and side["labels"] == tiny.LABELS
    assert exported["openvino-int8"].with_suffix(".bin").is_file()
    # KB, not MB: INT8 TFLite is smaller than FP32
    assert exported["tflite-int8"].stat().st_size < exported["tflite-fp32"].stat().st_size < 64_000


@pytest.mark.parametrize("fmt", FORMATS)
def test_fp32_file_matches_keras_with_batch_one(fmt, exported, trained):
    model, _, held_out = trained
    session = load_session(exported[f"{fmt}-fp32"])
    assert session.inputs[0].shape == (1, 32, 32, 3)
    ours = np.concatenate([next(iter(session.run(x[None]).values())) for x in held_out[:20]])
    # OpenVINO may run "FP32" in bf16 on CPUs with AVX512-BF16: a loose bound, still far below INT8 noise
    np.testing.assert_allclose(ours, model.predict(held_out[:20], verbose=0), atol=1e-2)


@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_agrees_with_fp32_on_held_out_inputs(fmt, exported, trained):
    _, _, held_out = trained
    report = compare_outputs(load_session(exported[f"{fmt}-fp32"]), load_session(exported[f"{fmt}-int8"]),
                             [x[None] for x in held_out])
    assert report["inputs"] == len(held_out)
    assert report["cosine"] >= 0.98, report
    assert next(iter(report["outputs"].values()))["top1_agreement"] >= 0.95, report


def test_tflite_int8_is_full_integer_with_int8_io(exported):
    from ai_edge_litert.interpreter import Interpreter

    session = load_session(exported["tflite-int8"])
    assert session.inputs[0].dtype == "int8" and session.inputs[0].scale
    assert session.outputs[0].dtype == "int8" and session.outputs[0].scale
    interp = Interpreter(model_path=str(exported["tflite-int8"]))
    float_tensors = [t["name"] for t in interp.get_tensor_details() if t["dtype"] == np.float32]
    assert not float_tensors  # no float fallback anywhere


def test_metadata_is_embedded_in_onnx_and_openvino(exported):
    import onnx
    import openvino as ov

    for key in ("onnx-fp32", "onnx-int8"):
        props = {p.key: p.value for p in onnx.load(str(exported[key])).metadata_props}
        meta = json.loads(props[METADATA_KEY])
        assert meta["precision"] == key.split("-")[1] and meta["task"] == "classify"
    ov_model = ov.Core().read_model(str(exported["openvino-int8"]))
    meta = json.loads(str(ov_model.get_rt_info([METADATA_KEY]).astype(str)))
    assert meta["precision"] == "int8" and meta["labels"] == tiny.LABELS
    assert json.loads(load_session(exported["onnx-int8"]).embedded_metadata)["precision"] == "int8"


def test_keep_float_keeps_the_named_layer_float_in_every_format(kept_float, exported, trained):
    import onnx
    import openvino as ov
    from ai_edge_litert.interpreter import Interpreter

    # TFLite: conv2 runs in float, the rest and the I/O stay int8
    interp = Interpreter(model_path=str(kept_float["tflite-int8"]))
    dtypes = {t["name"]: t["dtype"] for t in interp.get_tensor_details()}
    assert any(mentions(n, "conv2") and d == np.float32 for n, d in dtypes.items())
    assert any(mentions(n, "conv1") and d == np.int8 for n, d in dtypes.items())
    session = load_session(kept_float["tflite-int8"])
    assert session.inputs[0].dtype == "int8" and session.outputs[0].dtype == "int8"
    # ONNX: conv2's weights are a float initializer, not a DequantizeLinear output
    graph = onnx.load(str(kept_float["onnx-int8"])).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    conv2 = [n for n in graph.node if n.op_type == "Conv" and mentions(n.name, "conv2")]
    assert conv2 and producers.get(conv2[0].input[1]) != "DequantizeLinear"
    # OpenVINO: fewer FakeQuantize ops than the full INT8 model
    def fake_quantizes(path):
        return sum(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(path)).get_ordered_ops())
    assert fake_quantizes(kept_float["openvino-int8"]) < fake_quantizes(exported["openvino-int8"])
    # and the mixed models still agree with FP32
    _, _, held_out = trained
    for fmt in FORMATS:
        report = compare_outputs(load_session(exported[f"{fmt}-fp32"]), load_session(kept_float[f"{fmt}-int8"]),
                                 [x[None] for x in held_out[:30]])
        assert report["cosine"] >= 0.98, (fmt, report)


def test_keep_float_of_an_unknown_layer_is_a_clear_error(trained, tmp_path):
    model, calib, _ = trained
    with pytest.raises(ValueError, match="no_such_layer"):
        export_model(model, INFO, calib, tmp_path, "x", formats=("onnx",), precisions=("int8",),
                     keep_float=["no_such_layer"])


def test_layer_report_names_keras_layers_worst_first(trained):
    model, calib, held_out = trained
    rows = layer_error_report(model, calib, inputs=held_out[:10], top=None)
    known = set(layer_names(model))
    assert {r["layer"] for r in rows} <= known
    assert {"conv1", "conv2", "probs"} <= {l for r in rows for l in r["layers"]}
    errors = [r["rmse_scale"] for r in rows]
    assert errors == sorted(errors, reverse=True) and all(e > 0 for e in errors)
    assert "conv2" in format_layer_report(rows)


def test_cli_prints_agreement_and_the_layer_report_under_the_bound(trained, tmp_path, capsys):
    model, calib, held_out = trained
    model.save(tmp_path / "m.keras")
    (tmp_path / "info.json").write_text(INFO.to_json())
    np.save(tmp_path / "cal.npy", calib)
    np.save(tmp_path / "check.npy", held_out[:10])
    args = [str(tmp_path / "m.keras"), "--info", str(tmp_path / "info.json"), "--calibration",
            str(tmp_path / "cal.npy"), "--check", str(tmp_path / "check.npy"), "--out", str(tmp_path / "out"),
            "--formats", "onnx", "--bound", "1.01"]
    # a bound no INT8 model meets: the agreement table, then the per-layer report, exit code 1
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "m_int8.onnx" in out and "cosine" in out
    assert "rmse/scale" in out and "conv2" in out


class _Fixed:
    def __init__(self, fn):
        self.fn = fn

    def run(self, x):
        return {"y": self.fn(x)}


def test_compare_outputs_measures_cosine_error_and_top1():
    xs = [np.array([[1.0, 0.0, 0.0]], np.float32), np.array([[0.0, 2.0, 0.0]], np.float32)]
    same = compare_outputs(_Fixed(lambda x: x), _Fixed(lambda x: x), xs)
    assert same["cosine"] == pytest.approx(1.0) and same["max_abs_error"] == 0.0
    off = compare_outputs(_Fixed(lambda x: x), _Fixed(lambda x: x[:, ::-1].copy()), xs)
    assert off["cosine"] == pytest.approx(0.8) and off["outputs"]["output_0"]["top1_agreement"] == 0.5


def test_layer_name_matching_follows_keras3_scopes():
    assert mentions("tiny_1/conv2_1/Relu;tiny_1/conv2_1/convolution", "conv2")
    assert mentions("tiny_1/conv1_1/convolution/merged_input:0", "conv1")
    assert not mentions("tiny_1/conv12/convolution", "conv1")
