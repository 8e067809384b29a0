"""Commissioning a classifier at a new site on local films with known findings: how well does the
shipped model do HERE, and where should its `uncertain` / `unfamiliar` thresholds sit for this site.

The runtime part (this module) needs no TensorFlow: it scores the local films through the one
device path (`load_model` + `pipeline.predict`), and writes the validation report. Adapting the
model to the site (`--adapt`) is training and lives on the training side
(`edgecell.convert.adapt_xray`), started by the CLI as a separate process so the runtime never
imports `edgecell.convert` (see ARCHITECTURE.md's rule that imports only point down).

labels.csv: a header `file,label` (extra columns ignored), one film per row, `file` relative to the
films folder, `label` one of the model's labels.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecell.errors import EdgecellError


@dataclass
class LabelledFilm:
    file: str  # as written in labels.csv (relative to the films folder)
    path: Path
    label: str


@dataclass
class FilmOutcome:
    file: str
    truth: str
    label: str
    confidence: float
    uncertain: bool
    unfamiliar: bool
    unfamiliar_score: float | None
    message: str

    @property
    def correct(self) -> bool:
        return self.label == self.truth


@dataclass
class CommissionReport:
    model: str
    films: int
    labels: list[str]
    accuracy: float
    accuracy_ci95: tuple[float, float]
    confusion: list[list[int]]
    flagged: dict  # share of wrong / right answers flagged uncertain, with the model's thresholds
    site_thresholds: dict  # what this site's films suggest (see `site_thresholds`)
    wrong: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # films that could not be read

    def to_dict(self) -> dict:
        return asdict(self)


def read_labels(labels_csv: str | os.PathLike, films_dir: str | os.PathLike, known: Sequence[str]) -> list[LabelledFilm]:
    """The labelled films; one clear error for a missing column, an unknown label (naming the row
    and the model's labels) or a missing file."""
    labels_csv, films_dir = Path(labels_csv), Path(films_dir)
    if not labels_csv.is_file():
        raise EdgecellError(f"{labels_csv}: labels file not found")
    if not films_dir.is_dir():
        raise EdgecellError(f"{films_dir}: films folder not found")
    with labels_csv.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "label"} <= set(reader.fieldnames):
            raise EdgecellError(f"{labels_csv}: needs a header with columns file,label (found {reader.fieldnames})")
        out = []
        for row_no, row in enumerate(reader, start=2):
            name, label = (row["file"] or "").strip(), (row["label"] or "").strip()
            if label not in known:
                raise EdgecellError(f"{labels_csv}:{row_no}: label {label!r} is not one of the model's labels "
                                    f"({', '.join(known)})")
            path = films_dir / name
            if not name or not path.is_file():
                raise EdgecellError(f"{labels_csv}:{row_no}: film {name!r} not found in {films_dir}")
            out.append(LabelledFilm(name, path, label))
    if not out:
        raise EdgecellError(f"{labels_csv}: no films listed")
    return out


def score_films(model, films: Sequence[LabelledFilm], **options) -> tuple[list[FilmOutcome], list[dict]]:
    """Each film through the device pipeline; (outcomes, unreadable films with their error)."""
    from edgecell.images import decode_image
    from edgecell.pipeline import predict

    outcomes, errors = [], []
    for film in films:
        try:
            result, _ = predict(model, decode_image(film.path), gradcam=False, **options)
        except EdgecellError as exc:
            errors.append({"file": film.file, "error": str(exc)})
            continue
        outcomes.append(FilmOutcome(film.file, film.label, result.label, float(result.confidence),
                                    bool(result.uncertain), bool(getattr(result, "unfamiliar", False)),
                                    getattr(result, "unfamiliar_score", None), getattr(result, "message", "")))
    return outcomes, errors


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k / n (sound for small n and for 0 or n)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def flagged_shares(outcomes: Sequence[FilmOutcome]) -> dict:
    """Share of the wrong answers and of the right answers marked uncertain (the goal: most wrong
    answers flagged, few right ones)."""
    wrong = [o for o in outcomes if not o.correct]
    right = [o for o in outcomes if o.correct]
    share = lambda xs, key: (sum(bool(getattr(o, key)) for o in xs) / len(xs)) if xs else None  # noqa: E731
    return {"wrong": len(wrong), "right": len(right),
            "wrong_flagged_uncertain": share(wrong, "uncertain"), "right_flagged_uncertain": share(right, "uncertain"),
            "wrong_flagged_unfamiliar": share(wrong, "unfamiliar"), "right_flagged_unfamiliar": share(right, "unfamiliar")}


