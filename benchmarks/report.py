"""Benchmark reports: terminal table (rich), JSON, CSV, Markdown and a PNG chart of the latency
distribution of every row; the papers' claims beside the measurements; the device description.

matplotlib is imported only when a PNG is written (`pip install 'edgecell[plots]'`).
"""

from __future__ import annotations

import csv
import json
import os
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from edgecell.benchmarks import stats

CSV_FIELDS = ["name", "family", "format", "backend", "backend_version", "precision", "threads", "repeat",
              "status", "median_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "mean_ms", "iqr_ms", "noise",
              "n", "sync_fps", "async_fps", "async_requests", "raw_median_ms", "overhead_ratio",
              "load_ms", "first_ms", "peak_rss_mb", "size_bytes", "pre_ms", "inference_ms", "post_ms",
              "pipeline_ms", "accuracy", "ov_inference_precision", "input_sha1", "reason", "install", "model"]


# --------------------------------------------------------------------------------------------
# device


def describe_device() -> dict[str, Any]:
    """`edgecell.device.describe_device()` when available, else a minimal description here."""
    try:
        from edgecell.device import describe_device as full

        info = dict(full())
        info.setdefault("source", "edgecell.device")
        return info
    except Exception as exc:  # module not there yet, or unreadable sensors
        info = {"source": f"fallback ({type(exc).__name__}: edgecell.device unavailable)",
                "machine": platform.machine(), "system": platform.system(), "release": platform.release(),
                "python": platform.python_version(), "cores": os.cpu_count()}
        try:
            text = Path("/proc/cpuinfo").read_text()
            for line in text.splitlines():
                if line.startswith(("model name", "Model")) and "cpu_model" not in info:
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                if line.startswith(("flags", "Features")) and "isa" not in info:
                    flags = set(line.split(":", 1)[1].split())
                    info["isa"] = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "neon", "asimd")
                                   if f in flags]
        except OSError:
            pass
        return info


def device_line(dev: dict[str, Any]) -> str:
    parts = []
    for key in ("model", "board", "cpu_model", "cpu"):
        if dev.get(key):
            parts.append(str(dev[key]))
            break
    cores = dev.get("cores") or dev.get("cpu_count") or dev.get("logical_cores")
    if cores:
        parts.append(f"{cores} cores")
    isa = dev.get("isa") or dev.get("flags")
    if isinstance(isa, dict):
        isa = [k for k, v in isa.items() if v]
    if isa:
        parts.append("ISA " + " ".join(str(x) for x in isa))
    for key, unit in (("freq_mhz", " MHz"), ("frequency_mhz", " MHz"), ("memory_gb", " GB RAM"),
                      ("temperature_c", " °C")):
        if dev.get(key):
            parts.append(f"{dev[key]}{unit}")
    if dev.get("throttling") or dev.get("throttled"):
        parts.append(f"throttling: {dev.get('throttling') or dev.get('throttled')}")
    return ", ".join(parts) or platform.platform()


# --------------------------------------------------------------------------------------------
# building the result


