"""The `edgecell` command line. User errors print one line (`edgecell: error: ...`) and exit
non-zero; tracebacks are for bugs only (set EDGECELL_DEBUG=1 to see them for user errors too)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from edgecell import __version__
from edgecell.errors import EdgecellError

from edgecell.resources import resolve_model_path, shipped_models, shipped_path, shipped_samples  # noqa: F401

DEFAULT_MODEL = "cells"
DEFAULT_SAMPLES = shipped_samples("bccd")

app = typer.Typer(
    name="edgecell",
    help="Run medical and retail image models on small devices (LiteRT, OpenVINO, ONNX Runtime).\n\n"
         "Try `edgecell run` (counts blood cells in the shipped sample smears), `edgecell info`, "
         "`edgecell models`.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _parse_thresholds(values: list[str] | None) -> dict[str, float] | None:
    if not values:
        return None
    out = {}
    for item in ",".join(values).split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise EdgecellError(f"--threshold {item!r}: expected CLASS=VALUE, e.g. --threshold RBC=0.5")
    return out


@app.command()
def run(
    ctx: typer.Context,
    model: str = typer.Argument(DEFAULT_MODEL, help="Model file (.tflite, .xml, .onnx), a shipped model name, "
                                "or a bundle (folder, .tar.gz or install prefix) whose configured run is used."),
    source: Optional[str] = typer.Argument(None, help="Image, folder (recursive), video file, camera index or "
                                           "rtsp:// / http:// URL. Default: the shipped sample images."),
    camera: Optional[int] = typer.Option(None, "--camera", help="Read camera N (same as SOURCE=N)."),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto, litert, openvino, onnxruntime, tflite-runtime, tf.lite"),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", help="Inference threads (default: the backend's choice)."),
    device: str = typer.Option("CPU", "--device", help="OpenVINO device: CPU, GPU, NPU, AUTO."),
    providers: Optional[str] = typer.Option(None, "--providers", help="ONNX Runtime providers, comma-separated, "
                                            "e.g. TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for overlays, results.jsonl and results.csv."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line per image to stdout (for machines)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after N images or frames."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Process at most this many frames per second."),
    threshold: Optional[List[str]] = typer.Option(None, "--threshold", help="Per-class confidence, e.g. RBC=0.5 (repeatable)."),
    tiles: Optional[int] = typer.Option(None, "--tiles", help="Cells: split each image into N x N overlapping tiles (0 = auto)."),
    top_k: int = typer.Option(3, "--top-k", help="Classifiers: how many classes to report."),
    min_confidence: Optional[float] = typer.Option(None, "--min-confidence", help="Classifiers: below this the "
                                                   "image is marked uncertain, for a person to check."),
    show: bool = typer.Option(False, "--show", help="Show the overlay in a window (needs a desktop and GUI OpenCV; "
                              "else use --serve)."),
    serve: Optional[str] = typer.Option(None, "--serve", help="Show the run on a web page at [HOST:]PORT, e.g. "
                                        "8080 (this machine) or 0.0.0.0:8080 (other devices, with a printed token)."),
    gate: Optional[str] = typer.Option(None, "--gate", help="A utility-gate model run first: is the image still "
                                       "useful to the task model?"),
    gate_policy: str = typer.Option("reject", "--gate-policy", help="reject (skip the task model, list the image "
                                    "with the reason), flag (run it, mark the result) or pass (record the score)."),
    gate_threshold: Optional[float] = typer.Option(None, "--gate-threshold", help="Utility below this is 'not "
                                                   "useful' (default: the gate model's own)."),
) -> None:
    """Run a model on images, a folder, a video or a camera; print results and write overlays.

    With no arguments: counts blood cells in the shipped sample smears with the shipped INT8 model.
    Given a bundle, runs its configured pipeline after verifying every file (options given here win).
    """
    from edgecell.bundle import is_bundle

    if is_bundle(Path(model)):
        from typer import _click as click

        from edgecell.bundle import run_bundle_args

        bundle_model, bundle_source, bundle_options = run_bundle_args(Path(model))
        given = {name for name in ctx.params
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
        params = dict(ctx.params, model=str(bundle_model))
        if "source" not in given and "camera" not in given and bundle_source is not None:
            params["source"] = bundle_source
        for name, value in bundle_options.items():
            if name in params and name not in given:
                params[name] = Path(value) if name == "out" and value is not None else value
        return _run(**params)
    return _run(**ctx.params)


def _run(model: str, source: Optional[str], camera: Optional[int], backend: str, threads: Optional[int],
         device: str, providers: Optional[str], out: Optional[Path], as_json: bool, max_frames: Optional[int],
         fps: Optional[float], threshold: Optional[List[str]], tiles: Optional[int], top_k: int,
         min_confidence: Optional[float], show: bool, serve: Optional[str], gate: Optional[str], gate_policy: str,
         gate_threshold: Optional[float]) -> None:
    """The run loop behind `edgecell run` (see its options)."""
    from edgecell.model import load_model
    from edgecell.pipeline import Record, annotate, predict, predict_gated
    from edgecell.sinks import JsonlWriter, overlay_name, write_text_atomic
    from edgecell.sources import count_frames, describe_source, iter_frames
    from edgecell.images import write_image_atomic

    if camera is not None:
        source = str(camera)
    if source is None:
        source = str(DEFAULT_SAMPLES)
    kind = describe_source(source)
    if show or serve:
        from edgecell.live import check_display_options

        check_display_options(show=show, serve=serve)
    loaded = load_model(resolve_model_path(model, backend), backend, threads=threads, device=device,
                        providers=providers.split(",") if providers else None)
    options = {"top_k": top_k}
    if min_confidence is not None:
        options["min_confidence"] = min_confidence
    thresholds = _parse_thresholds(threshold)
    if thresholds:
        unknown = set(thresholds) - set(loaded.info.labels)
        if unknown and loaded.info.labels:
            raise EdgecellError(f"--threshold names {', '.join(sorted(unknown))}; this model's classes are "
                                f"{', '.join(loaded.info.labels)}")
        options["thresholds"] = thresholds
    if tiles is not None:
        options["tiles"] = tiles
    gate_model = None
    if gate:
        from edgecell.tasks.common import require_task
        from edgecell.tasks.gate import POLICIES

        if gate_policy not in POLICIES:
            raise EdgecellError(f"--gate-policy {gate_policy!r}; expected one of {', '.join(POLICIES)}")
        gate_model = load_model(resolve_model_path(gate, backend), backend, threads=threads, device=device)
        require_task(gate_model.info, "gate")
        if gate_threshold is not None:
            options["gate_threshold"] = gate_threshold
    if threshold and isinstance(threshold, str):
        threshold = [threshold]

    err = _stderr_console()
    if out:
        out.mkdir(parents=True, exist_ok=True)
    writer = JsonlWriter(out / "results.jsonl" if out else None, sys.stdout if as_json else None)
    records: list[dict] = []
    failures = 0
    total = count_frames(source)
    if max_frames is not None and total is not None:
        total = min(total, max_frames)
    err.print(f"[bold]{loaded.info.name or loaded.path.name}[/] ({loaded.info.task}, {loaded.info.precision}) "
              f"on {loaded.session.backend} <- {kind} {source}", highlight=False)
    live = None
    if serve:
        from functools import partial

        from edgecell.live import start_live_view

        live = start_live_view(serve, out=out, model=loaded, gate=gate_model, source=f"{kind} {source}",
                               print_line=lambda line: err.print(line, highlight=False, soft_wrap=True))
    progress = _progress(err, total, disable=(kind == "image"))
    started = time.perf_counter()
    window = None
    try:
        with progress:
            task_id = progress.add_task("images", total=total)
            for frame in iter_frames(source, max_frames=max_frames, fps=fps):
                result = overlay = None
                if frame.image is None:
                    record = Record(frame.name, ok=False, task=loaded.info.task, error=frame.error)
                else:
                    try:
                        if gate_model is not None:
                            gate_result, result, timings, action = predict_gated(
                                gate_model, loaded, frame.image, policy=gate_policy, **options)
                            record = Record(frame.name, ok=True, task=loaded.info.task, result=result,
                                            timings=timings, gate=gate_result, action=action)
                        else:
                            result, timings = predict(loaded, frame.image, **options)
                            record = Record(frame.name, ok=True, task=loaded.info.task, result=result, timings=timings)
                        if result is not None and (out or show):
                            overlay = annotate(loaded, frame.image, result)
                            if out:
                                record.overlay = str(write_image_atomic(out / overlay_name(frame.name, frame.index), overlay))
                            if show:
                                window = _show(overlay, window)
                    except EdgecellError as exc:
                        record = Record(frame.name, ok=False, task=loaded.info.task, error=str(exc))
                if not record.ok:
                    failures += 1
                    progress.console.print(f"[red]edgecell: error:[/] {record.error}", highlight=False, soft_wrap=True)
                row = record.to_dict()
                writer.write(row)
                records.append(row)
                if live is not None:  # the overlay drawn here, else only if a viewer gets this frame
                    live.publish(row, frame.image, overlay if overlay is not None or result is None
                                 else partial(annotate, loaded, frame.image, result))
                progress.advance(task_id)
    except KeyboardInterrupt:
        err.print("interrupted; results so far are written")
    finally:
        writer.close()
        if live is not None:
            live.close()
        if out and records:
            write_text_atomic(out / "results.csv", _records_csv(records))
    elapsed = time.perf_counter() - started
    if not as_json and (kind != "image" or failures == 0):
        _print_summary(records, elapsed)
    if out:
        err.print(f"results: {out / 'results.jsonl'}, {out / 'results.csv'}" + (", overlays" if records else ""))
    if failures:
        if kind != "image":
            err.print(f"{failures} of {len(records)} inputs failed")
        raise typer.Exit(1)


def _progress(console, total, disable):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=disable or not console.is_terminal)


def _show(image, window):
    import cv2

    try:
        cv2.imshow("edgecell", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.waitKey(1)
    except cv2.error:
        raise EdgecellError("--show needs a display and an OpenCV with GUI support "
                            "(opencv-python instead of opencv-python-headless); use --out DIR instead") from None
    return True


def _flat_result(result: dict) -> dict:
    """Flatten a task result for the CSV: counts per class, label/confidence, ..."""
    row = {}
    for key, value in result.items():
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(v, (list, dict)):
                    row[f"{key}_{k}"] = v
        elif not isinstance(value, list):
            row[key] = value
    return row


def _records_csv(records: list[dict]) -> str:
    rows = []
    for r in records:
        row = {"source": r["source"], "ok": r["ok"], "error": r.get("error", "")}
        if "gate" in r:
            row.update({"action": r["action"], "utility": r["gate"]["utility"], "gate_reason": r["gate"].get("reason", "")})
        row.update(_flat_result(r.get("result") or {}))
        row.update(r.get("timings", {}))
        rows.append(row)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _print_summary(records: list[dict], elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ok = [r for r in records if r["ok"] and r.get("result") is not None]
    table = Table(show_lines=False, title=f"{len(ok)} of {len(records)} inputs in {elapsed:.1f} s")
    table.add_column("source", overflow="fold")
    counts_mode = bool(ok) and "counts" in ok[0]["result"]
    classes = list(ok[0]["result"]["counts"]) if counts_mode else []
    if counts_mode:
        for c in classes:
            table.add_column(c, justify="right")
    else:
        table.add_column("result")
    table.add_column("ms", justify="right")
    totals = {c: 0 for c in classes}
    shown = records if len(records) <= 50 else records[:25] + records[-25:]
    for r in records:
        if r["ok"] and counts_mode:
            for c in classes:
                totals[c] += r["result"]["counts"].get(c, 0)
    for r in shown:
        name = Path(r["source"].split("#")[0]).name + ("#" + r["source"].split("#")[1] if "#" in r["source"] else "")
        if not r["ok"] or r.get("result") is None:
            why = f"[red]{r['error']}[/]" if not r["ok"] else f"[yellow]rejected: {r['gate']['reason']}[/]"
            table.add_row(name, *([""] * (len(classes) - 1 if counts_mode else 0)), why, "")
        elif counts_mode:
            table.add_row(name + (" [yellow](flagged)[/]" if r.get("action") == "flagged" else ""),
                          *[str(r["result"]["counts"].get(c, 0)) for c in classes], f"{r['timings']['total_ms']:.1f}")
        else:
            res = r["result"]
            text = f"{res['label']} {res['confidence']:.2f}" + (" [yellow]uncertain[/]" if res.get("uncertain") else "") \
                if "label" in res else json.dumps(res)[:60]
            if r.get("action") == "flagged":
                text += f" [yellow]flagged: utility {r['gate']['utility']:.2f}[/]"
            if res.get("retake"):
                text += f" [red]{res.get('message') or 'retake the image'}[/]"
            table.add_row(name, text, f"{r['timings']['total_ms']:.1f}")
    if counts_mode and len(ok) > 1:
        table.add_row("[bold]total[/]", *[f"[bold]{totals[c]}[/]" for c in classes], "")
    console.print(table)
    if ok:
        import statistics

        t = [r["timings"]["total_ms"] for r in ok]
        console.print(f"per image: median {statistics.median(t):.1f} ms "
                      f"(pre {statistics.median(r['timings']['pre_ms'] for r in ok):.1f}, "
                      f"infer {statistics.median(r['timings']['infer_ms'] for r in ok):.1f}, "
                      f"post {statistics.median(r['timings']['post_ms'] for r in ok):.1f})", highlight=False)


@app.command()
def info(
    model: Optional[str] = typer.Argument(None, help="Model file or shipped model name; omit to describe this device."),
    backend: str = typer.Option("auto", "--backend", "-b", help="Backend used to open the model."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Describe a model (task, labels, inputs, outputs, metrics) or, with no model, this device."""
    from rich.console import Console

    console = Console()
    if model is None:
        from edgecell.device import describe_device

        data = describe_device()
        data["edgecell"] = __version__
        data["shipped_models"] = {k: str(v) for k, v in shipped_models().items()}
        if as_json:
            print(json.dumps(data, indent=2))
            return
        for key, value in data.items():
            console.print(f"[bold]{key:>17}[/]: {value}", highlight=False)
        if not data["backends"]:
            console.print("no inference backend installed: pip install ai-edge-litert (or 'edgecell[openvino]')")
        return
    from dataclasses import asdict

    from edgecell.model import load_model

    loaded = load_model(resolve_model_path(model, backend), backend)
    data = {"file": str(loaded.path), "size_bytes": loaded.path.stat().st_size, **loaded.session.describe(),
            "metadata": {k: v for k, v in asdict(loaded.info).items() if k != "input_quantization"}}
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    meta = data.pop("metadata")
    for key in ("file", "size_bytes", "backend"):
        console.print(f"[bold]{key:>12}[/]: {data[key]}", highlight=False)
    for key in ("inputs", "outputs"):
        for t in data[key]:
            q = f" scale={t['scale']:.6g} zero_point={t['zero_point']}" if t["scale"] else ""
            console.print(f"[bold]{key[:-1]:>12}[/]: {t['name']} {t['shape']} {t['dtype']}{q}", highlight=False)
    for key, value in meta.items():
        if value not in ({}, [], ""):
            console.print(f"[bold]{key:>12}[/]: {json.dumps(value) if isinstance(value, (dict, list)) else value}",
                          highlight=False)


