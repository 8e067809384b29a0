"""One converter for every model family: a trained Keras model -> FP32 and INT8 files for
LiteRT (.tflite, full-integer), OpenVINO (.xml/.bin, NNCF) and ONNX Runtime (.onnx, QDQ).

Why it looks the way it does (facts in shared/notes/backends-measured.md):
- Every file has a fixed batch of 1: a dynamic batch splits the XNNPACK graph in TFLite and
  OpenVINO compiles a static shape faster.
- On x86 CPUs without VNNI (AVX2 only) INT8 kernels multiply u8 x s8 with a saturating
  instruction; NNCF's and ONNX Runtime's defaults then lost much accuracy on a Tiny-YOLO. The
  measured fixes are the defaults here: NNCF `overflow_fix=ENABLE`, ORT `reduce_range=True`
  (7-bit weights). Always compare INT8 with FP32 (`compare_outputs`) on real inputs.
- When INT8 loses too much, `layer_error_report` names the layers that lose most (TFLite's
  quantization debugger), and `keep_float` keeps those layers in float in all three formats.

OpenVINO is converted from the FP32 ONNX file rather than from the Keras object: the ONNX path
keeps the Keras layer names in the node names, which is what lets `keep_float` name layers.

Heavy imports (tensorflow, openvino, nncf, onnx, onnxruntime) happen inside functions only, so
importing this module (and `python -m edgecell.convert.quantize --help`) is instant.

Calibration samples are already pre-processed model inputs (float32, H x W x C or 1 x H x W x C,
as made by `edgecell.tasks.common.to_input_tensor`), drawn from training images only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgecell.modelinfo import METADATA_KEY, ModelInfo, write_sidecar

FORMATS = ("tflite", "openvino", "onnx")
PRECISIONS = ("fp32", "int8")
SUFFIX = {"tflite": ".tflite", "openvino": ".xml", "onnx": ".onnx"}
DEFAULT_BOUND = 0.98  # cosine FP32 vs INT8 under which the per-layer report is printed
ONNX_OPSET = 17


# ----------------------------------------------------------------------------- helpers

def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _input_shape(keras_model) -> tuple[int, ...]:
    """The model's single input shape with batch fixed to 1."""
    inputs = keras_model.inputs
    if len(inputs) != 1:
        raise ValueError(f"model has {len(inputs)} inputs; the converter supports single-input models")
    shape = tuple(inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(f"model input shape {tuple(inputs[0].shape)} has free dimensions other than the "
                         "batch; build the model with a fixed input size")
    return (1, *(int(d) for d in shape))


def _input_name(keras_model) -> str:
    """A stable input name: the InputLayer's name (the tensor name a user sees in every format)."""
    for layer in keras_model.layers:
        if type(layer).__name__ == "InputLayer":
            return re.sub(r"[^A-Za-z0-9_]", "_", layer.name)
    return "input"


def _output_names(keras_model) -> list[str]:
    names = list(getattr(keras_model, "output_names", None) or [])
    n = len(keras_model.outputs)
    if len(names) != n:
        names = [f"output_{i}" for i in range(n)]
    return [re.sub(r"[^A-Za-z0-9_]", "_", x) for x in names]


def calibration_batches(calibration: Sequence[np.ndarray] | np.ndarray,
                        shape: tuple[int, ...]) -> list[np.ndarray]:
    """Samples -> a list of float32 arrays of exactly `shape` (batch 1). Accepts one (N, ...)
    array, or a sequence of (...) / (1, ...) / (N, ...) arrays."""
    out: list[np.ndarray] = []
    items = [calibration] if isinstance(calibration, np.ndarray) and calibration.ndim == len(shape) else calibration
    for item in items:
        a = np.asarray(item, dtype=np.float32)
        if a.shape == shape[1:]:
            a = a[None]
        if a.ndim != len(shape) or a.shape[1:] != shape[1:]:
            raise ValueError(f"calibration sample of shape {a.shape} does not fit the model input {shape}")
        out.extend(np.ascontiguousarray(a[i:i + 1]) for i in range(a.shape[0]))
    if not out:
        raise ValueError("no calibration samples; INT8 needs a representative set (a few dozen training images)")
    return out


def layer_names(keras_model) -> list[str]:
    """Every layer name, nested models included (a backbone used as a layer)."""
    names: list[str] = []

    def walk(model) -> None:
        for layer in getattr(model, "layers", []):
            names.append(layer.name)
            if hasattr(layer, "layers"):
                walk(layer)

    walk(keras_model)
    return names


_SEGMENTS = re.compile(r"[/;:]")


def mentions(graph_name: str, layer: str) -> bool:
    """Does a converted graph's node/tensor name come from Keras layer `layer`? Converters keep
    the TF name scope (`model_1/conv2_1/convolution`); Keras 3 may add `_<n>` to scope names."""
    pattern = re.compile(re.escape(layer) + r"(_\d+)?")
    return any(pattern.fullmatch(seg) for seg in _SEGMENTS.split(graph_name))


def _layers_in(graph_name: str, layers: Iterable[str]) -> list[str]:
    found = [l for l in layers if mentions(graph_name, l)]
    exact = [l for l in found if any(seg == l for seg in _SEGMENTS.split(graph_name))]
    return exact or found


def _metadata(info: ModelInfo, precision: str) -> ModelInfo:
    return dataclasses.replace(info, precision=precision)


# ----------------------------------------------------------------------------- intermediate forms

def export_saved_model(keras_model, out_dir: str | os.PathLike) -> Path:
    """A SavedModel with one fixed batch-1 serving signature (the TFLite converter's input).
    A batch-1 signature keeps Flatten/Reshape static, so XNNPACK takes the whole graph."""
    _quiet_tf()
    import keras
    import tensorflow as tf

    shape = _input_shape(keras_model)
    names = _output_names(keras_model)

    def serve(x):
        y = keras_model(x, training=False)
        ys = y if isinstance(y, (list, tuple)) else [y]
        return dict(zip(names, ys))

    archive = keras.export.ExportArchive()
    archive.track(keras_model)
    archive.add_endpoint(name="serve", fn=serve,
                         input_signature=[tf.TensorSpec(shape, tf.float32, name=_input_name(keras_model))])
    archive.write_out(str(out_dir), verbose=False)
    return Path(out_dir)


def keras_to_onnx(keras_model, out_path: str | os.PathLike, *, opset: int = ONNX_OPSET):
    """Keras -> FP32 ONNX (tf2onnx), static batch 1, input named after the InputLayer. Returns the
    onnx.ModelProto (also written to out_path)."""
    _quiet_tf()
    import onnx
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec(_input_shape(keras_model), tf.float32, name=_input_name(keras_model))]
    proto, _ = tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=opset)
    onnx.save(proto, str(out_path))
    return proto


