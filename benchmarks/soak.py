"""Soak: many frames through `pipeline.run_frames` as a camera run would go for weeks, to show that
resident memory stays flat (running totals, not records) and what overlays cost in frames per second.

    python -m edgecell.benchmarks.soak [--model cells] [--frames 100000] [--warmup 2000] [--out DIR]

The frames come from a synthetic 30-frame clip made from a shipped sample (each frame shifted by a
few pixels, so no two consecutive frames are the same array), looped; they go through the real run
loop with results.jsonl and results.csv written to a temporary folder (`--out`), once with overlays
off and once with `--overlays every:N` (PNG), each pass with a `RunSummary` as `edgecell run` keeps.
Resident memory (RSS, from /proc) is sampled every `--every` frames; the report gives its growth
after warm-up (the issue's target: within 5 MB over 100,000 frames) and frames per second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:  # pragma: no cover - not Linux
        import psutil

        return psutil.Process().memory_info().rss / 1e6


def clip_frames(sample: Path, n: int, clip: int = 30) -> Iterator:
    """`n` frames named like a video's (`soak.mp4#i`) from a `clip`-frame loop of a sample image."""
    import numpy as np

    from edgecell.images import decode_image
    from edgecell.sources import Frame

    base = decode_image(sample)
    frames = [np.ascontiguousarray(np.roll(base, 3 * k, axis=1)) for k in range(clip)]
    for i in range(n):
        yield Frame(f"soak.mp4#{i}", i, frames[i % clip])


def soak_pass(model, sample: Path, frames: int, warmup: int, every: int, out: Path, overlays: str,
              progress=None) -> dict:
    """One pass; returns fps after warm-up and RSS samples (frame index, MB)."""
    from edgecell.pipeline import RunOptions, RunSummary, run_frames

    summary = RunSummary(model.info.task)
    options = RunOptions(out=out, overlays=overlays, overlay_budget=None)
    samples: list[tuple[int, float]] = []
    t_warm = None
    started = time.perf_counter()
    for record in run_frames(model, clip_frames(sample, frames), options):
        summary.add(record)
        i = record.seq + 1
        if i == warmup:
            t_warm = time.perf_counter()
        if i % every == 0 or i == frames:
            samples.append((i, round(rss_mb(), 2)))
            if progress:  # a line per sample: a pass cut short still leaves its figures
                progress(f"{overlays}: frame {i} rss {samples[-1][1]} MB "
                         f"({time.perf_counter() - started:.0f} s)")
    elapsed = time.perf_counter() - (t_warm or time.perf_counter())
    after = [mb for i, mb in samples if i >= warmup]
    return {"overlays": overlays, "frames": frames, "warmup": warmup,
            "fps_after_warmup": round((frames - warmup) / elapsed, 1) if elapsed > 0 else None,
            "rss_mb_at_warmup": after[0] if after else None, "rss_mb_end": after[-1] if after else None,
            "rss_growth_mb": round(after[-1] - after[0], 2) if after else None,
            "rss_max_minus_warmup_mb": round(max(after) - after[0], 2) if after else None,
            "failed": summary.failed, "median_ms": summary.median_ms(),
            "overlay_files": sum(1 for _ in (out / "overlays").rglob("*.png")) if (out / "overlays").is_dir() else 0,
            "samples": samples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecell.benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cells", help="model file or shipped name (default: cells)")
    parser.add_argument("--image", help="sample image for the synthetic clip (default: a shipped smear)")
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--every", type=int, default=1000, help="sample RSS every N frames")
    parser.add_argument("--overlay-every", type=int, default=100, help="the overlay pass writes every N-th frame")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--passes", default="none,overlays", help="comma-separated: none, overlays")
    parser.add_argument("--out", help="folder for the run's files (default: a temporary folder, removed)")
    parser.add_argument("--json", dest="json_out", help="also write the report here")
    args = parser.parse_args(argv)

    from edgecell.model import load_model
    from edgecell.resources import resolve_model_path, shipped_samples

    if args.warmup >= args.frames:
        parser.error("--warmup must be smaller than --frames")
    model = load_model(resolve_model_path(args.model), threads=args.threads)
    sample = Path(args.image) if args.image else sorted(shipped_samples("bccd").glob("*.jpg"))[0]
    report = {"model": str(model.path), "backend": model.session.backend, "sample": str(sample), "passes": []}
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        for name in args.passes.split(","):
            overlays = "none" if name == "none" else f"every:{args.overlay_every}"
            result = soak_pass(model, sample, args.frames, args.warmup, args.every, Path(tmp) / name, overlays,
                               progress=lambda line: print(line, file=sys.stderr, flush=True))
            report["passes"].append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "samples"}), file=sys.stderr, flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({**report, "passes": [{k: v for k, v in p.items() if k != "samples"}
                                           for p in report["passes"]]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
