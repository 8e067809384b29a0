"""The one path from image to result, and the run loop over many frames.

`predict(model, image)` runs a loaded model's task on one image (pre-processing, inference,
post-processing, each timed); `run_frames(model, frames, options)` runs it over any iterable of
frames (files, a folder, a video, a camera) and hands each record to the sinks (results.jsonl,
results.csv, overlays, a live view...). `edgecell run`, `edgecell eval`, the benchmarks and the tests
all go through these functions after `load_model`, so a number in a model card is a number a user
gets. The command line only parses options into a `RunOptions` and renders what comes back.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Protocol, runtime_checkable

import numpy as np

from edgecell.errors import EdgecellError
from edgecell.model import Model
from edgecell.tasks import TaskResult, get_task

if TYPE_CHECKING:  # pragma: no cover - typing only
    from edgecell.sources import Frame
    from edgecell.tasks.gate import GateResult


@dataclass
class Timings:
    """Milliseconds spent in each stage of one image."""

    pre: float = 0.0
    infer: float = 0.0
    post: float = 0.0
    gate: float = 0.0  # the utility gate's whole pipeline, when one runs in front

    @property
    def total(self) -> float:
        return self.pre + self.infer + self.post + self.gate

    def to_dict(self) -> dict:
        out = {"pre_ms": round(self.pre, 3), "infer_ms": round(self.infer, 3),
               "post_ms": round(self.post, 3), "total_ms": round(self.total, 3)}
        if self.gate:
            out["gate_ms"] = round(self.gate, 3)
        return out


@dataclass
class Record:
    """What a run writes per image or frame (one JSONL line, one CSV row)."""

    source: str
    ok: bool
    task: str = ""
    result: TaskResult | None = None
    error: str | None = None
    timings: Timings = field(default_factory=Timings)
    overlay: str | None = None
    gate: "GateResult | None" = None  # when a utility gate ran in front
    action: str = "ran"  # "ran" | "flagged" (gate says not useful, ran anyway) | "rejected" (not run)
    run_id: str = ""  # the run this record belongs to (`new_run_id`)
    seq: int = 0  # its place in the run, from 0
    time: str = ""  # when it was made, ISO 8601 UTC

    @property
    def needs_attention(self) -> bool:
        """Failed, rejected or flagged by the gate, or the task says a person should look."""
        return (not self.ok or self.action != "ran"
                or (self.result is not None and self.result.needs_attention))

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"source": self.source, "ok": self.ok, "task": self.task}
        if self.run_id:
            out.update(time=self.time, run_id=self.run_id, seq=self.seq)
        if self.ok:
            out["result"] = self.result.to_dict() if self.result is not None else None
            out["timings"] = self.timings.to_dict()
        else:
            out["error"] = self.error
        if self.gate is not None:
            out["gate"] = self.gate.to_dict()
            out["action"] = self.action
        if self.overlay:
            out["overlay"] = self.overlay
        return out

    def csv_row(self) -> dict[str, Any]:
        """Flat columns for results.csv, in a stable order: source, ok, error, gate, result, timings."""
        row: dict[str, Any] = {"time": self.time, "run_id": self.run_id, "seq": self.seq} if self.run_id else {}
        row.update({"source": self.source, "ok": self.ok, "error": self.error or ""})
        if self.gate is not None:
            row.update({"action": self.action, "utility": round(self.gate.utility, 4),
                        "gate_reason": "" if self.gate.useful else self.gate.reason()})
        if self.result is not None:
            row.update(self.result.csv_row())
        if self.ok:
            row.update(self.timings.to_dict())
        return row


# ----------------------------------------------------------------------------- one image

def predict(model: Model, image: np.ndarray, **options: Any) -> tuple[TaskResult, Timings]:
    """Run the model's task on one RGB uint8 image; returns (task result, timings)."""
    task = get_task(model.info.task)
    t0 = time.perf_counter()
    tensor, context = task.preprocess(image, model.info)
    t1 = time.perf_counter()
    outputs = task.infer(model.session, tensor, model.info, context=context, **options)
    t2 = time.perf_counter()
    result = task.postprocess(outputs, context, model.info, **options)
    t3 = time.perf_counter()
    return result, Timings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)


