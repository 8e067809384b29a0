"""`edgecell run`: parse the options into a `RunOptions`, open the source, hand the frames to
`pipeline.run_frames`, and render progress and the closing table. No image is touched here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgecell.errors import EdgecellError

DEFAULT_MODEL = "cells"


def _range(option: str, low, high=None, expected: str | None = None):
    """A Typer callback refusing a value outside [low, high] at the option, in one line."""
    def check(value):
        from edgecell.pipeline import check_range

        check_range(option, value, low, high, expected)
        return value
    return check


def _positive(option: str):
    def check(value):
        if value is not None and not value > 0:
            raise EdgecellError(f"{option} {value}: out of range; expected a number above 0")
        return value
    return check


def run(
    ctx: typer.Context,
    model: str = typer.Argument(DEFAULT_MODEL, help="Model file (.tflite, .xml, .onnx), a shipped model name, "
                                "or a bundle (folder, .tar.gz or install prefix) whose configured run is used."),
    source: Optional[str] = typer.Argument(None, help="Image, folder (recursive), video file, camera index or "
                                           "rtsp:// / http:// URL. Default: the shipped sample images."),
    camera: Optional[int] = typer.Option(None, "--camera", help="Read camera N (same as SOURCE=N)."),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto, litert, openvino, onnxruntime, tflite-runtime, tf.lite"),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", help="Inference threads (default: the backend's choice).",
                                   callback=_range("--threads", 1, 1024)),
    device: str = typer.Option("CPU", "--device", help="OpenVINO device: CPU, GPU, NPU, AUTO."),
    providers: Optional[str] = typer.Option(None, "--providers", help="ONNX Runtime providers, comma-separated, "
                                            "e.g. TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for overlays, results.jsonl and results.csv."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line per image to stdout (for machines)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after N images or frames.",
                                      callback=_range("--max-frames", 1)),
    fps: Optional[float] = typer.Option(None, "--fps", help="Process at most this many frames per second.",
                                       callback=_positive("--fps")),
    threshold: Optional[List[str]] = typer.Option(None, "--threshold", help="Per-class confidence, e.g. RBC=0.5 (repeatable)."),
    tiles: Optional[int] = typer.Option(None, "--tiles", help="Cells: split each image into N x N overlapping tiles (0 = auto, at most 8).",
                                 callback=_range("--tiles", 0, 8, "0 (automatic) to 8")),
    counts: bool = typer.Option(False, "--counts", help="rbc: also count red cells, white cells and platelets "
                                "with the shipped cell counter on the same decoded image (counts and morphology "
                                "in one run; JSON 'blood_counts')."),
    top_k: int = typer.Option(3, "--top-k", help="Classifiers: how many classes to report.",
                       callback=_range("--top-k", 1)),
    min_confidence: Optional[float] = typer.Option(None, "--min-confidence", help="Classifiers: below this the "
                                                   "image is marked uncertain, for a person to check (0 to 1).",
                                                   callback=_range("--min-confidence", 0.0, 1.0)),
    show: bool = typer.Option(False, "--show", help="Show the overlay in a window (needs a desktop and GUI OpenCV; "
                              "else use --serve)."),
    serve: Optional[str] = typer.Option(None, "--serve", help="Show the run on a web page at [HOST:]PORT, e.g. "
                                        "8080 (this machine) or 0.0.0.0:8080 (other devices, with a printed token)."),
    gate: Optional[str] = typer.Option(None, "--gate", help="A utility-gate model run first: is the image still "
                                       "useful to the task model?"),
    gate_policy: str = typer.Option("reject", "--gate-policy", help="reject (skip the task model, list the image "
                                    "with the reason), flag (run it, mark the result) or pass (record the score)."),
    overlays: str = typer.Option("auto", "--overlays", help="Which overlays to write into OUT: all, flagged (only "
                                 "what a person must check: uncertain, retake, abnormal, gate-flagged), every:N "
                                 "(every N-th frame plus the flagged ones) or none. auto: all for images and "
                                 "folders, flagged for video, cameras and streams (a camera runs for months)."),
    overlay_format: str = typer.Option("auto", "--overlay-format", help="png (lossless) or jpg (6x smaller, "
                                       "70x faster to write). auto: png for images and folders, jpg for video, "
                                       "cameras and streams."),
    overlay_budget: str = typer.Option("2GB", "--overlay-budget", help="Disk this run's overlays may take (e.g. "
                                       "500MB, 2GB); when reached they stop, with a message (results go on)."),
    overlay_rotate: bool = typer.Option(False, "--overlay-rotate", help="At the budget, delete this run's oldest "
                                        "overlays instead of stopping (the newest are always there)."),
    gate_threshold: Optional[float] = typer.Option(None, "--gate-threshold", help="Utility below this is 'not "
                                                   "useful' (default: the gate model's own; above 1 rejects every image).",
                                                   callback=_range("--gate-threshold", 0.0)),
) -> None:
    """Run a model on images, a folder, a video or a camera; print results and write overlays.

    With no arguments: counts blood cells in the shipped sample smears with the shipped INT8 model.
    Given a bundle, runs its configured pipeline after verifying every file (options given here win).
    """
    from edgecell.bundle import is_bundle

    if is_bundle(Path(model)):
        return run_command(**_bundle_params(ctx, Path(model)))
    return run_command(**ctx.params)


def _bundle_params(ctx: typer.Context, bundle: Path) -> dict:
    """The bundle's configured run (model, source, options), with options given on the command line winning."""
    from typer import _click as click

    from edgecell.bundle import run_bundle_args

    bundle_model, bundle_source, bundle_options = run_bundle_args(bundle)
    given = {name for name in ctx.params
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
    params = dict(ctx.params, model=str(bundle_model))
    if "source" not in given and "camera" not in given and bundle_source is not None:
        params["source"] = bundle_source
    for name, value in bundle_options.items():
        if name in params and name not in given:
            params[name] = Path(value) if name == "out" and value is not None else value
    return params


def parse_thresholds(values: list[str] | str | None) -> dict[str, float] | None:
    """`--threshold RBC=0.5 --threshold WBC=0.3` (or comma-separated) -> {"RBC": 0.5, "WBC": 0.3}."""
    if not values:
        return None
    if isinstance(values, str):
        values = [values]
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


def default_sample_set(info) -> str:
    """The shipped sample set for `edgecell run MODEL` without a source: the one that suits the
    model's task; a model whose task has none (X-ray films cannot ship) is one line asking for input."""
    from edgecell.tasks import get_task

    samples = get_task(info.task).sample_set(info)
    if samples is None:
        raise EdgecellError(f"no shipped sample images for {info.task!r} models; give an image, a folder, "
                            f"a video or --camera, e.g. edgecell run MODEL path/to/images")
    return samples


def _warn_int8_saturation(loaded) -> None:
    """One stderr line when this CPU can make the model's INT8 backend answer otherwise than its card."""
    from edgecell.device import int8_saturation_warning

    warning = int8_saturation_warning(loaded.session.backend, loaded.info.precision)
    if warning:
        _stderr_console().print(f"edgecell: warning: {loaded.path.name}: {warning}", highlight=False, soft_wrap=True)


def run_command(model: str, source: Optional[str | int], camera: Optional[int], backend: str, threads: Optional[int],
                device: str, providers: Optional[str], out: Optional[Path], as_json: bool, max_frames: Optional[int],
                fps: Optional[float], threshold: Optional[List[str]], tiles: Optional[int], counts: bool, top_k: int,
                min_confidence: Optional[float], show: bool, serve: Optional[str], gate: Optional[str],
                gate_policy: str, gate_threshold: Optional[float], overlays: str = "auto",
                overlay_format: str = "auto", overlay_budget: str = "2GB", overlay_rotate: bool = False) -> None:
    """`edgecell run` once its options are known (from the command line, or a bundle's run)."""
    from edgecell.model import load_model
    from edgecell.pipeline import RunOptions, RunSummary, new_run_id, run_frames
    from edgecell.sinks import parse_size
    from edgecell.resources import resolve_model_path, shipped_samples
    from edgecell.sinks import JsonlSink
    from edgecell.sources import count_frames, describe_source, iter_frames

    if camera is not None:
        source = camera  # an int: a camera even where a folder has that name
    kind = describe_source(source) if source is not None else None
    if show or serve:
        from edgecell.live import check_display_options

        check_display_options(show=show, serve=serve)
    loaded = load_model(resolve_model_path(model, backend), backend, threads=threads, device=device,
                        providers=providers.split(",") if providers else None)
    _warn_int8_saturation(loaded)
    if source is None:  # the shipped samples of this model's task, never another task's images
        source = str(shipped_samples(default_sample_set(loaded.info)))
        kind = describe_source(source)
    thresholds = parse_thresholds(threshold)
    if thresholds:
        unknown = set(thresholds) - set(loaded.info.labels)
        if unknown and loaded.info.labels:
            raise EdgecellError(f"--threshold names {', '.join(sorted(unknown))}; this model's classes are "
                                f"{', '.join(loaded.info.labels)}")
    gate_model = None
    if gate:
        from edgecell.tasks.common import require_task
        from edgecell.tasks.gate import POLICIES

        if gate_policy not in POLICIES:
            raise EdgecellError(f"--gate-policy {gate_policy!r}; expected one of {', '.join(POLICIES)}")
        gate_model = load_model(resolve_model_path(gate, backend), backend, threads=threads, device=device)
        require_task(gate_model.info, "gate")
        _warn_int8_saturation(gate_model)
        from edgecell.tasks.gate import task_model_mismatch

        mismatch = task_model_mismatch(gate_model.info, loaded.path)
        if mismatch:
            _stderr_console().print(f"edgecell: warning: {mismatch}", highlight=False, soft_wrap=True)
    files = kind in ("image", "folder")
    if overlays == "auto":  # a folder's overlays are bounded by the folder; a stream's are not
        overlays = "all" if files else "flagged"
    if overlay_format == "auto":  # a 640 x 480 overlay: PNG 0.41 MB in 57 ms, JPEG (q 90) 0.07 MB in 0.8 ms
        overlay_format = "png" if files else "jpg"
    root = Path(source) if kind == "folder" else Path(source).parent if kind == "image" else None
    options = RunOptions(top_k=top_k, min_confidence=min_confidence, thresholds=thresholds, tiles=tiles,
                         blood_counts=counts,
                         gate_policy=gate_policy, gate_threshold=gate_threshold, out=out, run_id=new_run_id(),
                         source_root=root, overlays=overlays, overlay_format=overlay_format,
                         overlay_budget=parse_size(overlay_budget), overlay_rotate=overlay_rotate)
    sinks = [JsonlSink(stream=sys.stdout)] if as_json else []
    if show:
        sinks.append(WindowSink())

    err = _stderr_console()
    if out:
        out.mkdir(parents=True, exist_ok=True)  # an output folder it cannot make: one line before anything runs
    total = count_frames(source)
    if max_frames is not None and total is not None:
        total = min(total, max_frames)
    err.print(f"[bold]{loaded.info.name or loaded.path.name}[/] ({loaded.info.task}, {loaded.info.precision}) "
              f"on {loaded.session.backend} <- {kind} {source}", highlight=False)
    frames = iter_frames(source, max_frames=max_frames, fps=fps)
    if serve:
        from edgecell.live import start_live_view

        live = start_live_view(serve, out=out, model=loaded, gate=gate_model, source=source, kind=kind,
                               print_line=lambda line: err.print(line, highlight=False, soft_wrap=True))
        sinks.append(live)
        frames = live.observe(frames)  # a camera's dropped frames and reconnects, for the page
    summary = RunSummary(loaded.info.task)
    progress = _progress(err, total, disable=(kind == "image"))
    records = run_frames(loaded, frames, options, gate=gate_model, sinks=sinks,
                         warn=lambda message: progress.console.print(f"[yellow]{message}[/]", highlight=False))
    interrupted = 0
    try:
        with progress, _sigterm_as_interrupt():
            task_id = progress.add_task("images", total=total)
            for record in records:
                summary.add(record)
                if not record.ok:
                    progress.console.print(f"[red]edgecell: error:[/] {record.error}", highlight=False, soft_wrap=True)
                progress.advance(task_id)
    except KeyboardInterrupt as exc:
        interrupted = getattr(exc, "exit_code", 130)
    finally:
        records.close()
    if interrupted:
        summary.note = f"interrupted after {summary.inputs}" + (f" of {total}" if total else "") + " inputs"
    if not as_json and (kind != "image" or summary.failed == 0 or interrupted):
        from edgecell.commands.render import print_run_summary

        print_run_summary(summary)
    if out:
        err.print(f"results: {out / 'results.jsonl'}, {out / 'results.csv'}"
                  + (f", overlays in {out / 'overlays' / options.run_id}" if overlays != "none" else ""))
    if interrupted:
        print(f"edgecell: {summary.note}; results so far are written", file=sys.stderr)
        raise typer.Exit(interrupted)
    ended_early = _ended_early(kind, total, summary.inputs, max_frames)
    if ended_early:
        print(f"edgecell: error: {source}: {ended_early}", file=sys.stderr)
    if summary.failed:
        if kind != "image":
            err.print(f"{summary.failed} of {summary.inputs} inputs failed")
        raise typer.Exit(1)
    if ended_early:
        raise typer.Exit(1)
    unfamiliar = unfamiliar_single_image(kind, summary)
    if unfamiliar:
        print(f"edgecell: unfamiliar: {source}: {unfamiliar}", file=sys.stderr)
        raise typer.Exit(EXIT_UNFAMILIAR)


#: exit status of a run on one image that the model answered but found unfamiliar (unlike its
#: training images): the answer is written, and a script calling edgecell must not take it as good
EXIT_UNFAMILIAR = 3


def unfamiliar_single_image(kind: str | None, summary) -> str | None:
    """The message of a one-image run whose result says `unfamiliar`, else None (a folder or a
    stream goes on: its unfamiliar images are in the results and the closing table)."""
    if kind != "image" or summary.inputs != 1 or not summary.first:
        return None
    result = summary.first[0].result
    if result is None or not getattr(result, "unfamiliar", False):
        return None
    return getattr(result, "message", "") or "unlike the images this model was trained on"


def _ended_early(kind: str, total: int | None, seen: int, max_frames: int | None) -> str:
    """A video that gave fewer frames than its header promised (truncated or damaged file): say so.
    A few frames of slack: some containers round their frame count."""
    if kind != "video" or not total or (max_frames is not None and seen >= max_frames):
        return ""
    if seen >= total - max(2, total // 100):
        return ""
    return (f"video ended early: {seen} of the {total} frames its header promises were readable "
            "(truncated or damaged file?); the results cover those frames only")


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd stopping the service) handled like Ctrl-C: results kept, exit 143."""

    exit_code = 143


class _sigterm_as_interrupt:
    """Within the block, SIGTERM raises `Terminated` in the main thread (the run stops between two
    writes, sinks are closed) instead of killing the process mid-line."""

    def __enter__(self):
        import signal
        import threading

        self._previous = None
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                raise Terminated()

            self._previous = signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _progress(console, total, disable):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=disable or not console.is_terminal)


class WindowSink:
    """`--show`: each overlay in an OpenCV window (needs a display and an OpenCV with GUI support)."""

    wants_overlay = True

    def write(self, record, image, overlay) -> None:
        if overlay is None:
            return
        import cv2

        try:
            cv2.imshow("edgecell", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR))
            cv2.waitKey(1)
        except cv2.error:
            raise EdgecellError("--show needs a display and an OpenCV with GUI support "
                                "(opencv-python instead of opencv-python-headless); use --out DIR instead") from None

    def close(self) -> None:
        pass