@app.command()
def models() -> None:
    """List the models that ship with edgecell."""
    from edgecell.modelinfo import read_model_info

    shipped = shipped_models()
    if not shipped:
        print("no shipped models found in", shipped_path("models"))
        return
    width = max(len(name) for name in shipped)
    for name, path in shipped.items():
        meta = read_model_info(path)
        print(f"{name:<{width}}  {meta.task:<9} {path.stat().st_size / 1e6:5.2f} MB  {path}")


@app.command(name="eval")
def evaluate(
    models_: List[Path] = typer.Argument(..., metavar="MODEL...", help="Model files to evaluate side by side."),
    data: Optional[Path] = typer.Option(None, "--data", help="Dataset folder (default: $EDGECELL_DATA or ../shared/data)."),
    out: Path = typer.Option(Path("eval"), "--out", "-o", help="Report folder (JSON, Markdown, PNG)."),
    split: Optional[str] = typer.Option(None, "--split", help="Held-out split (cells: Testing; classifiers: test)."),
    backend: str = typer.Option("auto", "--backend", "-b"),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON."),
) -> None:
    """Measure accuracy on held-out images with the same pipeline the device runs.

    Give FP32 and INT8 files of several formats to see them side by side."""
    from edgecell.modelinfo import read_model_info

    paths = [resolve_model_path(str(m)) for m in models_]
    task = read_model_info(paths[0]).task
    if task == "cells":
        from edgecell.calibration import dataset_dir
        from edgecell.evaluation.detection import evaluate_cells

        report = evaluate_cells(paths, dataset_dir("cbc_bccd_cleaned", data), out, backend=backend,
                                split=split or "Testing")
    elif task == "products":
        from edgecell.calibration import dataset_dir
        from edgecell.evaluation.classification import evaluate_classifier

        report = evaluate_classifier(paths, dataset_dir("clothing_small_subset", data), out,
                                     split=split or "test", backend=backend)
    elif task == "classify":
        from edgecell.evaluation.classification import evaluate_classifier

        if data is None:
            raise EdgecellError("--data DIR is needed for a classify model: a folder of <split>/<class>/ images")
        report = evaluate_classifier(paths, data, out, split=split or "test", backend=backend)
    elif task == "gate":
        raise EdgecellError("a gate is evaluated against its task model and labels: "
                            "python -m edgecell.evaluation.gate --help")
    elif task == "xray":
        from edgecell.calibration import xray as xray_data
        from edgecell.convert.train_xray import heldout_folder
        from edgecell.evaluation.classification import evaluate_classifier

        # the held-out split is rebuilt from the data and the seed the model card names (0)
        items, _, _ = xray_data.build(data, seed=0)
        report = evaluate_classifier(paths, heldout_folder(items, out), out, split="test", backend=backend)
    elif task == "rbc":
        from edgecell.calibration import dataset_dir
        from edgecell.evaluation.rbc import evaluate_rbc

        report = evaluate_rbc(paths, dataset_dir("chula_rbc12", data), out, backend=backend, split=split or "test")
    else:
        raise EdgecellError(f"{paths[0]}: no evaluation for task {task!r}; expected a cells, products, xray, rbc or gate model")
    if not as_json:
        _print_eval_summary(report)
    else:
        print(json.dumps(report, indent=2, default=str))
    print(f"report written to {out} (JSON, Markdown, PNG)", file=sys.stderr)


