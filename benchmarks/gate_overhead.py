"""What a utility gate adds to its task model's end-to-end time (issue 7 target: <= 25 %).

    python -m edgecell.benchmarks.gate_overhead --gate edge/models/gate_products_int8.tflite \\
        --task-model edge/models/products_int8.tflite IMAGE_OR_FOLDER... --repeats 5 --threads 1

End to end = decode the file + the device pipeline (pre-processing, inference, post-processing with
the task's default options, as `edgecell run` does), per image. Three variants run on the SAME
images, interleaved image by image (the order rotates), in one process, so that a shared, noisy CPU
slows all of them alike:

- ``ungated``: decode + `pipeline.predict(task)`;
- ``gated``: decode + `pipeline.predict_gated(gate, task, policy="pass")` (the task always runs:
  the worst case; the gate's input shares the task model's full-image resize);
- ``gated_separate``: decode + `predict(gate)` + `predict(task)`, each resizing the full image
  itself (the pipeline before the shared resize), for comparison.

Reported per variant: median and p90 over all images x repeats (`benchmarks.stats.summarize`),
wall and process-CPU time; the overhead as gated / ungated - 1 on the medians, on the p90s, the
median of the per-image paired ratios, and the spread of the per-repeat median ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgecell.benchmarks import stats

VARIANTS = ("ungated", "gated", "gated_separate")


@dataclass
class OverheadSpec:
    gate: str
    task_model: str
    images: list[str]
    repeats: int = 5
    warmup: int = 3
    threads: int | None = 1
    backend: str = "auto"


def _runner(variant: str, gate, task):
    from edgecell.images import decode_image
    from edgecell.pipeline import predict, predict_gated

    if variant == "ungated":
        return lambda path: predict(task, decode_image(path))
    if variant == "gated":
        return lambda path: predict_gated(gate, task, decode_image(path), policy="pass")

    def separate(path):
        image = decode_image(path)
        predict(gate, image)
        return predict(task, image)

    return separate


def measure_overhead(spec: OverheadSpec) -> dict:
    """Times of the three variants on the same images; see the module docstring."""
    import numpy as np

    from edgecell.model import load_model

    if not spec.images:
        raise ValueError("no images to time")
    gate = load_model(spec.gate, spec.backend, threads=spec.threads)
    task = load_model(spec.task_model, spec.backend, threads=spec.threads)
    run = {v: _runner(v, gate, task) for v in VARIANTS}
    for path in spec.images[:spec.warmup]:
        for v in VARIANTS:
            run[v](path)
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    per_repeat: list[dict[str, float]] = []
    turn = 0
    for _ in range(spec.repeats):
        rep: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for path in spec.images:
            order = VARIANTS[turn % 3:] + VARIANTS[:turn % 3]
            turn += 1
            for v in order:
                c0, t0 = time.process_time(), time.perf_counter()
                run[v](path)
                t1, c1 = time.perf_counter(), time.process_time()
                wall[v].append((t1 - t0) * 1e3)
                cpu[v].append((c1 - c0) * 1e3)
                rep[v].append((t1 - t0) * 1e3)
        per_repeat.append({v: stats.median(rep[v]) for v in VARIANTS})
    summary = {v: {"wall_ms": stats.summarize(wall[v]), "cpu_ms": stats.summarize(cpu[v])} for v in VARIANTS}
    un = np.asarray(wall["ungated"])
    out: dict = {
        "gate": Path(spec.gate).name, "task_model": Path(spec.task_model).name,
        "backend": task.session.backend, "threads": spec.threads, "images": len(spec.images),
        "repeats": spec.repeats, "variants": summary, "overhead": {},
        "note": "end to end = decode + pre + infer + post; interleaved, one process",
    }
    for v in ("gated", "gated_separate"):
        paired = np.asarray(wall[v]) / un
        reps = [r[v] / r["ungated"] for r in per_repeat]
        out["overhead"][v] = {
            "median_ratio": summary[v]["wall_ms"]["median"] / summary["ungated"]["wall_ms"]["median"],
            "p90_ratio": summary[v]["wall_ms"]["p90"] / summary["ungated"]["wall_ms"]["p90"],
            "cpu_median_ratio": summary[v]["cpu_ms"]["median"] / summary["ungated"]["cpu_ms"]["median"],
            "paired_median_ratio": float(np.median(paired)),
            "per_repeat_median_ratio": [round(r, 4) for r in reps],
        }
    return out


def markdown(results: Sequence[dict]) -> str:
    lines = ["| gate | task model | variant | median ms | p90 ms | CPU median ms | gated/ungated median | "
             "p90 | CPU | paired median | per-repeat median ratios |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for v in VARIANTS:
            s = r["variants"][v]
            o = r["overhead"].get(v)
            extra = (f"{o['median_ratio']:.3f} | {o['p90_ratio']:.3f} | {o['cpu_median_ratio']:.3f} | "
                     f"{o['paired_median_ratio']:.3f} | {min(o['per_repeat_median_ratio']):.3f}-"
                     f"{max(o['per_repeat_median_ratio']):.3f}") if o else "1 | 1 | 1 | 1 | -"
            lines.append(f"| {r['gate']} | {r['task_model']} | {v} | {s['wall_ms']['median']:.2f} | "
                         f"{s['wall_ms']['p90']:.2f} | {s['cpu_ms']['median']:.2f} | {extra} |")
    return "\n".join(lines) + "\n"


def image_paths(sources: Sequence[str], limit: int) -> list[str]:
    from edgecell.images import IMAGE_SUFFIXES

    out: list[str] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(str(p))
    return out[:limit] if limit else out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgecell.benchmarks.gate_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--gate", action="append", required=True, help="gate model (repeat, paired with --task-model)")
    p.add_argument("--task-model", action="append", required=True, help="the task model each --gate guards")
    p.add_argument("images", nargs="+", help="image files or folders (the same for every pair)")
    p.add_argument("--limit", type=int, default=60, help="first N images (0 = all)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backend", default="auto")
    p.add_argument("--out", help="write the JSON (and a .md beside it)")
    args = p.parse_args(argv)
    if len(args.gate) != len(args.task_model):
        p.error("give one --task-model per --gate")
    images = image_paths(args.images, args.limit)
    if not images:
        p.error("no images found")
    results = [measure_overhead(OverheadSpec(g, t, images, args.repeats, threads=args.threads, backend=args.backend))
               for g, t in zip(args.gate, args.task_model)]
    text = markdown(results)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps({"results": results, "command": " ".join(["python", "-m",
                                   "edgecell.benchmarks.gate_overhead"] + list(argv or sys.argv[1:]))}, indent=2) + "\n")
        os.replace(tmp, out)
        out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
