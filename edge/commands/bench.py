"""`edgecell bench`: the latency matrix (the harness lives in `edgecell.benchmarks`, a workstation
and device tool the runtime library never imports; this command is its door)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer


def bench(
    models_: Optional[List[Path]] = typer.Argument(None, metavar="[MODEL]...", help="Model files or folders; each "
                                                   "brings its FP32/INT8 and format siblings. Default: the shipped models."),
    backend: Optional[List[str]] = typer.Option(None, "--backend", "-b", help="Only these backends (repeatable)."),
    precision: Optional[List[str]] = typer.Option(None, "--precision", help="Only these precisions: fp32, int8."),
    threads: Optional[List[int]] = typer.Option(None, "--threads", "-t", help="Thread counts (repeatable; default 1 and all)."),
    iterations: int = typer.Option(100, "--iterations", "-n", help="Timed runs per row."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Time budget per row instead of a run count."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed runs before timing."),
    profile: Optional[str] = typer.Option(None, "--profile", help="raspberry-pi, jetson, x86-legacy or x86-vnni: formats, "
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
    from edgecell.resources import resolve_model_path

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
