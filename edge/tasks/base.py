"""The task contract: what every task (cells, classify, xray, gate, raw, ...) provides, written
down once so that the pipeline, the run loop, evaluation, the benchmarks and the converter can
treat every task alike and a new task is one file plus one line in the registry
(`edgecell.tasks.TASKS`).

A task turns one decoded image into one typed result in four steps, each a method:

    preprocess(image, info)                        -> (input tensor, context for the later steps)
    infer(session, tensor, info, context, **opts)  -> model outputs by name (default: one session.run)
    postprocess(outputs, context, info, **opts)    -> a `TaskResult`
    annotate(image, result)                        -> an RGB overlay for a person to look at

plus `summary()` (a fresh running-totals accumulator for a run's closing table) and, where a task
has a held-out evaluation, `evaluate(...)`. Results share one base (`TaskResult`): `to_dict()`
(JSON-ready, one JSONL line's "result"), `summary()` (one line for a person), `csv_row()` (flat
columns for results.csv) and `needs_attention` (uncertain, retake: what an operator must look at).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgecell.errors import EdgecellError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from edgecell.backends.base import Session
    from edgecell.modelinfo import ModelInfo


class TaskResult(ABC):
    """What a task returns for one image. Subclasses are dataclasses."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the "result" of one JSONL record."""

    @abstractmethod
    def summary(self) -> str:
        """One line for a person (`RBC 212, WBC 1, Platelets 9`; `shirt 0.91`)."""

    @property
    def needs_attention(self) -> bool:
        """True when a person should look at this image (uncertain class, retake needed)."""
        return False

    def class_counts(self) -> dict[str, int] | None:
        """Per-class counts for tasks that count things (summed over a run), else None."""
        return None

    def verdict(self) -> str:
        """A counting task's answer beyond its counts in a few words (the rbc smear flag), shown in
        its own column of the closing table; "" where the counts are the whole answer."""
        return ""

    def csv_row(self) -> dict[str, Any]:
        """Flat scalar columns for results.csv: nested dicts become `key_sub`, lists are left out."""
        return flat_row(self.to_dict())


def flat_row(data: dict[str, Any]) -> dict[str, Any]:
    """One level of nesting flattened (`counts_RBC`), lists dropped: a row an operator can sort."""
    row: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(v, (list, dict)):
                    row[f"{key}_{k}"] = v
        elif not isinstance(value, list):
            row[key] = value
    return row


class RunningSummary:
    """Running totals of a run for the closing table: images, per-class counts summed (counting
    tasks) or per-label tallies (classifiers). Memory does not grow with the number of frames."""

    def __init__(self) -> None:
        self.results = 0
        self.attention = 0
        self.counts: dict[str, int] = {}
        self.labels: dict[str, int] = {}

    def add(self, result: TaskResult) -> None:
        self.results += 1
        self.attention += bool(result.needs_attention)
        counts = result.class_counts()
        if counts is not None:
            for name, n in counts.items():
                self.counts[name] = self.counts.get(name, 0) + int(n)
        else:
            label = getattr(result, "label", None)
            if label is not None:
                self.labels[str(label)] = self.labels.get(str(label), 0) + 1

    @property
    def columns(self) -> list[str]:
        """Per-class columns of the table (counting tasks), else []: one `result` column."""
        return list(self.counts)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"results": self.results, "needs_attention": self.attention}
        if self.counts:
            out["counts"] = dict(self.counts)
        if self.labels:
            out["labels"] = dict(sorted(self.labels.items(), key=lambda kv: -kv[1]))
        return out


def check_label_count(info: "ModelInfo", session: "Session", found: int | None, what: str) -> None:
    """Refuse at load a sidecar whose label list does not fit the model's output (`found` classes
    the output gives, None when its shape is dynamic), blaming the sidecar: otherwise every image
    fails, or worse, a label is silently paired with another class's score."""
    if found is None or not info.labels or found == len(info.labels):
        return
    from edgecell.errors import ModelError
    from edgecell.modelinfo import sidecar_path

    side = sidecar_path(session.path)
    where = side.name if side.is_file() else f"the metadata embedded in {Path(session.path).name}"
    raise ModelError(f"{where} lists {len(info.labels)} labels ({', '.join(info.labels[:6])}"
                     f"{', ...' if len(info.labels) > 6 else ''}) but the model's output gives {found} {what}; "
                     f"fix `labels` in {where}, or use the sidecar made with this model file")