def predict_gated(gate: Model, model: Model, image: np.ndarray, *, policy: str = "reject",
                  **options: Any) -> tuple["GateResult", TaskResult | None, Timings, str]:
    """The gate first, then (unless the policy rejects the image) the task model.
    Returns (gate result, task result or None, timings, action).

    The image is resized to each size once (`common.resize_once`): a gate whose input is made
    via its task model's input size (`settings.resize_via`) pays for that full-image resize and
    the task model reuses it, so the gate's own cost is a small resize and its network."""
    from edgecell.tasks.common import resize_once

    with resize_once(image):
        gate_result, gate_timings = predict(gate, image, **options)
        if not gate_result.useful and policy == "reject":
            return gate_result, None, Timings(gate=gate_timings.total), "rejected"
        result, timings = predict(model, image, **options)
    timings.gate = gate_timings.total
    action = "flagged" if not gate_result.useful and policy == "flag" else "ran"
    return gate_result, result, timings, action


def annotate(model: Model, image: np.ndarray, result: TaskResult) -> np.ndarray:
    """The task's overlay of `result` on `image`."""
    return get_task(model.info.task).annotate(image, result)


# ----------------------------------------------------------------------------- many frames

@dataclass
class RunOptions:
    """Everything `run_frames` needs besides the model and the frames (the `edgecell run` options,
    as data: a bundle stores them, a Python caller builds them)."""

    top_k: int = 3
    min_confidence: float | None = None  # classifiers: below this the result is marked uncertain
    thresholds: dict[str, float] | None = None  # detectors: per-class confidence
    tiles: int | None = None  # cells: N x N tiles (0 or None: automatic)
    blood_counts: bool = False  # rbc: also the shipped cell counter's RBC / WBC / platelet counts (`--counts`)
    gate_policy: str = "reject"  # "reject" | "flag" | "pass", when a gate model is given
    gate_threshold: float | None = None
    out: Path | None = None  # folder for results.jsonl, results.csv and overlays
    run_id: str = ""  # names this run in records and its overlay folder (default: a new one)
    source_root: Path | None = None  # overlays mirror source paths below this folder
    overlays: str = "all"  # all | flagged | every:N | none  (files in out/overlays/<run id>/)
    overlay_format: str = "png"  # png | jpg
    overlay_budget: int | None = None  # bytes this run's overlays may take
    overlay_rotate: bool = False  # at the budget: delete this run's oldest overlays (else stop writing them)

    def __post_init__(self) -> None:
        from edgecell.sinks import OVERLAY_FORMATS, parse_overlay_policy

        parse_overlay_policy(self.overlays)
        if self.overlay_format not in OVERLAY_FORMATS:
            raise EdgecellError(f"--overlay-format {self.overlay_format!r}: expected {' or '.join(OVERLAY_FORMATS)}")
        check_range("--top-k", self.top_k, 1)
        check_range("--min-confidence", self.min_confidence, 0.0, 1.0)
        check_range("--tiles", self.tiles, 0, MAX_TILES, "0 (automatic) to 8")
        check_range("--gate-threshold", self.gate_threshold, 0.0)
        for name, value in (self.thresholds or {}).items():
            check_range(f"--threshold {name}=", value, 0.0, 1.0)

    def task_options(self) -> dict[str, Any]:
        """The keyword options `predict` passes to the task's infer/postprocess."""
        options: dict[str, Any] = {"top_k": self.top_k}
        if self.min_confidence is not None:
            options["min_confidence"] = self.min_confidence
        if self.thresholds:
            options["thresholds"] = self.thresholds
        if self.tiles is not None:
            options["tiles"] = self.tiles or "auto"
        if self.blood_counts:
            options["blood_counts"] = True
        if self.gate_threshold is not None:
            options["gate_threshold"] = self.gate_threshold
        return options


