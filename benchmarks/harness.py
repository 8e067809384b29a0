"""One benchmark row: one model file x one backend x one thread count, measured in this process.

`measure_row(RowSpec)` returns a JSON-ready dict. The matrix (`benchmarks/matrix.py`) runs every
row in its own subprocess (`python -m edgecell.benchmarks.row`), so that one backend's thread pool,
allocator or JIT caches cannot slow another row; call `measure_row` directly only for a quick look.

What a row measures, in this order:

1. ``import_ms``: importing the backend module (reported, not part of load).
2. ``load_ms``: `load_model(...)` (read + compile/allocate + metadata and input checks), the path
   `edgecell run` takes. RSS before and after.
3. ``first_ms``: the first inference (includes lazy initialisation in some backends).
4. warm-up: ``warmup`` untimed runs.
5. timed runs: ``iterations`` runs, or as many as fit in ``seconds``. Two loops are interleaved in
   chunks so that machine noise hits both alike:
   * ``ours``: `Session.run(float32 feeds)` - what edgecell users get (quantization of int8
     inputs, dtype conversion, dequantized float32 outputs included);
   * ``raw``: `Session.run_raw(prepared feeds)` - the bare backend call on the same input already
     quantized/converted, so ``overhead = ours.median / raw.median`` is edgecell's own cost.
   Each timing is one `time.perf_counter_ns()` pair around one call.
6. ``throughput``: sync throughput = 1000 / mean(ours); with OpenVINO also a second compilation
   with ``PERFORMANCE_HINT=THROUGHPUT`` and an `AsyncInferQueue` of the plugin's optimal number of
   requests (``async_fps``), on the same input and thread count.
7. ``pipeline`` (models whose metadata names a task): `pipeline.predict` on a sample image, its
   pre-processing, inference and post-processing timings; then the answer is compared with the
   reference backend's (LiteRT on the .tflite of the same name, `edgecell.backends.agreement`):
   a row that disagrees gets status ``wrong``, never ``ok``.
8. ``peak_rss_mb`` (ru_maxrss of this process, measured before the throughput compilation),
   ``size_bytes`` of the model file (+ the .bin of an OpenVINO IR).

The same input tensor goes to every backend: the sample image through the task's pre-processing
for task models, otherwise uniform [0, 1) noise from a fixed seed in the model's input shape.
``input_sha1`` in the row lets the report check that.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import platform
import re
import resource
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgecell.benchmarks import stats
from edgecell.resources import shipped_samples

#: where shipped sample images live (the package's samples folder)
SAMPLES_DIR = shipped_samples()
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: prefix of the one JSON line a row process prints (backend chatter on stdout cannot be mistaken for it)
ROW_MARKER = "EDGECELL_ROW "


@dataclass
class RowSpec:
    """What to measure. Everything is plain data so it travels as JSON to the row subprocess."""

    model: str
    backend: str
    threads: int | None = None
    iterations: int = 100
    seconds: float | None = None  # time budget for the timed runs; overrides iterations
    warmup: int = 10
    precision: str | None = None  # "fp32" | "int8" | ...; for the report only
    seed: int = 0
    image: str | None = None  # sample image for the pipeline; None: a shipped sample; "synthetic": generated
    pipeline: bool = True
    raw: bool = True
    async_throughput: bool = True
    keep_timings: bool = True
    device: str = "CPU"
    repeat: int = 0  # which repetition of the matrix this row belongs to
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RowSpec":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# --------------------------------------------------------------------------------------------
# small helpers


def model_size_bytes(path: str | os.PathLike) -> int:
    """File size; an OpenVINO IR counts its .xml and .bin."""
    p = Path(path)
    size = p.stat().st_size if p.is_file() else 0
    if p.suffix.lower() == ".xml" and p.with_suffix(".bin").is_file():
        size += p.with_suffix(".bin").stat().st_size
    return size


def precision_of(path: str | os.PathLike) -> str:
    """Precision from the file name (`x_int8.tflite`, `x-fp16.xml`), else from the sidecar, else fp32."""
    stem = Path(path).stem.lower()
    m = re.search(r"[_\-.](fp32|fp16|int8|uint8|int4|float32|float16)$", stem)
    if m:
        return {"float32": "fp32", "float16": "fp16", "uint8": "int8"}.get(m.group(1), m.group(1))
    side = Path(path).with_suffix(".json")
    if side.is_file():
        try:
            import json

            return str(json.loads(side.read_text()).get("precision", "fp32")).lower()
        except Exception:  # a broken sidecar is reported by the row itself
            pass
    return "fp32"


def rss_mb() -> float | None:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:
        return None


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


#: words in a sample's path (relative to edge/samples) that mark it as made for a task
TASK_SAMPLE_WORDS = {"cells": ("cells", "bccd", "smear", "blood"), "products": ("products", "product", "retail"),
                     "xray": ("xray", "x-ray", "chest", "lung"), "gate": ("gate", "utility"),
                     "classify": ("classify", "products", "product")}


def find_sample_image(task: str | None = None) -> Path | None:
    """A shipped sample image (sorted, so always the same one), preferring one whose path names
    the task (e.g. edge/samples/bccd/... for the cell counter)."""
    if not SAMPLES_DIR.is_dir():
        return None
    images = sorted(p for p in SAMPLES_DIR.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if task:
        words = TASK_SAMPLE_WORDS.get(task, (task,))
        for p in images:
            rel = str(p.relative_to(SAMPLES_DIR)).lower()
            if any(w in rel for w in words):
                return p
    return images[0] if images else None


def task_of(path: str | os.PathLike) -> str | None:
    """The task named in a model's sidecar JSON (None without one; embedded metadata is read by the row)."""
    side = Path(path).with_suffix(".json")
    if not side.is_file():
        return None
    try:
        import json

        return json.loads(side.read_text()).get("task")
    except Exception:
        return None