def _print_eval_summary(report: dict) -> None:
    """The headline figures per model file; the full report is in the output folder."""
    for name, entry in (report.get("models") or {}).items():
        parts = []
        if isinstance(entry.get("map50"), dict):
            parts.append(f"mAP@0.5 {entry['map50']['mean']:.3f} ("
                         + ", ".join(f"{c} {v:.3f}" for c, v in entry["map50"]["per_class"].items()) + ")")
        if isinstance(entry.get("counting"), dict) and "model_thresholds" in entry["counting"]:
            per = entry["counting"]["model_thresholds"]["per_class"]
            parts.append("counting accuracy " + ", ".join(
                f"{c} {v['accuracy']:.1%}" if isinstance(v, dict) and "accuracy" in v else f"{c} {v}" for c, v in per.items()))
        if "exact_match" in entry:
            parts.append(f"mean AUC {entry['mean_auc']:.3f}, exact match {entry['exact_match']:.3f}, "
                         f"centre recall {entry['centre_recall']:.3f}, smear flag {entry['smear_accuracy']:.1%}")
        if "top1" in entry:
            parts.append(f"top-1 {entry['top1']:.1%}")
            if isinstance(entry.get("macro"), dict) and "f1" in entry["macro"]:
                parts.append(f"macro F1 {entry['macro']['f1']:.1%}")
        print(f"{name}: " + "; ".join(parts or ["see report"]))