def _load_keras(path: str | os.PathLike):
    _quiet_tf()
    import keras

    return keras.models.load_model(str(path), compile=False)


# ----------------------------------------------------------------------------- TFLite

def _tflite_converter(saved_model_dir: Path, calibration: list[np.ndarray] | None, *, allow_float: bool = False):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if calibration is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([c] for c in calibration)
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if allow_float:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        conv.target_spec.supported_ops = ops
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv


def _tflite_op_outputs(model_bytes: bytes) -> list[tuple[str, str]]:
    """(op name, output tensor name) for every op of a TFLite model."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)
    tensors = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    return [(op["op_name"], tensors[i]) for op in interp._get_ops_details() for i in op["outputs"] if i in tensors]


def quantize_tflite(keras_model, calibration: Sequence[np.ndarray] | None, out_path: str | os.PathLike, *,
                    int8: bool = True, keep_float: Sequence[str] = (),
                    saved_model_dir: str | os.PathLike | None = None) -> Path:
    """Write a .tflite: FP32, or full-integer INT8 with int8 input and output (small, integer-only
    on a Pi; the runtime quantizes/dequantizes I/O with the tensor's scale and zero point).

    No float fallback: an op that cannot be INT8 fails the conversion, except layers named in
    `keep_float`. Those go through TFLite's selective quantization (the quantization debugger's
    `denylisted_nodes`), which gives float I/O; the int8 I/O is then restored with
    `tensorflow.lite.python.util.modify_model_io_type` (the converter's own, not public, helper).
    If the layer kept in float is the first (or last) one, that input (output) stays float32.
    """
    _quiet_tf()
    import tensorflow as tf

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        sm = Path(saved_model_dir) if saved_model_dir else export_saved_model(keras_model, Path(tmp) / "sm")
        if not int8:
            data = _tflite_converter(sm, None).convert()
        else:
            cal = calibration_batches(calibration, _input_shape(keras_model))
            data = _tflite_converter(sm, cal).convert()
            if keep_float:
                ops = _tflite_op_outputs(data)
                deny = sorted({t for _, t in ops if any(mentions(t, l) for l in keep_float)})
                _check_resolved(keep_float, [t for _, t in ops], "TFLite")
                conv = _tflite_converter(sm, cal, allow_float=True)
                options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=deny)
                debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=conv, debug_dataset=lambda: ([c] for c in cal[:1]), debug_options=options)
                from tensorflow.lite.python import util as tfl_util

                data = tfl_util.modify_model_io_type(debugger.get_nondebug_quantized_model(), tf.int8, tf.int8)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _write_bytes(out_path, bytes(data))
    return out_path


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check_resolved(wanted: Sequence[str], graph_names: Sequence[str], fmt: str) -> None:
    missing = [l for l in wanted if not any(mentions(n, l) or n == l for n in graph_names)]
    if missing:
        raise ValueError(f"{fmt}: no node comes from layer(s) {', '.join(missing)}; "
                         "name Keras layers as printed by the per-layer report")


# ----------------------------------------------------------------------------- OpenVINO

def _ov_names_for_layers(ov_model, layers: Sequence[str]) -> list[str]:
    """Friendly names of the ops that come from `layers`: the op's own name, or the name of a
    constant feeding it (a conv folded with its batch norm keeps the conv's name on its weights)."""
    names = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() in ("Constant", "Parameter", "Result"):
            continue
        candidates = [op.get_friendly_name()]
        for inp in op.inputs():
            src = inp.get_source_output().get_node()
            if src.get_type_name() == "Constant":
                candidates.append(src.get_friendly_name())
        if any(mentions(c, l) or c == l for c in candidates for l in layers):
            names.append(op.get_friendly_name())
    missing = [l for l in layers if not any(mentions(op.get_friendly_name(), l) or op.get_friendly_name() == l
                                            or any(mentions(i.get_source_output().get_node().get_friendly_name(), l)
                                                   for i in op.inputs())
                                            for op in ov_model.get_ordered_ops())]
    if missing:
        raise ValueError(f"OpenVINO: no op comes from layer(s) {', '.join(missing)}")
    return names


def _ov_batch1(ov_model) -> None:
    for inp in ov_model.inputs:
        ps = inp.get_partial_shape()
        if ps.rank.is_static and ps[0].is_dynamic:
            dims = [1] + [d.get_length() if d.is_static else -1 for d in list(ps)[1:]]
            ov_model.reshape({inp: dims})


def quantize_openvino(keras_model_or_path, calibration: Sequence[np.ndarray] | None, out_path: str | os.PathLike, *,
                      int8: bool = True, preset: str = "performance", overflow_fix: bool = True,
                      ignored_scope: Sequence[str] = (), range_estimator: str = "minmax",
                      bias_correction: bool = False, info: ModelInfo | None = None,
                      onnx_path: str | os.PathLike | None = None) -> Path:
    """Write an OpenVINO IR (.xml + .bin), FP32 weights (no FP16 compression) or INT8 by NNCF.

    `overflow_fix=True` (NNCF OverflowFix.ENABLE) halves the first layers' weight range so the
    u8 x s8 multiply does not saturate on AVX2 CPUs without VNNI (measured: Tiny-YOLO cosine
    0.746 -> 0.987). `preset="mixed"` (asymmetric activations) is the other measured fix.
    `range_estimator="minmax"` (absolute min/max, as the TFLite and ONNX Runtime calibrators) and
    `bias_correction=False` are not NNCF's defaults ("mean_minmax", fast bias correction on): on
    the YOLO-shaped test fixture the defaults gave cosine 0.990 against 0.9997 for TFLite/ORT;
    minmax alone 0.996, minmax without bias correction 0.9997. Re-check on the real model.
    `ignored_scope`: Keras layer names (or OpenVINO op names) kept in float.
    Source: a Keras model (via FP32 ONNX, which keeps layer names), a .keras file, or any file
    `openvino.convert_model` reads (.onnx, .tflite, SavedModel folder) or an .xml.
    """
    import openvino as ov

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        src = keras_model_or_path
        if isinstance(src, (str, os.PathLike)) and str(src).endswith(".keras"):
            src = _load_keras(src)
        if onnx_path is not None:
            ov_model = ov.convert_model(str(onnx_path))
        elif isinstance(src, (str, os.PathLike)):
            ov_model = ov.Core().read_model(str(src)) if str(src).endswith(".xml") else ov.convert_model(str(src))
        else:
            path = Path(tmp) / "model.onnx"
            keras_to_onnx(src, path)
            ov_model = ov.convert_model(str(path))
        _ov_batch1(ov_model)
        if int8:
            import nncf
            from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
            from nncf.quantization.range_estimator import RangeEstimatorParametersSet

            shape = tuple(ov_model.inputs[0].get_partial_shape().to_shape())
            cal = calibration_batches(calibration, shape)
            scope = None
            if ignored_scope:
                scope = nncf.IgnoredScope(names=_ov_names_for_layers(ov_model, ignored_scope))
            presets = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
            if preset not in presets:
                raise ValueError(f"preset {preset!r}: expected one of {', '.join(presets)}")
            estimators = {"minmax": RangeEstimatorParametersSet.MINMAX,
                          "mean_minmax": RangeEstimatorParametersSet.MEAN_MINMAX}
            if range_estimator not in estimators:
                raise ValueError(f"range_estimator {range_estimator!r}: expected one of {', '.join(estimators)}")
            kwargs: dict[str, Any] = {}
            if scope is not None:
                kwargs["ignored_scope"] = scope
            ov_model = nncf.quantize(
                ov_model, nncf.Dataset(cal), preset=presets[preset], subset_size=len(cal),
                advanced_parameters=AdvancedQuantizationParameters(
                    overflow_fix=OverflowFix.ENABLE if overflow_fix else OverflowFix.DISABLE,
                    activations_range_estimator_params=estimators[range_estimator],
                    disable_bias_correction=not bias_correction),
                **kwargs)
        if info is not None:
            ov_model.set_rt_info(_metadata(info, "int8" if int8 else "fp32").to_json(), METADATA_KEY)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(ov_model, str(out_path), compress_to_fp16=False)
    return out_path


# ----------------------------------------------------------------------------- ONNX

def _embed_onnx_metadata(path: Path, info: ModelInfo) -> None:
    import onnx

    proto = onnx.load(str(path))
    for prop in list(proto.metadata_props):
        if prop.key == METADATA_KEY:
            proto.metadata_props.remove(prop)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)


def _onnx_nodes_for_layers(proto, layers: Sequence[str]) -> list[str]:
    """ONNX node names coming from `layers` (by node name or an initializer/input name), or
    names that already are node names."""
    out = []
    for node in proto.graph.node:
        candidates = [node.name, *node.input]
        if node.name in layers or any(mentions(c, l) for c in candidates for l in layers):
            out.append(node.name)
    _check_resolved(layers, [n for node in proto.graph.node for n in (node.name, *node.input)], "ONNX")
    return out


def quantize_onnx(keras_model, calibration: Sequence[np.ndarray] | None, out_path: str | os.PathLike, *,
                  int8: bool = True, reduce_range: bool = True, per_channel: bool = True,
                  nodes_to_exclude: Sequence[str] = (), info: ModelInfo | None = None,
                  fp32_onnx: str | os.PathLike | None = None) -> Path:
    """Write an ONNX model, FP32 (tf2onnx) or INT8 in QDQ format (onnxruntime static quantization).

    INT8 uses u8 activations and s8 weights with `reduce_range=True` (7-bit weights), the
    measured fix for the u8 x s8 saturation on AVX2 without VNNI (Tiny-YOLO cosine 0.909 ->
    0.988, same speed). `nodes_to_exclude`: Keras layer names or ONNX node names kept in float.
    `fp32_onnx`: reuse an FP32 ONNX already made from the same model.
    """
    import onnx

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(fp32_onnx) if fp32_onnx else Path(tmp) / "fp32.onnx"
        if not fp32_onnx:
            keras_to_onnx(keras_model, fp32)
        if not int8:
            tmp_out = Path(tmp) / "out.onnx"
            onnx.save(onnx.load(str(fp32)), str(tmp_out))
        else:
            from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                                  QuantType, quant_pre_process, quantize_static)

            pre = Path(tmp) / "pre.onnx"
            # skip_symbolic_shape: the symbolic shape pass needs sympy and the shapes are static anyway
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            proto = onnx.load(str(pre))
            input_name = proto.graph.input[0].name
            dims = tuple(d.dim_value or 1 for d in proto.graph.input[0].type.tensor_type.shape.dim)
            cal = calibration_batches(calibration, dims)

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self._it: Iterator[np.ndarray] = iter(cal)

                def get_next(self):
                    x = next(self._it, None)
                    return None if x is None else {input_name: x}

                def rewind(self) -> None:
                    self._it = iter(cal)

            exclude = _onnx_nodes_for_layers(proto, nodes_to_exclude) if nodes_to_exclude else []
            tmp_out = Path(tmp) / "out.onnx"
            quantize_static(str(pre), str(tmp_out), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, reduce_range=reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.MinMax)
        if info is not None:
            _embed_onnx_metadata(tmp_out, _metadata(info, "int8" if int8 else "fp32"))
        _write_bytes(out_path, tmp_out.read_bytes())
    return out_path


