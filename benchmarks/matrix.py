"""The benchmark matrix: models x backends x precisions x threads, one subprocess per row.

* models: the given files (a folder means every model file in it), or the shipped models in
  `edge/models/`; each file brings its siblings of the same family: `x_int8.tflite`,
  `x_fp32.tflite`, `x_int8.xml`, `x_fp32.onnx`, ... beside it.
* backends: every installed backend that reads the file (.tflite: LiteRT / tflite-runtime,
  .xml: OpenVINO, .onnx: ONNX Runtime; OpenVINO also on .onnx/.tflite when the family has no
  IR). `tf.lite` (TensorFlow) only when named. A named backend that is not installed, or a
  file no installed backend reads, gives a "skipped" row naming the extra to install.
* threads: 1 and all cores (`os.cpu_count()`), unless given.
* each row runs in its own `python -m edgecell.benchmarks.row` process; with `repeats` > 1 the
  order is reversed on every other pass, so slow drift of a shared machine does not always hit
  the same rows.
* every row is appended to `results.jsonl` (one JSON object a line, flushed) the moment it
  ends: an interrupted run keeps what it measured. A row whose process crashes or times out is
  "failed"; the other rows go on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

from edgecell.benchmarks.harness import RowSpec, find_sample_image, model_size_bytes, precision_of, task_of
from edgecell.benchmarks.harness import ROW_MARKER as MARKER
from edgecell.resources import shipped_path

MODEL_SUFFIXES = (".tflite", ".xml", ".onnx")
SHIPPED_DIR = shipped_path("models")
_PRECISION_RE = re.compile(r"[_\-.](fp32|fp16|int8|uint8|float32|float16)$", re.IGNORECASE)



def family(path: Path) -> str:
    """`cells_int8.tflite` -> `cells`; a name without a precision suffix is its own family."""
    return _PRECISION_RE.sub("", path.stem)


def siblings(path: Path) -> list[Path]:
    """The model files of the same family beside `path` (all formats, all precisions), sorted."""
    fam = family(path)
    out = [p for p in sorted(path.parent.iterdir())
           if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES and family(p) == fam]
    return out or [path]


def discover(models: Iterable[Path] | None, *, with_siblings: bool = True) -> list[Path]:
    """Model files to benchmark, deduplicated, in a stable order."""
    if not models:
        models = [SHIPPED_DIR]
    found: list[Path] = []
    for m in models:
        m = Path(m)
        if m.is_dir():
            found += sorted(p for p in m.iterdir() if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)
        elif with_siblings and m.is_file():
            found += siblings(m)
        else:
            found.append(m)  # a missing file becomes a skipped row with the reason
    seen, out = set(), []
    for p in found:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _installed(backend: str) -> bool:
    from edgecell.backends import BACKENDS, is_installed

    return backend in BACKENDS and is_installed(backend)


def backends_for(path: Path, family_files: list[Path], wanted: list[str] | None,
                 formats: dict[str, list[str]] | None = None) -> list[tuple[str, str | None]]:
    """[(backend, skip reason or None)] for one file. `formats` (from a profile) maps a file
    suffix to the backends to use for it; a suffix it does not name gets no rows."""
    from edgecell.backends import BY_SUFFIX, install_hint, native_backends, not_installed_message

    suffix = path.suffix.lower()
    readers = BY_SUFFIX.get(suffix, ())
    if formats is not None and not wanted:
        wanted = formats.get(suffix)
        if not wanted:
            return []
    if wanted:
        out = []
        for b in wanted:
            if b not in readers:
                continue  # this backend does not read this file type: not a row at all
            if not _installed(b):
                out.append((b, not_installed_message(b)))
            else:
                out.append((b, None))
        return out
    primary = [b for b in native_backends(suffix) if _installed(b)]
    has_ir = any(f.suffix.lower() == ".xml" for f in family_files)
    if suffix in (".onnx", ".tflite") and not has_ir and _installed("openvino"):
        primary.append("openvino")
    if primary:
        return [(b, None) for b in primary]
    if not readers:
        return [("none", f"{path}: unknown model type {suffix or '(none)'}; expected {', '.join(MODEL_SUFFIXES)}")]
    first = (native_backends(suffix) or readers)[0]
    return [(first, f"no installed backend reads {suffix} models; install one with: {install_hint(first)}")]


def plan(models: list[Path] | None = None, *, backends: list[str] | None = None,
         precisions: list[str] | None = None, threads: list[int] | None = None,
         iterations: int = 100, seconds: float | None = None, warmup: int = 10,
         with_siblings: bool = True, image: str | None = None,
         formats: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """The rows to run: dicts with `spec` (a RowSpec dict) or `skip` (a ready skipped row)."""
    files = discover(models, with_siblings=with_siblings)
    thread_list = threads or sorted({1, os.cpu_count() or 1})
    precs = [p.lower() for p in precisions] if precisions else None
    rows = []
    for f in files:
        if not f.is_file():
            rows.append({"skip": {"model": str(f), "name": f.stem, "family": family(f),
                                  "format": f.suffix.lower().lstrip("."), "backend": "-", "threads": None,
                                  "precision": precision_of(f), "status": "skipped",
                                  "reason": f"{f}: no such model file"}})
            continue
        prec = precision_of(f)
        # the sample image is chosen once, here, so every row of a family gets the same input even
        # if samples change while the matrix runs
        sample = image
        if sample is None:
            found = find_sample_image(task_of(f))
            sample = str(found) if found else "synthetic"
        if precs and prec not in precs:
            continue
        fam_files = siblings(f) if f.parent.is_dir() and f.exists() else [f]
        for backend, reason in backends_for(f, fam_files, backends, formats):
            for t in ([None] if reason else thread_list):  # a skipped backend is one row, not one per thread count
                base = {"model": str(f), "name": f.stem, "family": family(f), "format": f.suffix.lower().lstrip("."),
                        "backend": backend, "threads": t, "precision": prec}
                if reason:
                    skip = dict(base, status="skipped", reason=reason)
                    from edgecell.backends import BACKENDS, install_hint

                    if backend in BACKENDS and ("not installed" in reason or "no installed backend" in reason):
                        skip["install"] = install_hint(backend)
                    rows.append({"skip": skip})
                    continue
                spec = RowSpec(model=str(f), backend=backend, threads=t, iterations=iterations, seconds=seconds,
                               warmup=warmup, precision=prec, image=sample)
                rows.append({"spec": asdict(spec), "family": family(f)})
    return rows


def run_row_subprocess(spec: dict[str, Any], *, timeout: float = 600.0) -> dict[str, Any]:
    """Run one row in a fresh Python process; always returns a row dict (ok/skipped/failed)."""
    cmd = [sys.executable, "-m", "edgecell.benchmarks.row", "--spec", json.dumps(spec)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    base = {"model": spec["model"], "name": Path(spec["model"]).stem, "backend": spec["backend"],
            "threads": spec.get("threads"), "precision": spec.get("precision"), "repeat": spec.get("repeat", 0)}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(base, status="failed", reason=f"row did not finish within {timeout:.0f} s (killed)")
    wall = time.perf_counter() - t0
    row = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                row = json.loads(line[len(MARKER):])
            except json.JSONDecodeError:
                row = None
            break
    if row is None:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        how = f"crashed with signal {-proc.returncode}" if proc.returncode < 0 else f"exited with status {proc.returncode}"
        return dict(base, status="failed", reason=f"row process {how} and printed no result: {' | '.join(tail)[:400]}",
                    wall_s=wall)
    row.setdefault("family", family(Path(spec["model"])))
    row["wall_s"] = wall
    return row


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one row and flush it to disk (an interrupted run keeps every finished row)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows from a results file; a half-written last line (power cut) is ignored."""
    rows = []
    if not Path(path).is_file():
        return rows
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def run_matrix(planned: list[dict[str, Any]], results: Path, *, repeats: int = 1,
               on_row: Callable[[dict[str, Any], int, int], None] | None = None,
               row_runner: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
               timeout: float = 600.0) -> list[dict[str, Any]]:
    """Run the planned rows (`repeats` passes, alternating order), appending each to `results`."""
    runner = row_runner or (lambda spec: run_row_subprocess(spec, timeout=timeout))
    out: list[dict[str, Any]] = []
    total = len(planned) * max(1, repeats)
    done = 0
    for rep in range(max(1, repeats)):
        order = planned if rep % 2 == 0 else list(reversed(planned))
        for item in order:
            if "skip" in item:
                if rep > 0:
                    done += 1
                    if on_row:
                        on_row(item["skip"], done, total)
                    continue  # a skipped row is reported once
                row = dict(item["skip"], repeat=rep)
                if row.get("model") and Path(row["model"]).exists():
                    row["size_bytes"] = model_size_bytes(row["model"])
            else:
                spec = dict(item["spec"], repeat=rep)
                try:
                    row = runner(spec)
                except Exception as exc:  # the runner itself broke: this row fails, the rest goes on
                    row = {"model": spec["model"], "name": Path(spec["model"]).stem, "backend": spec["backend"],
                           "threads": spec.get("threads"), "precision": spec.get("precision"), "repeat": rep,
                           "status": "failed", "reason": f"{type(exc).__name__}: {str(exc)[:300]}"}
                row.setdefault("family", item.get("family"))
            row["order"] = done
            append_jsonl(results, row)
            out.append(row)
            done += 1
            if on_row:
                on_row(row, done, total)
    return out