@app.command()
def bench(
    models_: Optional[List[Path]] = typer.Argument(None, metavar="[MODEL]...", help="Model files or folders; each "
                                                   "brings its FP32/INT8 and format siblings. Default: the shipped models."),
    backend: Optional[List[str]] = typer.Option(None, "--backend", "-b", help="Only these backends (repeatable)."),
    precision: Optional[List[str]] = typer.Option(None, "--precision", help="Only these precisions: fp32, int8."),
    threads: Optional[List[int]] = typer.Option(None, "--threads", "-t", help="Thread counts (repeatable; default 1 and all)."),
    iterations: int = typer.Option(100, "--iterations", "-n", help="Timed runs per row."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Time budget per row instead of a run count."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs before timing."),
    profile: Optional[str] = typer.Option(None, "--profile", help="raspberry-pi, jetson or x86-legacy: formats, "
                                          "backends and threads suited to that device."),
    out: Path = typer.Option(Path("bench-results"), "--out", "-o", help="Folder for results.jsonl/json/csv/md and latency.png."),
    repeats: int = typer.Option(1, "--repeats", help="Run the matrix this many times, alternating row order."),
    vendor: bool = typer.Option(False, "--vendor", help="Check against OpenVINO benchmark_app and a bare backend loop."),
    accuracy: Optional[Path] = typer.Option(None, "--accuracy", help="An `edgecell eval` report to add an accuracy column."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON instead of a table."),
) -> None:
    """Latency of every model x backend x precision x threads, beside the papers' timing claims.

    Each row runs in its own process (load, first inference, warm-up, timed runs: median, p90, p99,
    IQR, throughput, peak RSS, our overhead over the bare backend call). Rows that cannot load are
    marked skipped with the reason; results are appended as they come.
    """
    from edgecell.benchmarks.matrix import run_bench

    result = run_bench([Path(resolve_model_path(str(m))) for m in models_] if models_ else None,
                       backends=backend or None, precisions=precision or None, threads=threads or None,
                       iterations=iterations, seconds=seconds, warmup=warmup, profile=profile, out_dir=out,
                       repeats=repeats, compare_vendor=vendor, accuracy_data=accuracy, quiet=as_json)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    if result["counts"].get("wrong"):  # a backend that answers differently from LiteRT is a failure
        print(f"edgecell: error: {result['counts']['wrong']} row(s) answer differently from LiteRT (status wrong); "
              f"see {out}/results.md", file=sys.stderr)
        raise typer.Exit(1)


def _register_extra_commands() -> None:
    from edgecell.cli_bundle import register

    register(app)


_register_extra_commands()


def main() -> None:
    """Console-script entry: run the app, turning user errors into one line and exit code 2."""
    try:
        app()
    except EdgecellError as exc:
        if os.environ.get("EDGECELL_DEBUG"):
            raise
        print(f"edgecell: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a folder it may not write (a service's state folder), a full disk: one line
        if os.environ.get("EDGECELL_DEBUG") or not exc.filename:
            raise
        print(f"edgecell: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