def synthetic_image(seed: int = 0, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """A deterministic RGB test image (gradient + blobs + noise) when no sample is shipped."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    for _ in range(12):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(10, 50)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 255, 3)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def tensor_sha1(feeds: dict[str, np.ndarray]) -> str:
    h = hashlib.sha1()
    for name in sorted(feeds):
        a = np.ascontiguousarray(feeds[name], dtype=np.float32)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def random_feeds(inputs, seed: int) -> dict[str, np.ndarray]:
    """Uniform [0, 1) float32 in each input's shape (dynamic dims: batch 1; others refused)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for i, t in enumerate(inputs):
        shape = list(t.shape)
        if shape and shape[0] == -1:
            shape[0] = 1
        if any(d < 0 for d in shape):
            raise ValueError(f"input {t.name!r} has dynamic shape {t.shape}; benchmark a model with a "
                             f"fixed input size (or add a sidecar with input_size)")
        feeds[t.name] = rng.random(shape, dtype=np.float32)
    return feeds


def _time_calls(fn: Callable[[Any], Any], arg: Any, count: int, out: list[int]) -> None:
    pc = time.perf_counter_ns
    append = out.append
    for _ in range(count):
        t0 = pc()
        fn(arg)
        append(pc() - t0)


def timed_runs(ours: Callable, ours_arg: Any, raw: Callable | None, raw_arg: Any, *,
               iterations: int, seconds: float | None, chunks: int = 10,
               min_runs: int = 5) -> tuple[list[float], list[float]]:
    """Interleaved timing of `ours(ours_arg)` and `raw(raw_arg)` in chunks; milliseconds out.

    With `seconds`, runs continue (chunk by chunk) until the budget is spent and each loop has at
    least `min_runs` timings; otherwise each loop runs exactly `iterations` times.
    """
    a: list[int] = []
    b: list[int] = []
    if seconds:
        deadline = time.perf_counter() + seconds
        # chunk size from a quick estimate, so that a budget gives ~`chunks` alternations
        t0 = time.perf_counter()
        _time_calls(ours, ours_arg, 1, a)
        per_call = max(time.perf_counter() - t0, 1e-6) * (2 if raw else 1)
        chunk = max(1, int(seconds / per_call / chunks))
        while time.perf_counter() < deadline or len(a) < min_runs or (raw and len(b) < min_runs):
            _time_calls(ours, ours_arg, chunk, a)
            if raw:
                _time_calls(raw, raw_arg, chunk, b)
    else:
        iterations = max(1, int(iterations))
        chunk = max(1, iterations // chunks)
        done = 0
        while done < iterations:
            n = min(chunk, iterations - done)
            _time_calls(ours, ours_arg, n, a)
            if raw:
                _time_calls(raw, raw_arg, n, b)
            done += n
    return [t / 1e6 for t in a], [t / 1e6 for t in b]


# --------------------------------------------------------------------------------------------
# the row


def _install_hint(backend: str) -> str:
    from edgecell.backends import BACKENDS, install_hint

    return install_hint(backend) if backend in BACKENDS else f"pip install {backend}"


def _backend_version(backend: str) -> str | None:
    try:
        from edgecell.backends import backend_versions

        return backend_versions().get(backend)
    except Exception:
        return None


def measure_row(spec: RowSpec) -> dict[str, Any]:
    """Measure one row in this process; never raises for a bad model or missing backend:
    returns status "skipped" (with `reason` and, for a backend, `install`) or "failed"."""
    from edgecell.backends import BACKENDS
    from edgecell.errors import BackendNotInstalled, EdgecellError
    from edgecell.model import load_model

    path = Path(spec.model)
    row: dict[str, Any] = {
        "model": str(path), "name": path.stem, "format": path.suffix.lower().lstrip("."),
        "backend": spec.backend, "threads": spec.threads or os.cpu_count(),
        "threads_requested": spec.threads, "precision": spec.precision or precision_of(path),
        "device": spec.device, "repeat": spec.repeat, "status": "ok",
        "iterations_requested": spec.iterations, "seconds_requested": spec.seconds,
        "warmup": spec.warmup, "pid": os.getpid(),
        "python": platform.python_version(), "numpy": np.__version__,
    }
    try:
        row["size_bytes"] = model_size_bytes(path)
    except OSError:
        row["size_bytes"] = None

    # 1. import
    try:
        t0 = time.perf_counter()
        importlib.import_module(BACKENDS[spec.backend].module if spec.backend in BACKENDS else spec.backend)
        row["import_ms"] = (time.perf_counter() - t0) * 1e3
    except ImportError as exc:
        row.update(status="skipped", reason=f"backend {spec.backend!r} is not installed ({exc})",
                   install=_install_hint(spec.backend))
        return row
    row["backend_version"] = _backend_version(spec.backend)

    # 2. load: the real path, `load_model` (session + metadata + input checks + INT8 input path)
    row["rss_before_load_mb"] = rss_mb()
    try:
        t0 = time.perf_counter()
        model = load_model(path, spec.backend, threads=spec.threads, device=spec.device)
        row["load_ms"] = (time.perf_counter() - t0) * 1e3
    except BackendNotInstalled as exc:
        row.update(status="skipped", reason=str(exc), install=_install_hint(spec.backend))
        return row
    except EdgecellError as exc:
        row.update(status="skipped", reason=str(exc))
        return row
    except Exception as exc:  # a backend raising something unexpected on a bad file
        row.update(status="skipped", reason=f"{path}: could not load ({type(exc).__name__}: {str(exc)[:200]})")
        return row
    session = model.session
    row["rss_after_load_mb"] = rss_mb()
    compiled = getattr(session, "_compiled", None)
    if compiled is not None:  # OpenVINO runs "FP32" models in bf16/fp16 where the CPU has it: say so
        try:
            value = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
            m = re.search(r"'([^']+)'", value)
            row["ov_inference_precision"] = m.group(1) if m else value
        except Exception:
            pass
    row["inputs"] = [t.to_dict() for t in session.inputs]
    row["outputs"] = [t.to_dict() for t in session.outputs]

    try:
        _measure_loaded(spec, model, row)
    except Exception as exc:
        row.update(status="failed", reason=f"{type(exc).__name__}: {str(exc)[:300]}",
                   traceback=traceback.format_exc(limit=6))
    return row


def _sample_image(spec: RowSpec, model, row: dict) -> np.ndarray | None:
    """The row's sample image for a model whose metadata names a task, else None."""
    row["task"] = model.info.task
    if model.info.task == "raw" or not spec.pipeline or len(model.session.inputs) != 1:
        return None
    image_path = None if spec.image == "synthetic" else (Path(spec.image) if spec.image else find_sample_image(model.info.task))
    if image_path is None:
        row["sample_image"] = "synthetic 640x480 (no shipped sample)"
        return synthetic_image(spec.seed)
    from edgecell.images import decode_image

    row["sample_image"] = str(image_path)
    return decode_image(image_path)


def _task_feeds(model, image: np.ndarray, row: dict) -> dict[str, np.ndarray]:
    """The sample through the task's pre-processing, as `pipeline.predict` prepares it (a
    full-integer model gets its quantized twin); `input_sha1` hashes the float tensor, the same
    for every backend and precision."""
    from dataclasses import replace

    from edgecell.tasks import get_task

    task = get_task(model.info.task)
    row["input_sha1"] = tensor_sha1({model.session.inputs[0].name: task.model_input(
        model.session, image, replace(model.info, input_quantization=None))})
    return {model.session.inputs[0].name: task.model_input(model.session, image, model.info)}


def reference_of(path: Path) -> Path | None:
    """The file whose LiteRT answers a row must give: the .tflite of the same name (None when
    there is none)."""
    ref = Path(path).with_suffix(".tflite")
    return ref if ref.is_file() else None


def check_agreement(spec: RowSpec, model, image: np.ndarray, result: Any, row: dict) -> None:
    """Compare the row's answer on its sample with the reference backend's on the same file
    family; a row that disagrees gets status "wrong" (never "ok") and says how."""
    from edgecell.backends import is_installed
    from edgecell.backends.agreement import REFERENCE_BACKEND, disagreement
    from edgecell.model import load_model
    from edgecell.pipeline import predict

    path, ref = Path(spec.model), reference_of(Path(spec.model))
    if ref is not None and ref.resolve() == path.resolve() and spec.backend == REFERENCE_BACKEND:
        row["agreement"] = "reference"
        return
    if ref is None or not is_installed(REFERENCE_BACKEND):
        row["agreement"] = f"not checked (no {path.stem}.tflite on {REFERENCE_BACKEND} to compare with)"
        return
    expected, _ = predict(load_model(ref, REFERENCE_BACKEND, threads=spec.threads), image)
    why = disagreement(expected, result)
    if why is None:
        row["agreement"] = f"agrees with {REFERENCE_BACKEND} on {ref.name}"
        return
    row["agreement"] = "wrong"
    row.update(status="wrong", reason=f"answer on {row.get('sample_image')} differs from {REFERENCE_BACKEND} on "
                                      f"{ref.name}: {why}")


def _measure_loaded(spec: RowSpec, model, row: dict) -> None:
    from edgecell.backends.base import quantize

    session = model.session
    image = _sample_image(spec, model, row)
    if image is not None:
        feeds = _task_feeds(model, image, row)
        row["input_source"] = "sample image through the task pre-processing"
    else:
        feeds = random_feeds(session.inputs, spec.seed)
        row["input_source"] = f"uniform [0,1) noise, seed {spec.seed}"
    row.setdefault("input_sha1", tensor_sha1(feeds))
    # the bare backend call gets the input already in the model's dtype (quantized for int8 TFLite)
    prepared = {t.name: np.ascontiguousarray(quantize(np.asarray(feeds[t.name]), t)) for t in session.inputs}

    # 3. first inference, 4. warm-up
    t0 = time.perf_counter()
    session.run(feeds)
    row["first_ms"] = (time.perf_counter() - t0) * 1e3
    for _ in range(max(0, spec.warmup)):
        session.run(feeds)
    if spec.raw:
        for _ in range(max(1, spec.warmup // 2)):
            session.run_raw(prepared)

    # 5. timed runs
    t0 = time.perf_counter()
    ours, raw = timed_runs(session.run, feeds, session.run_raw if spec.raw else None, prepared,
                           iterations=spec.iterations, seconds=spec.seconds)
    row["timed_wall_s"] = time.perf_counter() - t0
    row["latency_ms"] = stats.summarize(ours)
    row["raw_latency_ms"] = stats.summarize(raw) if raw else None
    row["overhead_ratio"] = stats.ratio(row["latency_ms"]["median"], row["raw_latency_ms"]["median"]) if raw else None
    row["sync_fps"] = stats.throughput(len(ours), sum(ours), 1e-3)
    if spec.keep_timings:
        row["timings_ms"] = [round(t, 4) for t in ours]
        row["raw_timings_ms"] = [round(t, 4) for t in raw]

    # 7. pipeline (the real path, `pipeline.predict`), and the answer checked against the reference
    if image is not None:
        try:
            row["pipeline_ms"], result = measure_pipeline(model, image,
                                                          iterations=min(max(5, spec.iterations // 2), 50))
        except Exception as exc:
            row["pipeline_note"] = f"pipeline failed: {type(exc).__name__}: {str(exc)[:200]}"
        else:
            check_agreement(spec, model, image, result, row)

    # 8. memory (before the extra throughput compilation)
    row["peak_rss_mb"] = peak_rss_mb()

    # 6. async throughput (OpenVINO)
    if spec.async_throughput and session.backend == "openvino":
        try:
            row["async"] = openvino_async_throughput(spec, feeds)
        except Exception as exc:
            row["async"] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def measure_pipeline(model, image: np.ndarray, *, iterations: int = 20) -> tuple[dict[str, Any], Any]:
    """`pipeline.predict` on one image `iterations` times (after one warm-up): its own
    pre-processing / inference / post-processing timings (ms). Returns (summary, last result)."""
    from edgecell.pipeline import predict

    pre, inf, post, total = [], [], [], []
    result = None
    for i in range(iterations + 1):  # the first one is a warm-up
        result, timings = predict(model, image)
        if i:
            pre.append(timings.pre)
            inf.append(timings.infer)
            post.append(timings.post)
            total.append(timings.pre + timings.infer + timings.post)
    out = {"iterations": iterations, "image_shape": list(image.shape),
           "pre": stats.summarize(pre), "inference": stats.summarize(inf),
           "post": stats.summarize(post), "total": stats.summarize(total)}
    summary = getattr(result, "summary", None)
    if callable(summary):
        out["result"] = str(summary())[:200]
    return out, result


def openvino_async_throughput(spec: RowSpec, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Frames per second with PERFORMANCE_HINT=THROUGHPUT and the optimal number of async requests."""
    import openvino as ov

    from edgecell.backends.openvino import OpenVINOSession

    session = OpenVINOSession(Path(spec.model), threads=spec.threads, device=spec.device, hint="THROUGHPUT")
    data = {t.name: session._quantize_input(np.asarray(feeds[t.name]), t) for t in session.inputs}
    compiled = session._compiled  # the compiled model inside the session (same reshape rules)
    nreq = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    try:
        streams = int(compiled.get_property("NUM_STREAMS"))
    except Exception:
        streams = None
    queue = ov.AsyncInferQueue(compiled, nreq)
    for _ in range(nreq * 2):
        queue.start_async(data)
    queue.wait_all()
    count = 0
    t0 = time.perf_counter()
    budget = spec.seconds if spec.seconds else None
    target = max(spec.iterations, nreq * 4)
    while True:
        for _ in range(nreq):
            queue.start_async(data)
        count += nreq
        if budget is not None:
            if time.perf_counter() - t0 >= budget:
                break
        elif count >= target:
            break
    queue.wait_all()
    elapsed = time.perf_counter() - t0
    return {"hint": "THROUGHPUT", "requests": nreq, "streams": streams, "inferences": count,
            "fps": count / elapsed if elapsed > 0 else None}


def spec_dict(spec: RowSpec) -> dict[str, Any]:
    return asdict(spec)