def output_size(session: "Session", name: str | None = None, *, skip_batch: bool = True) -> int | None:
    """Number of values in one output (by name, else the first), batch dimension left out; None
    when a dimension is dynamic."""
    outputs = session.outputs
    chosen = next((o for o in outputs if o.name == name), outputs[0] if outputs else None)
    if chosen is None:
        return None
    dims = list(chosen.shape)[1:] if skip_batch and len(chosen.shape) > 1 else list(chosen.shape)
    if any(int(d) <= 0 for d in dims):
        return None
    return int(np.prod(dims)) if dims else 1


def is_file_name(value: Any) -> bool:
    """A sidecar setting that may name a file beside the model: a non-empty string with no folder
    in it (a sidecar never points elsewhere: a bundle copies only what lies beside the model)."""
    return isinstance(value, str) and bool(value) and "/" not in value and "\\" not in value


class Task(ABC):
    """One kind of model output and what to do with it. Instances are stateless and shared."""

    #: the name in a model's metadata (`"task": "cells"`) and in the registry
    name: ClassVar[str] = ""
    #: the shipped sample set (`edgecell.resources.shipped_samples`) that `edgecell run MODEL` with
    #: no source runs on; None where no images of this kind may ship (their licences)
    samples: ClassVar[str | None] = None

    def sample_set(self, info: "ModelInfo") -> str | None:
        """Which shipped samples suit a model of this task (`edgecell run MODEL` without a source),
        so a model is never shown another task's images by default."""
        return self.samples

    def companion_files(self, sidecar: Path, meta: dict[str, Any]) -> list[Path]:
        """Files a model of this task reads beside it (a bundle copies them with the model), from
        its sidecar (`meta`, the parsed JSON). Default: the settings' values that name a file beside
        it (the X-ray model's Grad-CAM head, `settings.gradcam_head`)."""
        out = []
        for value in (meta.get("settings") or {}).values():
            if is_file_name(value):
                candidate = sidecar.parent / value
                try:
                    found = candidate.is_file() and candidate != sidecar
                except OSError:  # a setting that is text, longer than a file name may be (ENAMETOOLONG)
                    found = False
                if found:
                    out.append(candidate)
        return out

    def check(self, info: "ModelInfo", session: "Session") -> None:
        """Refuse at load time, with one line, a model whose metadata does not fit this task or
        its outputs (called by `load_model`). Default: nothing to check."""

    @abstractmethod
    def preprocess(self, image: np.ndarray, info: "ModelInfo") -> tuple[np.ndarray, Any]:
        """RGB uint8 H x W x 3 image -> (input batch of one, context for infer/postprocess)."""

    def infer(self, session: "Session", tensor: np.ndarray, info: "ModelInfo", *, context: Any = None,
              **options: Any) -> dict[str, np.ndarray]:
        """Model outputs by name (float). One `session.run` unless a task needs more (tiles, Grad-CAM)."""
        return session.run(tensor)

    def model_input(self, session: "Session", image: np.ndarray, info: "ModelInfo") -> np.ndarray:
        """The input of one bare model call made from `image`, for the benchmarks' timing of the
        backend alone. Default: the pre-processed image; a task whose model runs on something else
        (rbc: a batch of patches around detected cells) makes that."""
        return self.preprocess(image, info)[0]

    @abstractmethod
    def postprocess(self, outputs: dict[str, np.ndarray], context: Any, info: "ModelInfo",
                    **options: Any) -> TaskResult:
        """Model outputs -> the task's typed result."""

    @abstractmethod
    def annotate(self, image: np.ndarray, result: TaskResult) -> np.ndarray:
        """An RGB overlay of `result` on `image` (a new array)."""

    def summary(self) -> RunningSummary:
        """A fresh running-totals accumulator for a run of this task."""
        return RunningSummary()

    def evaluate(self, model_paths: list[Path], data: Path | None, out: Path, *, split: str | None,
                 backend: str) -> dict:
        """Held-out evaluation (`edgecell eval`): metrics side by side for several model files,
        written to `out`. Tasks without one say so in one line."""
        raise EdgecellError(f"no evaluation for task {self.name!r} models in `edgecell eval`")