#: more tiles than this cut cells into pieces smaller than the model ever saw (auto picks at most 4)
MAX_TILES = 8


def check_range(option: str, value: float | int | None, low: float | int, high: float | int | None = None,
                expected: str | None = None) -> None:
    """Refuse an option value outside [low, high] with one line that gives the valid range (an
    option that cannot be right must not quietly give a wrong result). None means 'not given'."""
    if value is None or (value >= low and (high is None or value <= high)):
        return
    if expected is None:
        expected = f"{low} to {high}" if high is not None else f"{low} or more"
    sep = "" if option.endswith("=") else " "
    raise EdgecellError(f"{option}{sep}{value}: out of range; expected {expected}")


@runtime_checkable
class Sink(Protocol):
    """Receives every record of a run as it is made, in order (results files, a live web view...).

    `write(record, image, overlay)`: `image` is the decoded RGB frame (None when it could not be
    read), `overlay` the task's annotated RGB image (None when no overlay was drawn for this
    record: a failed or rejected frame, or no sink asked for one). A sink must not keep references
    to the arrays beyond the call unless it copies them; it should be quick (the loop waits for it).
    A sink that sets `wants_overlay = True` gets an overlay for every successful frame.
    `close()` is called once when the run ends, however it ends (finished, interrupted, failed)."""

    def write(self, record: Record, image: np.ndarray | None, overlay: np.ndarray | None) -> None: ...

    def close(self) -> None: ...


def run_frames(model: Model, frames: Iterable["Frame"], options: RunOptions | None = None, *,
               gate: Model | None = None, sinks: Iterable[Sink] = (), warn=None) -> Iterator[Record]:
    """Run `model` (behind `gate`, if given) on every frame and yield one `Record` per frame, after
    every sink has received it. An unreadable frame or a task error is a failed record, never the
    end of the run. With `options.out`, results.jsonl and results.csv are appended to and overlays
    written below out/overlays/<run id>/ (by `options.overlays`), as each record is made, so an
    interrupted run keeps everything already yielded; a file that cannot be written (full disk,
    read-only folder) stops the run with an `OutputError`, leaving no temporary file. Sinks are
    closed when the generator finishes or is closed. `warn(message)` hears about things a person
    should know that are not errors (the overlay budget reached)."""
    from edgecell.errors import OutputError
    from edgecell.sinks import OverlayFiles, open_output_sinks

    options = options or RunOptions()
    run_id = options.run_id or new_run_id()
    task_options = options.task_options()
    overlay_files = None
    all_sinks: list = []
    try:
        if options.out:
            all_sinks += _opened(lambda: open_output_sinks(options.out), options.out)
            overlay_files = OverlayFiles(options.out, run_id, root=options.source_root, policy=options.overlays,
                                         image_format=options.overlay_format, budget_bytes=options.overlay_budget,
                                         rotate=options.overlay_rotate, warn=warn)
        all_sinks += list(sinks)
        live_wants = any(getattr(s, "wants_overlay", False) for s in all_sinks)
        own_outputs = Path(options.out).resolve() / "overlays" if options.out else None
        task = model.info.task
        seq = 0
        for frame in frames:
            if own_outputs is not None and "#" not in frame.name and _inside(frame.name, own_outputs):
                continue  # an overlay of an earlier run into this folder is an output, not an input
            overlay = None
            if frame.image is None:
                record = Record(frame.name, ok=False, task=task, error=frame.error)
            else:
                try:
                    record = _predict_record(model, gate, frame, options.gate_policy, task_options)
                except EdgecellError as exc:
                    record = Record(frame.name, ok=False, task=task, error=str(exc))
            record.run_id, record.seq, record.time = run_id, seq, _now()
            seq += 1
            to_file = overlay_files is not None and overlay_files.wanted(record)
            if record.result is not None and (to_file or live_wants):
                overlay = annotate(model, frame.image, record.result)
                if to_file:
                    path = _written(lambda: overlay_files.write(record, overlay), options.out)
                    record.overlay = str(path) if path is not None else None
            for sink in all_sinks:
                _written(lambda: sink.write(record, frame.image, overlay), options.out)
            yield record
    finally:
        errors = []
        for sink in all_sinks:
            try:
                sink.close()
            except OSError as exc:
                errors.append(exc)
        if errors and not isinstance(sys.exc_info()[1], BaseException):
            raise OutputError(_output_message(errors[0], options.out))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _inside(path: str, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder)
        return True
    except (ValueError, OSError):
        return False


