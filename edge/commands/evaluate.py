"""`edgecell eval MODEL...`: held-out metrics through the device pipeline; the model's task
(from the registry) knows its data and its evaluation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer


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
    from edgecell.resources import resolve_model_path
    from edgecell.tasks import get_task

    paths = [resolve_model_path(str(m)) for m in models_]
    task = get_task(read_model_info(paths[0]).task)
    report = task.evaluate(paths, data, out, split=split, backend=backend)
    if not as_json:
        print_eval_summary(report)
    else:
        print(json.dumps(report, indent=2, default=str))
    print(f"report written to {out} (JSON, Markdown, PNG)", file=sys.stderr)


def print_eval_summary(report: dict) -> None:
    """The headline figures per model file, with how many images it flagged (unfamiliar,
    uncertain); the full report is in the output folder."""
    from edgecell.evaluation.flags import flag_lines

    for name, entry in (report.get("models") or {}).items():
        parts = []
        if isinstance(entry.get("map50"), dict):
            parts.append(f"mAP@0.5 {entry['map50']['mean']:.3f} ("
                         + ", ".join(f"{c} {v:.3f}" for c, v in entry["map50"]["per_class"].items()) + ")")
        complete = (entry.get("complete_labels") or {}).get("testing", {}).get("counting")
        if complete:  # cells: the complete labels (every cell boxed) are the headline, so they come first
            parts.append("counting accuracy against complete labels "
                         + ", ".join(f"{c} {v['accuracy']:.1%}" for c, v in complete.items()))
        if isinstance(entry.get("counting"), dict) and "model_thresholds" in entry["counting"]:
            per = entry["counting"]["model_thresholds"]["per_class"]
            what = ("against the dataset's own labels (they box only part of the red cells) " if complete
                    else "counting accuracy ")
            parts.append(what + ", ".join(
                f"{c} {v['accuracy']:.1%}" if isinstance(v, dict) and "accuracy" in v else f"{c} {v}" for c, v in per.items()))
        if "exact_match" in entry:
            parts.append(f"mean AUC {entry['mean_auc']:.3f}, exact match {entry['exact_match']:.3f}, "
                         f"centre recall {entry['centre_recall']:.3f}, smear flag {entry['smear_accuracy']:.1%}")
        if "top1" in entry:
            parts.append(f"top-1 {entry['top1']:.1%}")
            if isinstance(entry.get("macro"), dict) and "f1" in entry["macro"]:
                parts.append(f"macro F1 {entry['macro']['f1']:.1%}")
        parts += flag_lines(entry.get("flags"))
        print(f"{name}: " + "; ".join(parts or ["see report"]))
