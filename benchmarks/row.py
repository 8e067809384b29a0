"""Run one benchmark row in this (fresh) process and print it as one JSON line.

    python -m edgecell.benchmarks.row --spec '{"model": "m.tflite", "backend": "litert", "threads": 1}'
    python -m edgecell.benchmarks.row m.tflite --backend litert --threads 1 -n 50

The matrix starts one such process per row. The JSON line is prefixed with ``EDGECELL_ROW `` so
that backend chatter on stdout cannot be mistaken for it. Exit status 0 for ok/skipped rows,
1 for a failed row; a crash (segfault, abort) leaves no JSON line and the matrix reports it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from edgecell.benchmarks.harness import ROW_MARKER as MARKER  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(prog="python -m edgecell.benchmarks.row", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="model file (.tflite, .xml, .onnx)")
    p.add_argument("--spec", help="the whole RowSpec as JSON (overrides the other options)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("-n", "--iterations", type=int, default=100)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--image", default=None)
    p.add_argument("--no-timings", action="store_true", help="leave the per-run timings out of the JSON")
    args = p.parse_args(argv)

    from edgecell.benchmarks.harness import RowSpec, measure_row

    if args.spec:
        spec = RowSpec.from_dict(json.loads(args.spec))
    elif args.model:
        backend = args.backend
        if backend == "auto":
            from edgecell.backends import resolve_backend
            from edgecell.errors import EdgecellError

            try:
                backend = resolve_backend(args.model)
            except EdgecellError as exc:
                print(MARKER + json.dumps({"model": args.model, "backend": "auto", "status": "skipped",
                                           "reason": str(exc)}), flush=True)
                return 0
        spec = RowSpec(model=args.model, backend=backend, threads=args.threads, iterations=args.iterations,
                       seconds=args.seconds, warmup=args.warmup, image=args.image,
                       keep_timings=not args.no_timings)
    else:
        p.error("give a model file or --spec")
    row = measure_row(spec)
    sys.stdout.write(MARKER + json.dumps(row, default=str) + "\n")
    sys.stdout.flush()
    return 1 if row.get("status") == "failed" else 0


if __name__ == "__main__":
    raise SystemExit(main())
