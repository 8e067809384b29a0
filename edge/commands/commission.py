"""`edgecell commission MODEL DIR --labels labels.csv -o OUT`: local validation of a model at a new
site, and with `--adapt` (training extra) a site-adapted model.

The report needs only the runtime
(`edgecell.commission`); `--adapt` runs `python -m edgecell.convert.adapt_xray` as a separate
process, so the runtime never imports the training side and a device install without TensorFlow
gets one clear line instead of an ImportError.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import typer

from edgecell.errors import EdgecellError

ADAPT_MODULE = "edgecell.convert.adapt_xray"


def adapt_command(model: Path, films: Path, labels: Path, out: Path, train: int, seed: int) -> list[str]:
    """The training-side command line `--adapt` runs."""
    return [sys.executable, "-m", ADAPT_MODULE, str(model), str(films), "--labels", str(labels), "-o", str(out),
            "--train", str(train), "--seed", str(seed)]


def run_adapt(model: Path, films: Path, labels: Path, out: Path, train: int, seed: int) -> dict:
    """Run the adaptation in its own process; its summary (JSON, last line of its output)."""
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec(ADAPT_MODULE) is None:
        raise EdgecellError("--adapt needs the training extra (pip install 'edgecell[train]'); "
                            "the validation report works without it")
    proc = subprocess.run(adapt_command(model, films, labels, out, train, seed), capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgecellError(f"--adapt failed: {last.removeprefix('error: ')}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def commission(
    model: str = typer.Argument(..., help="Model file or shipped model name (e.g. xray)."),
    films: Path = typer.Argument(..., help="Folder of local films with known findings."),
    labels: Path = typer.Option(..., "--labels", help="CSV with columns file,label (labels as the model names them)."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (commission.json/.md, confusion.png, wrong.csv)."),
    adapt: bool = typer.Option(False, "--adapt", help="Also fine-tune on part of the films and write OUT/STEM_site.tflite "
                                                      "(+ OpenVINO IR); needs the training extra."),
    train: int = typer.Option(25, "--train", min=1, help="With --adapt: films to adapt on; the rest judge the result."),
    seed: int = typer.Option(0, "--seed", help="With --adapt: which films are chosen for adapting."),
    backend: str = typer.Option("auto", "--backend", "-b", help="Backend for the report."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Validate a model on a site's own films: accuracy with its 95 % interval, confusion matrix,
    the films it got wrong, and where this site's uncertain / unfamiliar thresholds should sit."""
    from edgecell.commission import commission_report, read_labels, report_summary, write_report
    from edgecell.model import load_model
    from edgecell.resources import resolve_model_path

    path = Path(resolve_model_path(model))
    loaded = load_model(path, backend)
    labelled = read_labels(labels, films, loaded.info.labels)
    report = commission_report(loaded, labelled)
    paths = write_report(report, out)
    summary = {"report": report.to_dict(), "files": {k: str(v) for k, v in paths.items()}}
    if adapt:
        summary["adapt"] = run_adapt(path, films, labels, out, train, seed)
    worse = adapt and (summary["adapt"].get("change") or {}).get("verdict") == "worse"
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        if worse:  # a site model worse than the shipped one is a failed adaptation, in the exit code too
            raise typer.Exit(1)
        return
    print(report_summary(report))
    print(f"report: {paths['md']}" + (f", {paths['png']}" if "png" in paths else ""))
    if adapt:
        a = summary["adapt"]
        b, f = a["before"], a["after"]
        print(f"adapted on {a['films_adapted_on']} films, judged on {a['films_evaluated']}: accuracy "
              f"{100 * b['accuracy']:.1f} % -> {100 * f['accuracy']:.1f} % (95 % CI {100 * f['ci95'][0]:.1f}-"
              f"{100 * f['ci95'][1]:.1f}); site model: {a['model']} (+ {Path(a['openvino']).name})")
        if a.get("change"):
            print(a["change"]["message"])
        if worse:
            raise typer.Exit(1)
