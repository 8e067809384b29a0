"""Device profiles for `edgecell bench --profile`: which formats, backends, precisions and thread
counts make sense on that kind of device. Explicit options given by the user win."""

from __future__ import annotations

import os
from typing import Any

PROFILES: dict[str, dict[str, Any]] = {
    "raspberry-pi": {
        "description": "Raspberry Pi 4/5 (ARM Cortex-A72/A76, 4 cores, NEON): TFLite through LiteRT/XNNPACK; "
                       "tflite-runtime as the fallback on old images with numpy<2.",
        "formats": {".tflite": ["litert", "tflite-runtime"]},
        "precisions": ["int8", "fp32"],
        "threads": [1, "all"],
        "notes": "On ARM, XNNPACK INT8 is usually the fastest; measure, do not assume. Watch the "
                 "temperature/throttling line of the device description: a throttled Pi is slower.",
    },
    "jetson": {
        "description": "NVIDIA Jetson (ARM cores + CUDA GPU): ONNX Runtime (CPU provider here; CUDA/TensorRT "
                       "providers where installed) and LiteRT on the CPU.",
        "formats": {".onnx": ["onnxruntime"], ".tflite": ["litert"]},
        "precisions": ["fp32", "fp16", "int8"],
        "threads": [1, "all"],
        "notes": "Rows use the CPU execution provider; GPU rows need onnxruntime-gpu with the Jetson's "
                 "CUDA/TensorRT providers. Set the power mode (nvpmodel) and jetson_clocks before measuring.",
    },
    "x86-legacy": {
        "description": "Older x86 PC (AVX2, no VNNI): LiteRT on the .tflite first (what its bundle ships), "
                       "then OpenVINO and ONNX Runtime for comparison.",
        "formats": {".tflite": ["litert"], ".xml": ["openvino"], ".onnx": ["onnxruntime"]},
        "precisions": ["int8", "fp32"],
        "threads": [1, "all"],
        "notes": "Without VNNI, u8 x s8 INT8 kernels (OpenVINO, ONNX Runtime) can saturate: their rows may "
                 "answer differently from LiteRT ('wrong'); check INT8 accuracy (`--accuracy`), not only speed.",
    },
    "x86-vnni": {
        "description": "x86 PC with AVX-512 VNNI or AVX-VNNI: OpenVINO IR first, then ONNX Runtime, LiteRT.",
        "formats": {".xml": ["openvino"], ".onnx": ["onnxruntime"], ".tflite": ["litert"]},
        "precisions": ["int8", "fp32"],
        "threads": [1, "all"],
        "notes": "VNNI sums INT8 products in 32 bits: the IR and ONNX siblings give LiteRT's answers.",
    },
}


def get_profile(name: str) -> dict[str, Any]:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]


def resolve_threads(values: list[Any], cores: int | None = None) -> list[int]:
    cores = cores or os.cpu_count() or 1
    out = sorted({cores if v == "all" else int(v) for v in values})
    return [t for t in out if t >= 1]


def apply_profile(name: str, *, backends: list[str] | None = None, precisions: list[str] | None = None,
                  threads: list[int] | None = None) -> dict[str, Any]:
    """The options a profile implies, with the user's explicit options kept."""
    prof = get_profile(name)
    return {
        "backends": backends,  # None: the profile's per-format backends apply (see `formats`)
        "formats": None if backends else prof["formats"],
        "precisions": precisions or prof["precisions"],
        "threads": threads or resolve_threads(prof["threads"]),
        "notes": prof["notes"],
    }