def _key(r: dict[str, Any]) -> tuple:
    return (r.get("name"), r.get("format"), r.get("backend"), r.get("threads"))


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (model file, backend, threads) across repeats: median of the row medians and
    their spread (the run-to-run noise that a single row's IQR does not show)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok":
            groups[_key(r)].append(r)
    out = []
    for key, rs in groups.items():
        meds = [r["latency_ms"]["median"] for r in rs]
        p90s = [r["latency_ms"]["p90"] for r in rs]
        entry = {"name": key[0], "format": key[1], "backend": key[2], "threads": key[3],
                 "family": rs[0].get("family"), "precision": rs[0].get("precision"), "repeats": len(rs),
                 "median_ms": stats.median(meds), "p90_ms": stats.median(p90s),
                 "median_range_ms": [min(meds), max(meds)],
                 "repeat_spread": (max(meds) - min(meds)) / stats.median(meds) if len(meds) > 1 else None}
        ov = [r["overhead_ratio"] for r in rs if r.get("overhead_ratio")]
        entry["overhead_ratio"] = stats.median(ov) if ov else None
        out.append(entry)
    return out


def precision_ratios(agg: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """INT8 median / FP32 median for the same family, format, backend and threads (< 1: INT8 faster)."""
    by = {}
    for a in agg:
        by[(a["family"], a["format"], a["backend"], a["threads"], a["precision"])] = a
    out = []
    for (fam, fmt, backend, threads, prec), a in by.items():
        if prec != "int8":
            continue
        b = by.get((fam, fmt, backend, threads, "fp32"))
        if b:
            out.append({"family": fam, "format": fmt, "backend": backend, "threads": threads,
                        "int8_ms": a["median_ms"], "fp32_ms": b["median_ms"],
                        "int8_over_fp32": stats.ratio(a["median_ms"], b["median_ms"])})
    return out


def _metric(entry: dict[str, Any]) -> float | None:
    """The headline accuracy of one `edgecell eval` entry: top-1 (classification), mAP@0.5
    (detection), or a plain `accuracy`."""
    for key in ("accuracy", "top1"):
        if isinstance(entry.get(key), (int, float)):
            return float(entry[key])
    m = entry.get("map50")
    if isinstance(m, dict) and isinstance(m.get("mean"), (int, float)):
        return float(m["mean"])
    if isinstance(entry.get("metrics"), dict):
        return _metric(entry["metrics"])
    return None


def load_accuracy(path: Path | None) -> dict[str, float]:
    """Accuracy by model from `edgecell eval` output. Understands the eval report
    ({"models": {key: {"path", "backend", "top1" | "map50": {"mean"}}}}), a JSON object
    {model: accuracy}, and a list / JSONL of {"model": ..., "accuracy": ...}. Keys: "file|backend",
    file name, path and stem, so a row finds the value for its own file and backend."""
    if not path:
        return {}
    p = Path(path)
    if p.is_dir():
        found = [q for q in sorted(p.glob("*.json")) if q.name in ("classification.json", "detection.json", "gate.json")]
        if not found:
            raise FileNotFoundError(f"{p}: no edgecell eval report (classification.json / detection.json) in this folder")
        out: dict[str, float] = {}
        for q in found:
            out.update(load_accuracy(q))
        return out
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    out = {}
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        for key, entry in data["models"].items():
            if not isinstance(entry, dict):
                continue
            value = _metric(entry)
            if value is None:
                continue
            model = entry.get("path") or entry.get("file") or key
            for k in (model, Path(model).name, Path(model).stem, key):
                out.setdefault(str(k), value)
                if entry.get("backend"):
                    out[f"{k}|{entry['backend']}"] = value
        return out
    items = data.get("results", data) if isinstance(data, dict) else data
    if isinstance(items, dict):
        for k, v in items.items():
            if isinstance(v, (int, float)):
                out[k] = float(v)
            elif isinstance(v, dict) and _metric(v) is not None:
                out[k] = _metric(v)
        return out
    for it in items:
        if isinstance(it, dict) and it.get("model") is not None and _metric(it) is not None:
            out[str(it["model"])] = _metric(it)
            if it.get("backend"):
                out[f"{it['model']}|{it['backend']}"] = _metric(it)
    return out


def _accuracy_for(row: dict[str, Any], accuracy: dict[str, float]) -> float | None:
    model = row.get("model") or ""
    names = (model, Path(model).name, Path(model).stem, row.get("name"))
    for k in names:
        if f"{k}|{row.get('backend')}" in accuracy:
            return accuracy[f"{k}|{row.get('backend')}"]
    for k in names:
        if k in accuracy:
            return accuracy[k]
    return None


def build(rows: list[dict[str, Any]], *, vendor: list[dict[str, Any]] | None = None,
          accuracy: dict[str, float] | None = None, meta: dict[str, Any] | None = None,
          device: dict[str, Any] | None = None) -> dict[str, Any]:
    from edgecell.benchmarks.claims import compare, load_claims

    try:
        claims = compare(load_claims(), rows)
        claims_error = None
    except Exception as exc:
        claims, claims_error = [], str(exc)
    if accuracy:
        for r in rows:
            r["accuracy"] = _accuracy_for(r, accuracy)
    agg = aggregate(rows)
    try:
        from edgecell.backends import backend_versions

        versions = backend_versions()
    except Exception:
        versions = {}
    hashes = defaultdict(set)
    for r in rows:
        if r.get("status") == "ok" and r.get("input_sha1"):
            hashes[r.get("family")].add(r["input_sha1"])
    return {
        "device": device or describe_device(),
        "versions": versions,
        "meta": meta or {},
        "rows": rows,
        "aggregate": agg,
        "int8_vs_fp32": precision_ratios(agg),
        "claims": claims,
        "claims_error": claims_error,
        "vendor": vendor,
        "same_input": {fam: len(h) == 1 for fam, h in hashes.items()},
        "counts": {s: sum(1 for r in rows if r.get("status") == s) for s in ("ok", "wrong", "skipped", "failed")},
    }


# --------------------------------------------------------------------------------------------
# flat rows


def flat_row(r: dict[str, Any]) -> dict[str, Any]:
    lat = r.get("latency_ms") or {}
    raw = r.get("raw_latency_ms") or {}
    pipe = r.get("pipeline_ms") or {}
    asy = r.get("async") or {}
    out = {k: r.get(k) for k in ("name", "family", "format", "backend", "backend_version", "precision", "threads",
                                 "repeat", "status", "sync_fps", "overhead_ratio", "load_ms", "first_ms",
                                 "peak_rss_mb", "size_bytes", "accuracy", "ov_inference_precision", "input_sha1",
                                 "reason", "install", "model")}
    for k in ("median", "p90", "p99", "min", "max", "mean", "iqr"):
        out[f"{k}_ms"] = lat.get(k)
    out["noise"] = lat.get("noise")
    out["n"] = lat.get("n")
    out["raw_median_ms"] = raw.get("median")
    out["async_fps"] = asy.get("fps")
    out["async_requests"] = asy.get("requests")
    for k, name in (("pre", "pre_ms"), ("inference", "inference_ms"), ("post", "post_ms"), ("total", "pipeline_ms")):
        out[name] = (pipe.get(k) or {}).get("median")
    return out


def _f(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ms(v: float | None) -> str:
    """Milliseconds with three significant figures or so: 0.0213, 1.54, 42.8, 130."""
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


# --------------------------------------------------------------------------------------------
# writers


def write(result: dict[str, Any], out_dir: Path, formats: Iterable[str] = ("json", "csv", "md", "png")) -> dict[str, str]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    formats = list(formats)
    if "json" in formats:
        p = out_dir / "results.json"
        _atomic_text(p, json.dumps(result, indent=2, default=str))
        files["json"] = str(p)
    if "csv" in formats:
        p = out_dir / "results.csv"
        tmp = p.with_name(f".{p.name}.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            for r in result["rows"]:
                w.writerow(flat_row(r))
        os.replace(tmp, p)
        files["csv"] = str(p)
    if "md" in formats:
        p = out_dir / "results.md"
        _atomic_text(p, markdown(result))
        files["md"] = str(p)
    if "png" in formats:
        add_plot(files, plot, result, out_dir / "latency.png")
    return files


def add_plot(files: dict[str, str], draw, result: dict[str, Any], path: Path) -> None:
    """Draw `result` to `path` with `draw` and record it as `files["png"]`; without matplotlib
    (the device install) record why under `png_error` instead: the other formats still stand."""
    try:
        png = draw(result, path)
        if png:
            files["png"] = str(png)
    except ImportError:
        files["png_error"] = "matplotlib not installed: pip install 'edgecell[plots]'"


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def markdown(result: dict[str, Any]) -> str:
    dev = result.get("device") or {}
    lines = ["# edgecell bench", "", f"**Device:** {device_line(dev)}", ""]
    if result.get("versions"):
        lines += ["**Backends:** " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()), ""]
    meta = result.get("meta") or {}
    if meta:
        lines += [f"Timed runs per row: {meta.get('seconds') and str(meta['seconds']) + ' s budget' or meta.get('iterations')}, "
                  f"warm-up {meta.get('warmup')}, repeats {meta.get('repeats')}; each row in its own process. "
                  "Latency of one `Session.run` (float32 in/out); raw = the bare backend call on the same prepared "
                  "input; noise = IQR / median.", ""]
    lines += ["## Rows", "",
              "| model | backend | prec | threads | median ms | p90 ms | p99 ms | IQR ms | noise | fps (async) | ours/raw | load ms | first ms | peak RSS MB | size KB | pipeline pre/inf/post ms | acc | status |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in result["rows"]:
        f = flat_row(r)
        fps = _f(f["sync_fps"], 1) + (f" ({_f(f['async_fps'], 1)}, {f['async_requests']} req)" if f["async_fps"] else "")
        pipe = "/".join(_f(f[k]) for k in ("pre_ms", "inference_ms", "post_ms")) if f["pipeline_ms"] is not None else "-"
        status = f["status"] if f["status"] == "ok" else f"{f['status']}: {f.get('reason') or ''}".replace("|", "/")
        if f.get("install") and f["status"] != "ok":
            status += f" ({f['install']})"
        prec = f["precision"]
        ovp = {"bf16": "bf16", "bfloat16": "bf16", "f16": "fp16", "float16": "fp16"}.get(str(f.get("ov_inference_precision")))
        if ovp and prec == "fp32":
            prec = f"fp32 (runs {ovp})"
        lines.append(f"| {f['name']}.{f['format'] or ''} | {f['backend']} | {prec} | {_f(f['threads'])} | "
                     f"{_f(f['median_ms'], 3)} | {_f(f['p90_ms'], 3)} | {_f(f['p99_ms'], 3)} | {_f(f['iqr_ms'], 3)} | "
                     f"{_f(f['noise'])} | {fps} | {_f(f['overhead_ratio'])} | {_f(f['load_ms'], 1)} | {_f(f['first_ms'], 1)} | "
                     f"{_f(f['peak_rss_mb'], 0)} | {_f((f['size_bytes'] or 0) / 1024, 1) if f['size_bytes'] else '-'} | {pipe} | "
                     f"{_f(f['accuracy'], 3)} | {status} |")
    agg = [a for a in result.get("aggregate", []) if a["repeats"] > 1]
    if agg:
        lines += ["", "## Across repeats (run-to-run noise)", "", "| model | backend | threads | median of medians ms | range ms | spread |",
                  "|---|---|---:|---:|---|---:|"]
        for a in agg:
            lines.append(f"| {a['name']}.{a['format']} | {a['backend']} | {a['threads']} | {_f(a['median_ms'], 3)} | "
                         f"{_f(a['median_range_ms'][0], 3)}-{_f(a['median_range_ms'][1], 3)} | {_f(a['repeat_spread'])} |")
    if result.get("int8_vs_fp32"):
        lines += ["", "## INT8 vs FP32", "", "| family | format | backend | threads | INT8 ms | FP32 ms | INT8/FP32 |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for c in result["int8_vs_fp32"]:
            lines.append(f"| {c['family']} | {c['format']} | {c['backend']} | {c['threads']} | {_f(c['int8_ms'], 3)} | "
                         f"{_f(c['fp32_ms'], 3)} | {_f(c['int8_over_fp32'])} |")
    if result.get("vendor"):
        lines += ["", "## Checked against the vendors' tools", "",
                  "benchmark_app: ratio = our Session.run median / benchmark_app median (raw = the bare infer call); "
                  "bare loop: ratio = harness per-call mean / bare-loop mean, median of adjacent pairs (pair IQR = "
                  "how much the pairs disagree: the noise floor of this check; timer cost = the timing loop around a no-op "
                  "as a share of the median call, the noise-free estimate of the harness's overhead).", "",
                  "| model | backend | threads | check | ours ms | reference ms | ratio | target | pass |",
                  "|---|---|---:|---|---:|---:|---:|---|---|"]
        for v in result["vendor"]:
            lines.append(f"| {Path(v.get('model', '')).name} | {v.get('backend')} | {v.get('threads')} | {v.get('check')} | "
                         f"{_f(v.get('ours_ms'), 4)} | {_f(v.get('reference_ms'), 4)} | {_f(v.get('ratio'), 3)}"
                         + (f" (pair IQR {_f((v.get('detail') or {}).get('ratio_iqr'), 2)}; timer cost "
                            f"{100 * (v.get('timer_cost_fraction') or 0):.2f} %)" if v.get('detail') else "")
                         + (f" (raw {_f(v.get('raw_ratio'), 3)}; pair IQR {_f(v.get('pair_ratio_iqr'), 2)})"
                            if v.get('raw_ratio') else "") + " | "
                         f"{v.get('target')} | {v.get('pass') if v.get('error') is None else 'error: ' + str(v.get('error'))[:80]} |")
    lines += ["", "## The papers' claims beside this device", "",
              "Measured = the best configuration on this device (median of its row medians over repeats); "
              "FP32 = the best FP32 configuration (the papers ran FP32 models on a GPU).", "",
              "| claim | published | hardware | source | measured here ms | ratio measured/claimed | row | best FP32 ms (ratio, row) |",
              "|---|---:|---|---|---:|---:|---|---|"]
    for c in result.get("claims", []):
        pub = f"{'< ' if c['bound'] == '<' else ''}{c['value_ms']:g} ms ({c['what']})"
        meas = _f(c.get("measured_ms"), 2) if c.get("measured_ms") is not None else (c.get("note") or "-")
        lines.append(f"| {c['model']} | {pub} | {c['hardware']} | {c['citation']} ({c['source']}) | {meas} | "
                     f"{_f(c.get('ratio'), 3)} | {c.get('row') or '-'} | "
                     + (f"{_f(c.get('fp32_ms'), 2)} ({_f(c.get('fp32_ratio'), 3)}, {c.get('fp32_row')})" if c.get("fp32_ms") else "-")
                     + " |")
    if result.get("claims_error"):
        lines += ["", f"Claims file problem: {result['claims_error']}"]
    lines += ["", "Published figures were measured on desktop GPUs; rows here are CPU. Differences under ~20 % "
              "between rows are within the noise of a shared machine unless the repeats say otherwise.", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Box plots of every ok row's timings (log scale), one box per row."""
    rows = [r for r in result["rows"] if r.get("status") == "ok" and r.get("timings_ms")]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['name']}.{r.get('format')} {r['backend']} t{r['threads']}" + (f" #{r['repeat']}" if r.get("repeat") else "")
              for r in rows]
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.38 * len(rows) + 1.2)))
    kw = {"whis": (1, 99), "showfliers": True, "flierprops": {"markersize": 2, "alpha": 0.4}}
    try:
        ax.boxplot([r["timings_ms"] for r in rows], orientation="horizontal", **kw)  # matplotlib >= 3.10
    except TypeError:
        ax.boxplot([r["timings_ms"] for r in rows], vert=False, **kw)
    ax.set_yticks(range(1, len(rows) + 1), labels, fontsize=7)
    ax.invert_yaxis()  # first row at the top, as in the tables
    ax.set_xscale("log")
    ax.set_xlabel("latency per call, ms (box: IQR, line: median, whiskers: p1-p99)")
    ax.set_title(f"edgecell bench - {device_line(result.get('device') or {})}"[:110], fontsize=9)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def print_table(result: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    console.print(f"[bold]Device:[/] {device_line(result.get('device') or {})}")
    compact = console.width < 130  # a Pi's serial console or an 80-column terminal: the essentials only
    from rich import box

    t = Table(show_lines=False, title="edgecell bench (ms per call; noise = IQR/median)", pad_edge=False,
              box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD, padding=(0, 1), collapse_padding=compact)
    cols = [("model", "left"), ("backend", "left"), ("prec", "left"), ("thr", "right"), ("median", "right"),
            ("p90", "right"), ("noise", "right"), ("o/raw" if compact else "ours/raw", "right"), ("status", "left")]
    short = {"onnxruntime": "ort", "tflite-runtime": "tflite-rt", "openvino": "ov"} if compact else {}
    if not compact:
        cols[6:6] = [("p99", "right")]
        cols[-1:-1] = [("fps", "right"), ("load", "right"), ("RSS MB", "right"), ("pipeline", "right")]
    for col, just in cols:
        t.add_column(col, justify=just, no_wrap=col != "status", overflow="ellipsis" if col != "status" else "fold",
                     max_width=(16 if compact else 30) if col == "model" else None)
    problems: list[str] = []
    for r in result["rows"]:
        f = flat_row(r)
        status = {"ok": "ok", "skipped": "[yellow]skipped[/]", "failed": "[red]failed[/]",
                  "wrong": "[bold red]WRONG[/]"}.get(f["status"], str(f["status"]))
        if compact:
            status = {"ok": "ok", "skipped": "[yellow]skip[/]", "failed": "[red]FAIL[/]",
                      "wrong": "[bold red]WRONG[/]"}.get(f["status"], status)
        if f["status"] != "ok":
            problems.append(f"{f['name']}.{f['format'] or ''} {f['backend']} t{_f(f['threads'])}: {f['status']}: "
                            f"{f.get('reason') or ''}" + (f" -> {f['install']}" if f.get("install") else ""))
        fps = _f(f["sync_fps"], 0) + (f"/{_f(f['async_fps'], 0)}a" if f["async_fps"] else "")
        label = f"{f['name']}.{f['format'] or ''}"
        if compact and len(label) > 16:
            label = label[:6] + "…" + label[-9:]  # keep the precision and format at the end
        values = {"model": label, "backend": short.get(f["backend"], str(f["backend"])),
                  "prec": str(f["precision"]),
                  "thr": _f(f["threads"]), "median": _ms(f["median_ms"]), "p90": _ms(f["p90_ms"]),
                  "p99": _ms(f["p99_ms"]), "noise": _f(f["noise"]), "ours/raw": _f(f["overhead_ratio"]), "o/raw": _f(f["overhead_ratio"]),
                  "fps": fps, "load": _f(f["load_ms"], 0), "RSS MB": _f(f["peak_rss_mb"], 0),
                  "pipeline": _f(f["pipeline_ms"], 2), "status": status}
        t.add_row(*[values[c] for c, _ in cols])
    console.print(t)
    for line in problems:
        console.print(line, markup=False, highlight=False)
    if result.get("int8_vs_fp32"):
        console.print("INT8/FP32: " + "; ".join(f"{c['family']} {c['backend']} t{c['threads']}: {c['int8_over_fp32']:.2f}"
                                              for c in result["int8_vs_fp32"]))
    for c in result.get("claims", []):
        meas = f"{c['measured_ms']:.2f} ms (x{c['ratio']:.2f}, {c['row']})" if c.get("measured_ms") is not None else c.get("note")
        console.print(f"claim {c['id']}: {'< ' if c['bound'] == '<' else ''}{c['value_ms']:g} ms {c['what']} on "
                      f"{c['hardware']} [{c['source']}] -> here: {meas}")


def main(argv: list[str] | None = None) -> int:
    """Rebuild the reports from a results.jsonl (e.g. after an interrupted run):

        python -m edgecell.benchmarks.report OUT/results.jsonl [--vendor OUT/vendor.json] [--accuracy EVAL]
    """
    import argparse

    from edgecell.benchmarks.matrix import read_jsonl

    p = argparse.ArgumentParser(prog="python -m edgecell.benchmarks.report", description=main.__doc__)
    p.add_argument("results", type=Path)
    p.add_argument("--vendor", type=Path, default=None)
    p.add_argument("--accuracy", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="folder for the reports (default: beside results)")
    p.add_argument("--no-table", action="store_true")
    args = p.parse_args(argv)
    rows = read_jsonl(args.results)
    vendor = json.loads(args.vendor.read_text()) if args.vendor else None
    result = build(rows, vendor=vendor, accuracy=load_accuracy(args.accuracy) if args.accuracy else None,
                   meta={"results_jsonl": str(args.results), "rebuilt": True,
                         "repeats": 1 + max((r.get("repeat") or 0 for r in rows), default=0)})
    result["files"] = write(result, args.out or args.results.parent)
    if not args.no_table:
        print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