def site_thresholds(outcomes: Sequence[FilmOutcome], settings: dict, *, max_right_flagged: float = 0.25) -> dict:
    """Thresholds this site's films suggest: the highest unfamiliar-score threshold and the lowest
    confidence threshold that still keep at most `max_right_flagged` of the right answers flagged,
    and what each catches of the wrong answers. With few films these are rough: the report prints
    the counts they rest on."""
    right = [o for o in outcomes if o.correct]
    wrong = [o for o in outcomes if not o.correct]
    out: dict = {"films": len(outcomes), "right": len(right), "wrong": len(wrong),
                 "model_unfamiliar_threshold": settings.get("unfamiliar_threshold"),
                 "model_min_confidence": settings.get("min_confidence", 0.0)}
    scores = [o.unfamiliar_score for o in right if o.unfamiliar_score is not None]
    if scores:
        t = float(np.quantile(scores, 1 - max_right_flagged))
        caught = [o for o in wrong if o.unfamiliar_score is not None and o.unfamiliar_score > t]
        out["suggested_unfamiliar_threshold"] = round(t, 2)
        out["wrong_caught_at_suggested_unfamiliar"] = len(caught) / len(wrong) if wrong else None
        out["films_above_model_unfamiliar_threshold"] = (
            sum(o.unfamiliar for o in outcomes) / len(outcomes) if outcomes else None)
    if right:
        c = float(np.quantile([o.confidence for o in right], max_right_flagged))
        out["suggested_min_confidence"] = round(c, 3)
        out["wrong_caught_at_suggested_min_confidence"] = (
            sum(o.confidence < c for o in wrong) / len(wrong) if wrong else None)
    return out


def commission_report(model, films: Sequence[LabelledFilm], **options) -> CommissionReport:
    """Score the films and summarise: accuracy with its 95 % interval, confusion matrix, the films
    it got wrong, how the flags behave, and this site's threshold suggestions."""
    labels = list(model.info.labels)
    outcomes, errors = score_films(model, films, **options)
    k = sum(o.correct for o in outcomes)
    n = len(outcomes)
    cm = np.zeros((len(labels), len(labels)), int)
    for o in outcomes:
        cm[labels.index(o.truth), labels.index(o.label)] += 1
    wrong = [{"file": o.file, "truth": o.truth, "answer": o.label, "confidence": round(o.confidence, 4),
              "uncertain": o.uncertain, "unfamiliar": o.unfamiliar, "message": o.message}
             for o in outcomes if not o.correct]
    return CommissionReport(model=str(model.path), films=n, labels=labels, accuracy=k / n if n else 0.0,
                            accuracy_ci95=wilson_interval(k, n), confusion=cm.tolist(),
                            flagged=flagged_shares(outcomes), site_thresholds=site_thresholds(outcomes, model.info.settings),
                            wrong=wrong, errors=errors)


@dataclass
class PairedChange:
    """Site model vs shipped model on the same held-back films: films each answers right that the
    other does not, the change in accuracy with its 95 % interval (paired), and the verdict."""
    films: int
    gained: int  # wrong before, right after
    lost: int  # right before, wrong after
    change: float
    change_ci95: tuple[float, float]
    verdict: str  # "better", "worse" or "no clear change"
    message: str


def paired_change(before: CommissionReport, after: CommissionReport) -> PairedChange:
    """Compare two reports on the same films (`wrong` names the films each got wrong).

    Why paired: both models answer the same films, so the question is how many films change from
    wrong to right and back; the difference of the two Wilson intervals is far too wide for that.
    Verdict "worse" when the whole 95 % interval of the change is below zero: a site model fitted
    on a handful of films can be (measured: 10 films, one draw of three, 84.0 -> 69.5 %), and
    then it must not be deployed silently."""
    if before.films != after.films:
        raise EdgecellError(f"paired comparison needs the same films ({before.films} vs {after.films})")
    was_wrong = {w["file"] for w in before.wrong}
    now_wrong = {w["file"] for w in after.wrong}
    gained, lost, n = len(was_wrong - now_wrong), len(now_wrong - was_wrong), max(before.films, 1)
    change = (gained - lost) / n
    half = 1.96 * math.sqrt(max(gained + lost - (gained - lost) ** 2 / n, 0.0)) / n
    ci = (change - half, change + half)
    verdict = "better" if ci[0] > 0 else "worse" if ci[1] < 0 else "no clear change"
    pts = f"{100 * change:+.1f} points (95 % CI {100 * ci[0]:+.1f} to {100 * ci[1]:+.1f}; {gained} films gained, {lost} lost)"
    message = {"better": f"the site model is better on the held-back films: {pts}",
               "worse": f"the site model is WORSE on the held-back films: {pts}; keep the shipped model "
                        "(adapt on more films)",
               "no clear change": f"no clear change on the held-back films: {pts}; the shipped model is as good"}[verdict]
    return PairedChange(n, gained, lost, change, ci, verdict, message)


