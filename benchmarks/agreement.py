"""Every shipped model file x every installed backend that reads it, against LiteRT, on held-out images.

    python -m edgecell.benchmarks.agreement [--models edge/models] [--out agreement.json] [--limit N]

The test (tests/backends/test_shipped_models_agree.py) checks the shipped samples; this runs the
held-out split each model's card uses (found in the data folder: --data, $EDGECELL_DATA or
../shared/data) and prints a Markdown table: images that give LiteRT's answer (on the .tflite of
the same name), with `edgecell.backends.agreement`'s tolerance (same top-1 and gate decision,
counts within one cell per class). Slow on purpose (hundreds of images per file): a benchmark,
not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from edgecell.errors import script_main


def heldout_images(model_path: Path, data: str | None = None) -> tuple[str, list[Path]]:
    """(split name, images) the card of this model family is measured on."""
    from edgecell.calibration import data_root
    from edgecell.images import IMAGE_SUFFIXES

    root = data_root(data)
    stem = model_path.stem
    if "xray" in stem:
        from edgecell.calibration import xray as xray_data

        items, _, _ = xray_data.build(data, seed=0)
        return "X-ray held-out (seed 0)", [Path(it.path) for it in items if it.split == "test"]
    if stem.startswith("cells"):
        folder, name = root / "cbc_bccd_cleaned" / "Testing" / "Images", "BCCD Testing"
    else:
        folder, name = root / "clothing_small_subset" / "test", "clothing test"
    return name, sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def agreement_rows(models_dir: Path, *, data: str | None = None, limit: int = 0) -> list[dict]:
    """One row per (model file, backend): images, how many agree, the first few that differ."""
    from edgecell.backends import BY_SUFFIX, is_installed
    from edgecell.backends.agreement import REFERENCE_BACKEND, disagreement
    from edgecell.images import decode_image
    from edgecell.model import load_model
    from edgecell.pipeline import predict

    rows = []
    for tflite in sorted(models_dir.glob("*.tflite")):
        split, images = heldout_images(tflite, data)
        images = images[:limit] if limit else images
        decoded = [decode_image(p) for p in images]
        reference = load_model(tflite, REFERENCE_BACKEND, threads=1)
        expected = [predict(reference, im)[0] for im in decoded]
        files = [p for p in sorted(models_dir.glob(tflite.stem + ".*")) if p.suffix in BY_SUFFIX]
        for path in files:
            for backend in BY_SUFFIX[path.suffix]:
                if not is_installed(backend) or (path == tflite and backend == REFERENCE_BACKEND):
                    continue
                model = load_model(path, backend, threads=1)
                differ = {}
                for image_path, image, ref in zip(images, decoded, expected):
                    why = disagreement(ref, predict(model, image)[0])
                    if why:
                        differ[image_path.name] = why
                rows.append({"file": path.name, "backend": backend, "split": split, "images": len(images),
                             "agree": len(images) - len(differ), "differ": dict(list(differ.items())[:5])})
                print(f"{path.name} {backend}: {rows[-1]['agree']}/{len(images)}", flush=True)
    return rows


def markdown(rows: Sequence[dict]) -> str:
    lines = ["| file | backend | held-out split | agree with LiteRT | differ (first) |", "|---|---|---|---|---|"]
    for r in rows:
        pct = 100.0 * r["agree"] / r["images"] if r["images"] else 0.0
        first = "; ".join(f"{k}: {v}" for k, v in list(r["differ"].items())[:2]) or "-"
        lines.append(f"| {r['file']} | {r['backend']} | {r['split']} | {r['agree']}/{r['images']} ({pct:.1f} %) | {first} |")
    return "\n".join(lines)


@script_main
def main(argv: Sequence[str] | None = None) -> int:
    from edgecell.resources import shipped_path

    parser = argparse.ArgumentParser(prog="python -m edgecell.benchmarks.agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=None, help="folder of model files (default: the shipped models)")
    parser.add_argument("--data", default=None, help="dataset folder (default: $EDGECELL_DATA or ../shared/data)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many images per model (0: all)")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = agreement_rows(args.models or shipped_path("models"), data=args.data, limit=args.limit)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))
    return 0 if all(r["agree"] == r["images"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