def _output_message(exc: OSError, out: Path | None) -> str:
    where = exc.filename or out
    return (f"{where}: {exc.strerror or exc}; the run stops here (results written so far are kept"
            + (f" in {out})" if out else ")"))


def _opened(open_sinks, out):
    try:
        return open_sinks()
    except OSError as exc:
        from edgecell.errors import OutputError

        raise OutputError(_output_message(exc, out)) from None


def _written(write, out):
    """Run one output write; a failing file system becomes one OutputError that stops the run."""
    try:
        return write()
    except OSError as exc:
        from edgecell.errors import OutputError

        raise OutputError(_output_message(exc, out)) from None


def _predict_record(model: Model, gate: Model | None, frame: "Frame", policy: str,
                    task_options: dict[str, Any]) -> Record:
    task = model.info.task
    if gate is None:
        result, timings = predict(model, frame.image, **task_options)
        return Record(frame.name, ok=True, task=task, result=result, timings=timings)
    gate_result, result, timings, action = predict_gated(gate, model, frame.image, policy=policy, **task_options)
    return Record(frame.name, ok=True, task=task, result=result, timings=timings, gate=gate_result, action=action)


class RunSummary:
    """Running totals of a run, for the closing table: inputs, failures, the task's totals
    (counts per class, labels), stage-time medians from a bounded sample, and the first and last
    few records. Its memory does not grow with the number of frames (a camera runs for months)."""

    def __init__(self, task: str, *, keep: int = 25, sample: int = 4096, seed: int = 0):
        self.task_totals = get_task(task).summary()
        self.inputs = 0
        self.failed = 0
        self.rejected = 0
        self.flagged = 0
        self.first: list[Record] = []
        self.last: deque[Record] = deque(maxlen=keep)
        self._keep = keep
        self._sample: list[Timings] = []
        self._sample_size = sample
        self._timed = 0
        self._random = random.Random(seed)
        self.started = time.perf_counter()
        self.note = ""  # e.g. "interrupted after 12 of 40 inputs"

    def add(self, record: Record) -> None:
        self.inputs += 1
        if len(self.first) < self._keep:
            self.first.append(record)
        else:
            self.last.append(record)
        if not record.ok:
            self.failed += 1
            return
        self.rejected += record.action == "rejected"
        self.flagged += record.action == "flagged"
        if record.result is None:
            return
        self.task_totals.add(record.result)
        self._timed += 1  # reservoir sample: every timed record equally likely to be kept
        if len(self._sample) < self._sample_size:
            self._sample.append(record.timings)
        else:
            k = self._random.randrange(self._timed)
            if k < self._sample_size:
                self._sample[k] = record.timings

    @property
    def shown(self) -> list[Record]:
        """The records a table shows: the first `keep` and the last `keep` of the run."""
        return self.first + list(self.last)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def median_ms(self) -> dict[str, float]:
        """Median milliseconds per stage over the sampled records ({} when none ran)."""
        if not self._sample:
            return {}
        return {name: statistics.median(getattr(t, name) for t in self._sample)
                for name in ("total", "pre", "infer", "post")}

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "failed": self.failed, "rejected": self.rejected,
                "flagged": self.flagged, "task": self.task_totals.to_dict(),
                "median_ms": {k: round(v, 3) for k, v in self.median_ms().items()},
                "seconds": round(self.elapsed, 3)}


def new_run_id() -> str:
    """A short id naming one run (in records and live-frame file names): UTC time + random suffix."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