def site_data_hash(films: Sequence[LabelledFilm]) -> str:
    """SHA-256 over the sorted (file, label, content SHA-256) of the films: names the site data a
    model was adapted on without shipping it."""
    h = hashlib.sha256()
    for film in sorted(films, key=lambda f: f.file):
        h.update(f"{film.file}\t{film.label}\t{hashlib.sha256(film.path.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def report_markdown(report: CommissionReport, title: str = "Local validation") -> str:
    lo, hi = report.accuracy_ci95
    f, t = report.flagged, report.site_thresholds
    lines = [f"# {title}", "", f"Model: `{report.model}`; {report.films} local films"
             + (f" ({len(report.errors)} unreadable, left out)" if report.errors else "") + ".", "",
             f"**Accuracy {_pct(report.accuracy)}** (95 % interval {_pct(lo)} - {_pct(hi)}).", "",
             "Confusion matrix (rows: truth, columns: answer): " + "; ".join(
                 f"{l}: {row}" for l, row in zip(report.labels, report.confusion)) + " (confusion.png).", "",
             f"Flags with the model's thresholds: {_pct(f['wrong_flagged_uncertain'])} of the {f['wrong']} wrong answers "
             f"marked uncertain, {_pct(f['right_flagged_uncertain'])} of the {f['right']} right ones; unfamiliar: "
             f"{_pct(f['wrong_flagged_unfamiliar'])} of wrong, {_pct(f['right_flagged_unfamiliar'])} of right.", "",
             "## This site's thresholds", ""]
    for k, v in t.items():
        lines.append(f"- {k}: {_pct(v) if isinstance(v, float) and k.startswith(('wrong_', 'films_above')) else v}")
    lines += ["", f"## Films it got wrong ({len(report.wrong)}, also in wrong.csv)", ""]
    for w in report.wrong[:50]:
        lines.append(f"- `{w['file']}`: truth {w['truth']}, answer {w['answer']} {w['confidence']:.2f}"
                     + (" (uncertain)" if w["uncertain"] else "") + (" (unfamiliar)" if w["unfamiliar"] else ""))
    return "\n".join(lines) + "\n"


def write_report(report: CommissionReport, out: str | os.PathLike, name: str = "commission") -> dict[str, Path]:
    """OUT/<name>.json, <name>.md, wrong.csv and confusion.png (when matplotlib is installed)."""
    from edgecell.sinks import write_json_atomic, write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json_atomic(out / f"{name}.json", report.to_dict()),
             "md": write_text_atomic(out / f"{name}.md", report_markdown(report))}
    rows = ["file,truth,answer,confidence,uncertain,unfamiliar"] + [
        f"{w['file']},{w['truth']},{w['answer']},{w['confidence']},{w['uncertain']},{w['unfamiliar']}" for w in report.wrong]
    paths["wrong"] = write_text_atomic(out / "wrong.csv", "\n".join(rows) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from edgecell.evaluation.classification import plot_confusion
    except ImportError:
        return paths
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    lo, hi = report.accuracy_ci95
    plot_confusion(ax, np.asarray(report.confusion), report.labels,
                   f"{report.films} local films: {100 * report.accuracy:.0f} % ({100 * lo:.0f}-{100 * hi:.0f})")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=110)
    plt.close(fig)
    paths["png"] = out / "confusion.png"
    return paths


def report_summary(report: CommissionReport) -> str:
    lo, hi = report.accuracy_ci95
    return (f"{report.films} films: accuracy {100 * report.accuracy:.1f} % (95 % CI {100 * lo:.1f}-{100 * hi:.1f}), "
            f"{len(report.wrong)} wrong; flagged uncertain: {_pct(report.flagged['wrong_flagged_uncertain'])} of wrong, "
            f"{_pct(report.flagged['right_flagged_uncertain'])} of right")


def dumps(report: CommissionReport) -> str:
    return json.dumps(report.to_dict(), indent=2)
