"""OpenVINO IR (`.xml` + `.bin`); OpenVINO also reads `.onnx` and `.tflite` directly.
Device is selectable (CPU, GPU, NPU, AUTO); latency hint by default, as on a one-camera device."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgecell.backends import import_backend
from edgecell.backends.base import Session, TensorInfo, dequantize
from edgecell.errors import ModelError


class OpenVINOSession(Session):
    backend = "openvino"

    def __init__(self, path: Path, *, backend: str = "openvino", threads: int | None = None, device: str = "CPU",
                 providers: list[str] | None = None, hint: str = "LATENCY", precision: str | None = None):
        ov = import_backend(backend)
        self.path = Path(path)
        self.threads = threads
        self.device = device
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with long texts
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path}: not a loadable OpenVINO/ONNX/TFLite model ({first})") from None
        if model.has_rt_info(["edgecell"]):
            self.embedded_metadata = str(model.get_rt_info(["edgecell"]).astype(str))
        # a dynamic batch dimension is fixed to 1: one image at a time is the device's job
        shapes = {}
        for inp in model.inputs:
            ps = inp.get_partial_shape()
            if ps.rank.is_static and ps.rank.get_length() > 0 and ps[0].is_dynamic:
                ps[0] = 1
                shapes[inp.get_any_name()] = ps
        if shapes:
            model.reshape(shapes)
        config = {"PERFORMANCE_HINT": hint}
        # On CPUs with AVX512-BF16/AMX, OpenVINO silently runs FP32 models in bf16 (outputs differ
        # in the 3rd digit). Default to f32 so results match the model card and the other backends;
        # EDGECELL_OV_PRECISION=bf16 trades that exactness for speed.
        precision = precision or os.environ.get("EDGECELL_OV_PRECISION", "f32")
        if device.startswith("CPU") and precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads and device.startswith("CPU"):
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self._compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise ModelError(f"{path}: OpenVINO could not compile the model for {device} "
                             f"({str(exc).strip().splitlines()[0][:200]}); try --device CPU") from None
        self._request = self._compiled.create_infer_request()
        self.inputs = [self._info(p) for p in self._compiled.inputs]
        self.outputs = [self._info(p) for p in self._compiled.outputs]
        if self.path.suffix.lower() == ".tflite":
            self._take_tflite_quantization()
        self._refuse_unknown_quantization()

    def _take_tflite_quantization(self) -> None:
        """OpenVINO's TFLite frontend keeps a full-integer model's int8 ports but drops their
        scale and zero point; take them from the file, by tensor name, so this session quantizes
        and dequantizes exactly as LiteRT does."""
        from dataclasses import replace

        from edgecell.backends.tflite_file import read_io

        file_inputs, file_outputs = read_io(self.path)
        by_name = {t.name: t for t in file_inputs + file_outputs}
        self.inputs, self.outputs = (
            [replace(t, scale=by_name[t.name].scale, zero_point=by_name[t.name].zero_point)
             if t.name in by_name and by_name[t.name].dtype == t.dtype else t for t in ports]
            for ports in (self.inputs, self.outputs))

    @staticmethod
    def _info(port) -> TensorInfo:
        ps = port.get_partial_shape()
        shape = tuple(int(d.get_length()) if d.is_static else -1 for d in ps)
        names = port.get_names()
        name = port.get_any_name() if names else f"output_{port.get_index()}"
        return TensorInfo(name=name, shape=shape, dtype=np.dtype(port.get_element_type().to_dtype()).name)

    def run(self, feeds):
        feeds = self._as_feeds(feeds)
        self._request.infer({info.name: self._quantize_input(np.asarray(feeds[info.name]), info)
                             for info in self.inputs},
                            share_inputs=True)  # no input copy: inputs are not touched during inference
        # read the output tensors directly (cheaper than building OpenVINO's result dict); copy,
        # because the request reuses their memory on the next call
        return {info.name: np.array(dequantize(self._request.get_output_tensor(i).data, info), dtype=np.float32)
                for i, info in enumerate(self.outputs)}

    def run_raw(self, feeds):
        return self._request.infer(feeds)