# ----------------------------------------------------------------------------- all formats

def export_model(keras_model, info: ModelInfo, calibration: Sequence[np.ndarray], out_dir: str | os.PathLike,
                 stem: str, *, formats: Sequence[str] = FORMATS, precisions: Sequence[str] = PRECISIONS,
                 keep_float: Sequence[str] = (), progress=None) -> dict[str, Path]:
    """Convert one Keras model to every format x precision asked for, each file with its sidecar
    `<stem>_<precision>.json` (and the same metadata embedded in ONNX and OpenVINO).

    Returns {"tflite-fp32": Path, "tflite-int8": ..., "openvino-fp32": <.xml>, "onnx-int8": ...}.
    `keep_float`: Keras layer names kept in float in the INT8 files of every format.
    `progress`: optional callable(step_name) called after each file (for a progress bar).
    """
    bad = [f for f in formats if f not in FORMATS] + [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ValueError(f"unknown format/precision {', '.join(bad)}; formats: {', '.join(FORMATS)}, "
                         f"precisions: {', '.join(PRECISIONS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shape = _input_shape(keras_model)
    cal = calibration_batches(calibration, shape) if "int8" in precisions else None
    results: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_fp32 = None
        if "onnx" in formats or "openvino" in formats:
            onnx_fp32 = Path(tmp) / "fp32.onnx"
            keras_to_onnx(keras_model, onnx_fp32)
        sm = export_saved_model(keras_model, Path(tmp) / "sm") if "tflite" in formats else None
        for fmt in formats:
            for precision in precisions:
                int8 = precision == "int8"
                path = out_dir / f"{stem}_{precision}{SUFFIX[fmt]}"
                meta = _metadata(info, precision)
                if fmt == "tflite":
                    quantize_tflite(keras_model, cal, path, int8=int8, keep_float=keep_float, saved_model_dir=sm)
                elif fmt == "openvino":
                    quantize_openvino(keras_model, cal, path, int8=int8, ignored_scope=keep_float, info=meta,
                                      onnx_path=onnx_fp32)
                else:
                    quantize_onnx(keras_model, cal, path, int8=int8, nodes_to_exclude=keep_float, info=meta,
                                  fp32_onnx=onnx_fp32)
                write_sidecar(path, meta)
                results[f"{fmt}-{precision}"] = path
                if progress is not None:
                    progress(f"{fmt}-{precision}")
    return results


def ship_model(src: str | os.PathLike, dest_dir: str | os.PathLike, metrics: dict, *, name: str | None = None,
               extra_files: Sequence[str | os.PathLike] = ()) -> Path:
    """Copy an exported model into `dest_dir` (edge/models) as `name` (default: its own name) with a
    sidecar: the export's metadata plus the measured `metrics` (a shipped model states its
    figures). `extra_files` (e.g. a Grad-CAM head) are copied beside it. Atomic writes."""
    from edgecell.errors import EdgecellError
    from edgecell.modelinfo import read_model_info

    src, dest_dir = Path(src), Path(dest_dir)
    if not src.is_file():
        raise EdgecellError(f"{src}: no exported model; export it first")
    dest_dir.mkdir(parents=True, exist_ok=True)
    info = read_model_info(src)
    info.metrics = dict(metrics)
    target = dest_dir / (name or src.name)
    for s, t in [(src, target)] + [(Path(f), dest_dir / Path(f).name) for f in extra_files]:
        _write_bytes(t, s.read_bytes())
    write_sidecar(target, info)
    return target


# ----------------------------------------------------------------------------- checking

def _run(session, x: np.ndarray) -> list[np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    inputs = getattr(session, "inputs", None)
    if inputs and x.ndim == len(inputs[0].shape) - 1:
        x = x[None]  # one sample without its batch axis
    out = session.run(x)
    return [np.asarray(v, dtype=np.float32) for v in (out.values() if isinstance(out, dict) else out)]


def compare_outputs(fp32_session, int8_session, inputs: Iterable[np.ndarray]) -> dict[str, Any]:
    """How far INT8 is from FP32 on the same inputs: per output (paired by position, since names
    may differ between files) cosine similarity over all inputs, max and mean absolute error,
    and for a vector output the share of inputs with the same arg-max (top-1 agreement).
    `cosine` and `max_abs_error` at the top level are the worst over outputs. Inputs may be
    batches of one or single samples (the batch axis is added)."""
    a: list[list[np.ndarray]] = []
    b: list[list[np.ndarray]] = []
    for x in inputs:
        a.append(_run(fp32_session, x))
        b.append(_run(int8_session, x))
    if not a:
        raise ValueError("compare_outputs needs at least one input")
    names = [t.name for t in getattr(fp32_session, "outputs", [])] or [f"output_{i}" for i in range(len(a[0]))]
    per: dict[str, dict[str, float]] = {}
    for k in range(len(a[0])):
        fa = np.stack([r[k].reshape(-1) for r in a]).astype(np.float64)
        fb = np.stack([r[k].reshape(-1) for r in b]).astype(np.float64)
        denom = np.linalg.norm(fa) * np.linalg.norm(fb)
        cos = float(np.dot(fa.ravel(), fb.ravel()) / denom) if denom > 0 else float(np.allclose(fa, fb))
        d = np.abs(fa - fb)
        row = {"cosine": cos, "max_abs_error": float(d.max()), "mean_abs_error": float(d.mean()),
               "fp32_range": float(fa.max() - fa.min())}
        if 1 < fa.shape[1] <= 1000:
            row["top1_agreement"] = float(np.mean(fa.argmax(1) == fb.argmax(1)))
        per[names[k] if k < len(names) else f"output_{k}"] = row
    return {"cosine": min(r["cosine"] for r in per.values()),
            "max_abs_error": max(r["max_abs_error"] for r in per.values()),
            "inputs": len(a), "outputs": per}


def layer_error_report(keras_model, calibration: Sequence[np.ndarray], *, inputs: Sequence[np.ndarray] | None = None,
                       top: int | None = 10, saved_model_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Which layers lose most under INT8, worst first, from TFLite's quantization debugger: each
    quantized op is run on the same (dequantized) input in float and in INT8, so the error is the
    op's own, not accumulated. `rmse_scale` = RMSE / quantization step: about 0.29 is pure
    rounding (1/sqrt(12)); well above 1 means the layer's range is badly served by 8 bits (an
    outlier activation, a wide output) and it is a candidate for `keep_float`. The ranges come
    from the same min/max calibration NNCF and ONNX Runtime use, so the ranking is a guide for
    those formats too. Rows: layer (Keras name), layers (all fused into the op), op, tensor,
    rmse_scale, rmse, max_abs_error, scale."""
    _quiet_tf()
    import io
    import csv

    import tensorflow as tf

    shape = _input_shape(keras_model)
    cal = calibration_batches(calibration, shape)
    dbg_in = calibration_batches(inputs, shape) if inputs is not None else cal
    known = layer_names(keras_model)
    try:  # the op writing the model output carries no scope name: credit the output layer
        out_layers = [t._keras_history.operation.name for t in keras_model.outputs]
    except AttributeError:
        out_layers = []

    def rmse(diffs):
        return float(np.sqrt(np.mean(np.square(diffs))))

    def max_abs(diffs):
        return float(np.max(np.abs(diffs)))

    with tempfile.TemporaryDirectory() as tmp:
        sm = Path(saved_model_dir) if saved_model_dir else export_saved_model(keras_model, Path(tmp) / "sm")
        conv = _tflite_converter(sm, cal)
        options = tf.lite.experimental.QuantizationDebugOptions(
            layer_debug_metrics={"rmse": rmse, "max_abs": max_abs})
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=conv, debug_dataset=lambda: ([x] for x in dbg_in), debug_options=options)
        debugger.run()
        buf = io.StringIO()
        debugger.layer_statistics_dump(buf)
    rows = []
    for r in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(r["scale"]) if r.get("scale") else 0.0
        err = float(r["rmse"])
        fused = []
        for part in r["tensor_name"].split(";"):
            for l in _layers_in(part, known):
                if l not in fused:
                    fused.append(l)
        if not fused and len(out_layers) == 1 and r["tensor_name"].startswith("StatefulPartitionedCall"):
            fused = out_layers
        rows.append({"layer": fused[0] if fused else r["tensor_name"], "layers": fused, "op": r["op_name"],
                     "tensor": r["tensor_name"], "rmse_scale": err / scale if scale else float("nan"),
                     "rmse": err, "max_abs_error": float(r["max_abs"]), "scale": scale})
    rows.sort(key=lambda r: -np.nan_to_num(r["rmse_scale"], nan=-1.0))
    return rows[:top] if top else rows


def format_layer_report(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'layer':<28} {'op':<16} {'rmse/scale':>10} {'rmse':>10} {'max abs':>10}  fused"]
    for r in rows:
        lines.append(f"{r['layer'][:28]:<28} {r['op'][:16]:<16} {r['rmse_scale']:>10.3f} {r['rmse']:>10.4g} "
                     f"{r['max_abs_error']:>10.4g}  {','.join(r['layers'][1:])}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI

def load_calibration(source: str | os.PathLike, info: ModelInfo, *, limit: int = 200, seed: int = 0) -> list[np.ndarray]:
    """Calibration inputs from a .npy (N x H x W x C, already pre-processed), a folder of .npy, or a
    folder of images (pre-processed by the runtime's own `to_input_tensor`, so calibration sees
    exactly what the device feeds). At most `limit` samples, drawn with a fixed seed."""
    source = Path(source)
    if source.is_file() and source.suffix == ".npy":
        arr = np.load(source)
        samples = [arr[i] for i in range(arr.shape[0])]
    elif source.is_dir():
        npys = sorted(source.rglob("*.npy"))
        if npys:
            arrays = [np.load(p) for p in npys]
            samples = [s for a in arrays for s in (a if a.ndim == 4 else a[None])]
        else:
            from edgecell.images import decode_image

            prep = _preprocess_for(info)

            exts = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
            files = sorted(p for p in source.rglob("*") if p.suffix.lower() in exts)
            if len(files) > limit:
                rng = np.random.default_rng(seed)
                files = [files[i] for i in sorted(rng.choice(len(files), limit, replace=False))]
            samples = [prep(decode_image(p))[0] for p in files]
    else:
        raise ValueError(f"{source}: calibration must be a .npy file or a folder of images or .npy files")
    if len(samples) > limit:
        rng = np.random.default_rng(seed)
        samples = [samples[i] for i in sorted(rng.choice(len(samples), limit, replace=False))]
    if not samples:
        raise ValueError(f"{source}: no calibration samples found")
    return [np.asarray(s, dtype=np.float32) for s in samples]


def _preprocess_for(info: ModelInfo):
    """The task's own pre-processing (the one the runtime uses), else the shared one."""
    from edgecell.tasks.common import to_input_tensor

    try:
        from edgecell.tasks import get_task

        task = get_task(info.task)
        if hasattr(task, "preprocess"):
            return lambda image: task.preprocess(image, info)[0]
    except Exception:  # a task module not written yet: the shared pre-processing is the same for most
        pass
    return lambda image: to_input_tensor(image, info)[0]


def _session(path: Path):
    from edgecell.backends import load_session

    return load_session(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgecell.convert.quantize",
        description="Convert a Keras model to FP32 and INT8 TFLite / OpenVINO / ONNX, check INT8 against FP32, "
                    "and name the layers that lose most when INT8 falls under the bound.")
    parser.add_argument("model", help="trained model (.keras)")
    parser.add_argument("--info", required=True, help="ModelInfo JSON (task, labels, input size, normalisation)")
    parser.add_argument("--calibration", required=True, help=".npy (N,H,W,C pre-processed) or a folder of training images")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--stem", help="file stem (default: the model's file stem)")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--keep-float", nargs="*", default=[], metavar="LAYER", help="Keras layers kept in float in INT8 files")
    parser.add_argument("--check", help="inputs to compare FP32 vs INT8 on (.npy or folder; default: the calibration set; "
                                        "held-out images are better)")
    parser.add_argument("--bound", type=float, default=DEFAULT_BOUND, help="cosine under which the per-layer report is printed")
    parser.add_argument("--limit", type=int, default=200, help="max calibration samples")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console(stderr=True)
    try:
        info = ModelInfo.from_dict(json.loads(Path(args.info).read_text()))
        cal = load_calibration(args.calibration, info, limit=args.limit)
        check = load_calibration(args.check, info, limit=args.limit) if args.check else cal[:50]
        stem = args.stem or Path(args.model).stem
        steps = len(args.formats) * len(args.precisions) + 1
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("loading model", total=steps)
            model = _load_keras(args.model)
            bar.update(task, advance=1, description="converting")
            paths = export_model(model, info, cal, args.out, stem, formats=args.formats, precisions=args.precisions,
                                 keep_float=args.keep_float,
                                 progress=lambda name: bar.update(task, advance=1, description=f"wrote {name}"))
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2

    table = Table(title="FP32 vs INT8 on %d inputs" % len(check))
    for col in ("format", "file", "size KB", "cosine", "max abs err", "top-1 agree"):
        table.add_column(col)
    worst = 1.0
    for fmt in args.formats:
        for precision in args.precisions:
            p = paths[f"{fmt}-{precision}"]
            size = p.stat().st_size + (p.with_suffix(".bin").stat().st_size if fmt == "openvino" else 0)
            cells = ["", "", ""]
            if precision == "int8" and f"{fmt}-fp32" in paths:
                cmp = compare_outputs(_session(paths[f"{fmt}-fp32"]), _session(p), check)
                worst = min(worst, cmp["cosine"])
                agree = [r.get("top1_agreement") for r in cmp["outputs"].values() if "top1_agreement" in r]
                cells = [f"{cmp['cosine']:.5f}", f"{cmp['max_abs_error']:.4g}", f"{agree[0]:.3f}" if agree else "-"]
            table.add_row(fmt, p.name, f"{size / 1024:.1f}", *cells)
    Console().print(table)
    if worst < args.bound:
        console.print(f"INT8 agreement {worst:.4f} is under the bound {args.bound}: layers that lose most "
                      "(name them with --keep-float):")
        print(format_layer_report(layer_error_report(model, cal, inputs=check)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
