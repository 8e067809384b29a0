"""Backends: one `Session` interface over LiteRT, OpenVINO and ONNX Runtime.

The backend is found from the model file's type and what is installed (`backend="auto"`), or
named. Backend modules are imported only when used, so the runtime starts fast and a device
needs only the backend it runs.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from edgecell.backends.base import Session, TensorInfo, dequantize, quantize
from edgecell.errors import BackendNotInstalled, ModelError

#: backend name -> (module whose presence means "installed", pip extra/requirement)
BACKENDS = {
    "litert": ("ai_edge_litert", "ai-edge-litert"),
    "openvino": ("openvino", "'edgecell[openvino]'"),
    "onnxruntime": ("onnxruntime", "'edgecell[onnx]'"),
    "tflite-runtime": ("tflite_runtime", "tflite-runtime"),
    "tf.lite": ("tensorflow", "tensorflow"),
}

#: model file suffix -> backends that read it, in order of preference
BY_SUFFIX = {
    ".tflite": ("litert", "tflite-runtime", "tf.lite", "openvino"),
    ".xml": ("openvino",),
    ".onnx": ("onnxruntime", "openvino"),
}


def is_installed(backend: str) -> bool:
    return importlib.util.find_spec(BACKENDS[backend][0]) is not None


def installed_backends() -> list[str]:
    return [b for b in BACKENDS if is_installed(b)]


def backend_versions() -> dict[str, str]:
    """Installed backends and their versions (for `edgecell info` and benchmark reports)."""
    from importlib.metadata import PackageNotFoundError, version

    dists = {"litert": "ai-edge-litert", "openvino": "openvino", "onnxruntime": "onnxruntime",
             "tflite-runtime": "tflite-runtime", "tf.lite": "tensorflow-cpu"}
    out = {}
    for b in installed_backends():
        for dist in (dists[b], "tensorflow") if b == "tf.lite" else (dists[b],):
            try:
                out[b] = version(dist)
                break
            except PackageNotFoundError:
                out[b] = "installed"
    return out


def resolve_backend(path: str | os.PathLike, backend: str = "auto") -> str:
    """The backend that will run `path`: the named one (checked), or the first installed one
    that reads this file type."""
    suffix = Path(path).suffix.lower()
    if suffix not in BY_SUFFIX:
        raise ModelError(f"{path}: unknown model type {suffix or '(no suffix)'!r}; expected "
                         f"{', '.join(BY_SUFFIX)} (OpenVINO IR is the .xml beside its .bin)")
    if backend != "auto":
        if backend not in BACKENDS:
            raise BackendNotInstalled(f"unknown backend {backend!r}; expected auto or one of {', '.join(BACKENDS)}")
        if backend not in BY_SUFFIX[suffix]:
            raise ModelError(f"backend {backend!r} cannot read {suffix} files; "
                             f"for {suffix} use one of {', '.join(BY_SUFFIX[suffix])}")
        if not is_installed(backend):
            raise BackendNotInstalled(f"backend {backend!r} is not installed; install it with: "
                                      f"pip install {BACKENDS[backend][1]}")
        return backend
    for candidate in BY_SUFFIX[suffix]:
        if is_installed(candidate):
            return candidate
    needs = " or ".join(f"pip install {BACKENDS[b][1]}" for b in BY_SUFFIX[suffix][:2])
    raise BackendNotInstalled(f"no installed backend reads {suffix} models; install one: {needs}")


def load_session(path: str | os.PathLike, backend: str = "auto", *, threads: int | None = None,
                 device: str = "CPU", providers: list[str] | None = None) -> Session:
    """Load a model file and return a ready `Session` (float32 in, float32 out)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: model file is empty (0 bytes); re-copy it")
    name = resolve_backend(path, backend)
    if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
        raise ModelError(f"{path}: OpenVINO IR needs its weights file {path.with_suffix('.bin').name} beside it")
    if name in ("litert", "tflite-runtime", "tf.lite"):
        from edgecell.backends.litert import LiteRTSession

        return LiteRTSession(path, threads=threads, flavour=name)
    if name == "openvino":
        from edgecell.backends.openvino import OpenVINOSession

        return OpenVINOSession(path, threads=threads, device=device)
    from edgecell.backends.onnxruntime import OnnxRuntimeSession

    return OnnxRuntimeSession(path, threads=threads, providers=providers)


__all__ = ["Session", "TensorInfo", "load_session", "resolve_backend", "installed_backends",
           "backend_versions", "is_installed", "quantize", "dequantize", "BACKENDS"]
