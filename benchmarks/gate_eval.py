"""The utility-gate evaluation script: accuracy (`edgecell.evaluation.gate`, through the device
pipeline) plus end-to-end time gated vs ungated (`edgecell.benchmarks.gate_overhead`), written
together into OUT/gate.json and OUT/gate.md. It lives with the benchmarks because it times models;
the runtime library never imports it.

    python -m edgecell.benchmarks.gate_eval --gate-dir OUT/export --task-model edge/models/products_int8.tflite \\
        --labels LABELS.csv --split OUT/gate_split.json --data DIR --out OUT/eval
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from edgecell.errors import script_main


def _backend_precision(path: str | Path) -> tuple[str, str]:
    from edgecell.benchmarks.harness import precision_of

    return Path(path).suffix.lower(), precision_of(path)


def measure_latency(gate_paths: Sequence[str | Path], task_model: str | Path, image_paths: Sequence[str | Path], *,
                    task_siblings: Sequence[str | Path] = (), threads: int | None = 1, repeats: int = 3) -> dict:
    """End-to-end time gated vs ungated (`edgecell.benchmarks.gate_overhead`), each gate paired with
    the task model of the same format and precision when one is given in `task_siblings`."""
    from edgecell.benchmarks.gate_overhead import OverheadSpec, measure_overhead

    tasks = {_backend_precision(t): str(t) for t in [task_model, *task_siblings]}
    out = {}
    for g in gate_paths:
        task = tasks.get(_backend_precision(g), str(task_model))
        out[Path(g).name] = measure_overhead(OverheadSpec(str(g), task, [str(p) for p in image_paths],
                                                          repeats=repeats, threads=threads))
    return out


def add_latency(report: dict, out: Path, gate_paths, task_model, images, *, task_siblings=(), threads=None,
                repeats: int = 3) -> dict:
    """Measure the latency section, merge it into `report` and rewrite gate.json / gate.md."""
    from edgecell.benchmarks.gate_overhead import markdown as overhead_table
    from edgecell.evaluation.gate import write_report

    report["latency"] = measure_latency(gate_paths, task_model, images, task_siblings=task_siblings,
                                        threads=threads or 1, repeats=repeats)
    write_report(report, out, overhead_table)
    return report["latency"]


def latency_only(gate_paths, task_model, split_json, data_dir, out_dir, *, threads=None, latency_images=60,
                 task_siblings=(), repeats: int = 5) -> dict:
    """Re-measure only the latency section (e.g. at a quieter moment) and merge it into gate.json."""
    data, out = Path(data_dir), Path(out_dir)
    held = sorted(json.loads(Path(split_json).read_text())["test_images"])[:latency_images]
    path = out / "gate.json"
    if not path.is_file():
        return measure_latency(gate_paths, task_model, [data / r for r in held], task_siblings=task_siblings,
                               threads=threads or 1, repeats=repeats)
    return add_latency(json.loads(path.read_text()), out, gate_paths, task_model, [data / r for r in held],
                       task_siblings=task_siblings, threads=threads, repeats=repeats)


@script_main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgecell.benchmarks.gate_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--gate", action="append", default=[], help="gate model file (repeat)")
    p.add_argument("--gate-dir", help="folder of exported gates: every gate_*_{fp32,int8}.{tflite,xml,onnx}")
    p.add_argument("--task-model", required=True)
    p.add_argument("--labels", help="labels CSV (gate accuracy and task accuracy on the gate's held-out originals)")
    p.add_argument("--split", help="gate_split.json from edgecell.convert.train_gate")
    p.add_argument("--task-split", help="instead of --labels/--split: degraded copies of the task model's own "
                                        "split (xray: 'test', its held-out images), unlabelled: task accuracy "
                                        "all vs accepted, no gate accuracy")
    p.add_argument("--split-list", help="X-ray: xray_split.tsv (else rebuilt, seed 0)")
    p.add_argument("--task-split-limit", type=int, default=0, help="seeded sample of N images of --task-split")
    p.add_argument("--data", help="datasets folder or the dataset folder itself")
    p.add_argument("--dataset", default="clothing_small_subset")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--latency-images", type=int, default=60)
    p.add_argument("--limit", type=int, default=0, help="first N held-out originals only (quick check)")
    p.add_argument("--task-sibling", action="append", default=[],
                   help="the task model in another format/precision: each gate's latency is compared with "
                        "the task model on the same backend and precision (repeat)")
    p.add_argument("--latency-only", action="store_true", help="re-measure latency only; merge into OUT/gate.json")
    args = p.parse_args(argv)
    from edgecell.calibration.gate_data import degraded_rows, gate_data_dir
    from edgecell.evaluation.gate import evaluate_gate, heldout_rows, markdown_report
    from edgecell.modelinfo import read_model_info

    if args.latency_only and not args.split:
        p.error("--latency-only times the held-out originals of --split")
    if not args.latency_only and not args.task_split and not (args.labels and args.split):
        p.error("give --labels and --split, or --task-split")
    task_info = read_model_info(args.task_model)
    data = gate_data_dir(task_info.task, args.dataset, args.data)
    gates = list(args.gate)
    if args.gate_dir:
        d = Path(args.gate_dir)
        for suffix in (".tflite", ".xml", ".onnx"):
            for prec in ("fp32", "int8"):
                gates += sorted(str(f) for f in d.glob(f"gate_*_{prec}{suffix}"))
    if not gates:
        p.error("no gate model: pass --gate FILE or --gate-dir DIR")
    if args.latency_only:
        lat = latency_only(gates, args.task_model, args.split, data, args.out,
                           threads=args.threads, latency_images=args.latency_images, task_siblings=args.task_sibling)
        print(json.dumps(lat, indent=2))
        return 0
    rows = None
    if args.task_split:
        rows = degraded_rows(task_info.task, data, args.task_split, task_info.labels, task_info.settings,
                             split_list=args.split_list, limit=args.task_split_limit)
    report = evaluate_gate(gates, args.task_model, args.labels, args.split, data, args.out, threads=args.threads,
                           limit=args.limit, rows=rows)
    if args.latency_images:
        held = sorted({r["image"] for r in (rows or heldout_rows(args.labels, args.split, args.limit))})
        add_latency(report, Path(args.out), gates, args.task_model, [data / r for r in held[:args.latency_images]],
                    task_siblings=args.task_sibling, threads=args.threads)
    from edgecell.benchmarks.gate_overhead import markdown as overhead_table

    print(markdown_report(report, latency_table=overhead_table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
