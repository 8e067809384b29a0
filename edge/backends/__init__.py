"""Backends: one `Session` interface over LiteRT, OpenVINO and ONNX Runtime.

The backend is found from the model file's type and what is installed (`backend="auto"`), or
named. Backend modules are imported only when used, so the runtime starts fast and a device
needs only the backend it runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from edgecell.backends.base import Session, TensorInfo, dequantize, quantize
from edgecell.errors import BackendNotInstalled, ModelError

@dataclass(frozen=True)
class Backend:
    """One row of the backend registry: every fact about a backend lives here, and every other
    table (install hints, readers by file type, versions, bundles, benchmarks) derives from it."""

    name: str
    #: the module a session imports to run (its top-level package being importable = installed)
    module: str
    #: PyPI distributions that provide it, in the order to ask for a version
    distributions: tuple[str, ...]
    #: what `pip install` takes to get it (an edgecell extra, or the distribution)
    requirement: str
    #: file types it is made for, and file types it also reads (a fallback, e.g. OpenVINO on .tflite)
    reads: tuple[str, ...]
    session: str  # "module:Class" of its `Session`
    also_reads: tuple[str, ...] = ()
    #: LiteRT flavours: where `Interpreter` is, as an attribute path under `module`
    interpreter: str | None = None
    #: benchmarked by default on the file types it `reads` (tf.lite is a workstation fallback)
    in_default_matrix: bool = True
    #: the edgecell extra that installs it; None: a base dependency or a separate install
    extra: str | None = None
    #: one of edgecell's base dependencies (a bundle whose models do not need it leaves it out)
    base_dependency: bool = False

    @property
    def package(self) -> str:
        return self.module.split(".")[0]


REGISTRY: tuple[Backend, ...] = (
    Backend("litert", "ai_edge_litert.interpreter", ("ai-edge-litert",), "ai-edge-litert", (".tflite",),
            "edgecell.backends.litert:LiteRTSession", interpreter="Interpreter", base_dependency=True),
    Backend("tflite-runtime", "tflite_runtime.interpreter", ("tflite-runtime",), "tflite-runtime", (".tflite",),
            "edgecell.backends.litert:LiteRTSession", interpreter="Interpreter"),
    Backend("tf.lite", "tensorflow", ("tensorflow-cpu", "tensorflow"), "tensorflow", (".tflite",),
            "edgecell.backends.litert:LiteRTSession", interpreter="lite.Interpreter", in_default_matrix=False),
    Backend("openvino", "openvino", ("openvino",), "'edgecell[openvino]'", (".xml",),
            "edgecell.backends.openvino:OpenVINOSession", also_reads=(".onnx", ".tflite"), extra="openvino"),
    Backend("onnxruntime", "onnxruntime", ("onnxruntime",), "'edgecell[onnx]'", (".onnx",),
            "edgecell.backends.onnxruntime:OnnxRuntimeSession", extra="onnx"),
)

#: backend name -> its registry row
BACKENDS: dict[str, Backend] = {b.name: b for b in REGISTRY}

#: model file suffix -> backends that read it, in order of preference (made for it, then also reads)
BY_SUFFIX: dict[str, tuple[str, ...]] = {
    suffix: tuple(b.name for b in REGISTRY if suffix in b.reads) + tuple(b.name for b in REGISTRY if suffix in b.also_reads)
    for suffix in dict.fromkeys(s for b in REGISTRY for s in b.reads)}


def native_backends(suffix: str) -> tuple[str, ...]:
    """Backends made for this file type and benchmarked on it by default."""
    return tuple(b.name for b in REGISTRY if suffix in b.reads and b.in_default_matrix)


def install_hint(backend: str) -> str:
    return f"pip install {BACKENDS[backend].requirement}"


def not_installed_message(backend: str) -> str:
    return f"backend {backend!r} is not installed; install it with: {install_hint(backend)}"


def import_backend(backend: str):
    """The backend's runtime module, or one line saying how to install it."""
    try:
        return importlib.import_module(BACKENDS[backend].module)
    except ImportError:
        raise BackendNotInstalled(not_installed_message(backend)) from None


def is_installed(backend: str) -> bool:
    return importlib.util.find_spec(BACKENDS[backend].package) is not None


def installed_backends() -> list[str]:
    return [b for b in BACKENDS if is_installed(b)]


def backend_versions() -> dict[str, str]:
    """Installed backends and their versions (for `edgecell info` and benchmark reports)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for b in installed_backends():
        for dist in BACKENDS[b].distributions:
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
            raise BackendNotInstalled(not_installed_message(backend))
        return backend
    for candidate in BY_SUFFIX[suffix]:
        if is_installed(candidate):
            return candidate
    needs = " or ".join(install_hint(b) for b in BY_SUFFIX[suffix][:2])
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
    module_name, class_name = BACKENDS[name].session.split(":")
    session_class = getattr(importlib.import_module(module_name), class_name)
    return session_class(path, backend=name, threads=threads, device=device, providers=providers)


__all__ = ["Session", "TensorInfo", "load_session", "resolve_backend", "installed_backends",
           "backend_versions", "is_installed", "import_backend", "quantize", "dequantize", "Backend", "REGISTRY", "BACKENDS",
           "BY_SUFFIX", "native_backends", "install_hint", "not_installed_message"]