# --------------------------------------------------------------------------------------------
# the entry function for `edgecell bench`


def run_bench(models: list[Path] | None = None, *, backends: list[str] | None = None,
              precisions: list[str] | None = None, threads: list[int] | None = None,
              iterations: int = 100, seconds: float | None = None, warmup: int = 10,
              profile: str | None = None, out_dir: Path = Path("bench-results"),
              formats: Iterable[str] = ("table", "json", "csv", "md", "png"),
              compare_vendor: bool = False, accuracy_data: Path | None = None,
              repeats: int = 1, image: Path | None = None, quiet: bool = False,
              row_timeout: float = 600.0) -> dict[str, Any]:
    """Benchmark models on this device and set the results beside the papers' timing claims.

    Every row (model x backend x precision x threads) runs in its own process: load time, first
    inference, warm-up, timed runs; median, p90, p99, min, max, mean, IQR and noise (IQR/median);
    throughput (OpenVINO also with the THROUGHPUT hint and async requests); peak RSS; model size;
    edgecell's overhead over the bare backend call; for task models the pre-processing /
    inference / post-processing split on a sample image.

    Args (option help for `edgecell bench`):
        models: model files or folders. Default: the shipped models (edge/models). Each file
            brings its siblings: x_int8.tflite, x_fp32.tflite, x_fp32.xml, x_int8.onnx ... beside it.
        backends: only these backends (litert, openvino, onnxruntime, tflite-runtime, tf.lite).
            Default: every installed backend that reads each file. A named backend that is not
            installed gives a "skipped" row with the pip extra to install.
        precisions: only these precisions (fp32, int8, fp16), from the file name or the sidecar.
        threads: thread counts to measure. Default: 1 and all cores.
        iterations: timed runs per row (default 100).
        seconds: time budget per row for the timed runs instead of a fixed number of runs.
        warmup: untimed runs before timing (default 10).
        profile: raspberry-pi | jetson | x86-legacy | x86-vnni: sensible formats, backends and threads for
            that device (explicit options win).
        out_dir: where results.jsonl (appended row by row), results.json, results.csv,
            results.md and latency.png go.
        formats: any of table (terminal), json, csv, md, png.
        compare_vendor: also run OpenVINO's benchmark_app on each IR row's model and thread
            count (our median should be within 10 % of its median), and a bare loop around the
            backend call against the harness (overhead should be <= 2 %).
        accuracy_data: results of `edgecell eval` (a JSON/JSONL file with model + accuracy) to add an
            accuracy column.
        repeats: run the whole matrix this many times, alternating the row order.
        image: the sample image for the pipeline split (default: a shipped sample, else synthetic).
        quiet: no progress bar and no terminal table.
        row_timeout: seconds after which a row's process is killed and the row marked failed.

    Returns: {"rows": [...], "aggregate": [...], "int8_vs_fp32": [...], "device": {...},
    "claims": [...], "vendor": [...] or None, "counts": {"ok", "wrong", "skipped", "failed"}
    ("wrong": rows whose answer on the sample differs from the reference backend's),
    "files": {format: path}}.

    Raises: edgecell.errors.ModelError (one line) when there is no model file to benchmark.
    Bad model files and missing backends do not raise: they are "skipped" rows.
    """
    from edgecell.benchmarks import report
    from edgecell.benchmarks.profiles import apply_profile

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt_map = None
    if profile:
        opts = apply_profile(profile, backends=backends, precisions=precisions, threads=threads)
        backends, precisions, threads, fmt_map = opts["backends"], opts["precisions"], opts["threads"], opts["formats"]
    planned = plan(models, backends=backends, precisions=precisions, threads=threads, iterations=iterations,
                   seconds=seconds, warmup=warmup, image=str(image) if image else None, formats=fmt_map)
    if not planned:
        from edgecell.errors import ModelError

        where = ", ".join(str(m) for m in models) if models else str(SHIPPED_DIR)
        raise ModelError(f"no model files to benchmark in {where} (expected .tflite, .xml or .onnx"
                         f"{', with precision ' + '/'.join(precisions) if precisions else ''})")
    results = out_dir / "results.jsonl"
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    if quiet or not planned:
        rows = run_matrix(planned, results, repeats=repeats, timeout=row_timeout)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]bench[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), transient=True) as progress:
            task = progress.add_task("", total=len(planned) * max(1, repeats))

            def on_row(row, done, total):
                med = (row.get("latency_ms") or {}).get("median")
                what = f"{med:.2f} ms" if med is not None else row.get("status")
                progress.update(task, completed=done,
                                description=f"{row.get('name')} {row.get('backend')} t{row.get('threads')}: {what}")

            rows = run_matrix(planned, results, repeats=repeats, on_row=on_row, timeout=row_timeout)

    vendor_rows = None
    if compare_vendor:
        from edgecell.benchmarks.vendor import compare_all

        vendor_rows = compare_all(rows, iterations=max(iterations, 50))
        with open(out_dir / "vendor.json", "w") as fh:
            json.dump(vendor_rows, fh, indent=2, default=str)
    accuracy = report.load_accuracy(accuracy_data) if accuracy_data else None
    result = report.build(rows, vendor=vendor_rows, accuracy=accuracy,
                          meta={"started": started, "iterations": iterations, "seconds": seconds,
                                "warmup": warmup, "repeats": repeats, "profile": profile,
                                "results_jsonl": str(results)})
    result["files"] = report.write(result, out_dir, formats=[f for f in formats if f != "table"])
    result["files"]["jsonl"] = str(results)
    if "table" in formats and not quiet:
        report.print_table(result)
    return result
