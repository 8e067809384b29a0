"""Utility labels for a gate (issue 7; Khan et al., EUSIPCO 2022, `shared/seeds/003_eda17a086f8a98f6.txt`).

    python -m edgecell.convert.gate_labels --task-model edge/models/products_int8.tflite \\
        --task-model OUT/export/products_v1_fp32.tflite --data DIR --out FILE.csv
    python -m edgecell.convert.gate_labels --task-model edge/models/xray_int8.tflite \\
        --task-model XRAY_OUT/export/xray_fp32.tflite --split-list XRAY_OUT/xray_split.tsv --limit 400 --out FILE.csv

Which images: products, the clothing set's validation + test folders (never trained on by the
classifier); X-ray, the TRAINING part of the seeded X-ray split (`edgecell.calibration.xray`), so
the 601 held-out images of the X-ray model card stay untouched for its figures and for measuring
the gate's effect (`edgecell.benchmarks.gate_eval --task-split test`).

Every image of the chosen splits is degraded (`edgecell.calibration.degrade`: pristine, JPEG at 9
quality levels, blur, noise, exposure) and each copy, and the pristine image, go through every
task model THROUGH THE DEVICE PIPELINE (`edgecell.model.load_model` + `edgecell.pipeline.predict`),
so a label says what the device sees, INT8 rounding included.

Utility, the paper's eq. (2), for model i and degraded image I of pristine image I':

    f(phi_i, phi'_i) = (phi_i - phi_rec_i) / (1 - (phi'_i - phi_rec_i))

- phi_i: the confidence model i gives the GROUND-TRUTH class on the degraded image. For a
  softmax classifier this is the probability of the true class (the paper's "correct class
  softmax probability", CCSP), not the top-1 confidence;
- phi'_i: the same on the pristine image;
- phi_rec_i: the recognition threshold below which the model's answer is rejected. On the
  device that is the task model's `min_confidence` setting (products: 0.5, below it the result
  is flagged "uncertain"), read from the sidecar unless `--phi-rec` is given. f < 0 exactly when
  the device would not accept the true class (phi < phi_rec). The denominator is > 0 whenever
  phi_rec > 0; it is clipped at 1e-6.
Across models the utility values are combined by the mean (the paper's operator O, eq. 3); the
CSV keeps each model's value.

Binary labels, the paper's rule for classification (section IV), per model:
- useful (1): the degraded image gets the same class as the pristine image, that class is the
  ground truth, and CCSP >= T_H (0.9);
- not useful (0): the pristine image is classified correctly, the degraded one wrongly, and
  CCSP < T_L (0.1);
- otherwise left out (empty label): includes every image whose pristine copy is misclassified.
Combined across models by agreement, as the paper does: 1 if every model says 1, 0 if every
model says 0, else left out. The detection rule (useful when at least one box is found with
IoU >= 0.5 and confidence >= 0.5) is `detection_useful`.

`--t-high/--t-low` change the thresholds (a relaxation: say so in the model card); the summary
JSON beside the CSV (`FILE.json`) always counts the paper's rule and a few relaxations.
Paths in the CSV are relative to the dataset folder, so the file moves between machines.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgecell.calibration.gate_data import (DATASET, degraded_rows, gate_data_dir,  # noqa: F401 (re-exported)
                                           list_samples, read_labels)
from edgecell.errors import script_main

T_HIGH = 0.9
T_LOW = 0.1
DET_IOU = 0.5
DET_CONF = 0.5
#: (T_H, T_L) pairs counted in the summary besides the chosen one
THRESHOLD_GRID = ((0.9, 0.1), (0.8, 0.2), (0.7, 0.3), (0.5, 0.5))


# ----------------------------------------------------------------------------- the paper's rules

def utility(phi: float, phi_pristine: float, phi_rec: float) -> float:
    """Eq. (2): f = (phi - phi_rec) / (1 - (phi' - phi_rec)). See the module docstring."""
    den = 1.0 - (float(phi_pristine) - float(phi_rec))
    return (float(phi) - float(phi_rec)) / max(den, 1e-6)


def classification_label(pred_pristine: int, pred: int, truth: int, ccsp: float,
                         t_high: float = T_HIGH, t_low: float = T_LOW) -> int | None:
    """The paper's labelling rule for one classifier: 1 useful, 0 not useful, None left out.

    `ccsp` is the probability the model gives the ground-truth class on the degraded image."""
    if pred_pristine != truth:
        return None  # the reference decision is wrong: utility loss is undefined
    if pred == truth and ccsp >= t_high:
        return 1  # pred == pred_pristine == truth
    if pred != truth and ccsp < t_low:
        return 0
    return None


def combine_labels(labels: Sequence[int | None]) -> int | None:
    """Agreement across models: 1 if all say 1, 0 if all say 0, else left out."""
    labels = list(labels)
    if labels and all(l == 1 for l in labels):
        return 1
    if labels and all(l == 0 for l in labels):
        return 0
    return None


def detection_useful(boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray, *,
                     classes: Sequence[int] | None = None, gt_classes: Sequence[int] | None = None,
                     iou: float = DET_IOU, conf: float = DET_CONF) -> bool:
    """The paper's detection rule: useful when at least one predicted box with confidence >= conf
    overlaps a ground-truth box with IoU >= iou (and, when classes are given, the same class).
    Boxes are N x 4 (x1, y1, x2, y2) in the same pixel frame."""
    from edgecell.tasks.boxes import box_iou

    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    gt_boxes = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} scores")
    keep = scores >= conf
    if not keep.any() or gt_boxes.shape[0] == 0:
        return False
    overlap = box_iou(boxes[keep], gt_boxes) >= iou
    if classes is not None and gt_classes is not None:
        same = np.asarray(classes)[keep][:, None] == np.asarray(gt_classes)[None, :]
        overlap &= same
    return bool(overlap.any())


def count_labels(labels: Iterable[int | None]) -> dict[str, int]:
    c = Counter(labels)
    return {"useful": int(c.get(1, 0)), "not_useful": int(c.get(0, 0)), "left_out": int(c.get(None, 0))}


# ----------------------------------------------------------------------------- CSV

def relabel(rows: Sequence[dict], models: int, t_high: float, t_low: float) -> list[int | None]:
    """Combined labels of CSV rows under other thresholds (the per-model columns are kept)."""
    out = []
    for r in rows:
        out.append(combine_labels([
            classification_label(int(r[f"m{k}_pred_pristine"]), int(r[f"m{k}_pred"]), r["truth"],
                                 float(r[f"m{k}_phi"]), t_high, t_low) for k in range(models)]))
    return out


def split_by_original(rows: Sequence[dict], fraction: float = 0.2, seed: int = 0) -> set[str]:
    """The held-out ORIGINAL images (`image` keys): `fraction` of each ground-truth class, seeded,
    so that no degraded copy of a held-out image is ever in training."""
    by_class: dict[int, list[str]] = {}
    for r in rows:
        by_class.setdefault(int(r["truth"]), [])
        if r["image"] not in by_class[int(r["truth"])]:
            by_class[int(r["truth"])].append(r["image"])
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for cls in sorted(by_class):
        images = sorted(by_class[cls])
        n = int(round(len(images) * fraction))
        held.update(images[i] for i in rng.permutation(len(images))[:n])
    return held


# ----------------------------------------------------------------------------- labelling run

def _model_columns(k: int) -> list[str]:
    return [f"m{k}_pred_pristine", f"m{k}_phi_pristine", f"m{k}_pred", f"m{k}_conf", f"m{k}_phi",
            f"m{k}_f", f"m{k}_label"]


def class_probabilities(result) -> dict[str, float]:
    """label -> probability from a classifier's result (products: `top`, X-ray: `probabilities`)."""
    probs = getattr(result, "probabilities", None)
    return dict(probs) if probs else dict(result.top)


def label_dataset(model_paths: Sequence[str | os.PathLike], data: Path, out_csv: Path, *, splits: str,
                  specs: Sequence[str], t_high: float, t_low: float, phi_rec: float | None, seed: int,
                  limit: int = 0, threads: int | None = None, backend: str = "auto",
                  split_list: str | os.PathLike | None = None) -> dict:
    from edgecell.calibration import degrade
    from edgecell.evaluation.classification import sha256
    from edgecell.images import decode_image
    from edgecell.model import load_model
    from edgecell.pipeline import predict

    models = [load_model(p, backend, threads=threads) for p in model_paths]
    first = models[0].info
    for m in models[1:]:
        if list(m.info.labels) != list(first.labels) or m.info.task != first.task:
            raise ValueError(f"{m.path.name}: task or labels differ from {models[0].path.name}; "
                             "models must share them")
    samples = list_samples(first.task, data, splits, first.labels, first.settings, split_list)
    options = {"top_k": len(first.labels), "gradcam": False}  # Grad-CAM: not needed for a label
    if limit:
        rng = np.random.default_rng(seed)
        samples = [samples[i] for i in sorted(rng.permutation(len(samples))[:limit].tolist())]
    rec = [float(phi_rec) if phi_rec is not None else float(m.info.settings.get("min_confidence", 0.5))
           for m in models]

    header = ["image", "folder", "truth", "degradation", "seed"]
    for k in range(len(models)):
        header += _model_columns(k)
    header += ["f_mean", "label"]
    tmp = out_csv.with_name(f".{out_csv.name}.tmp")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    combined: list[int | None] = []
    per_model_labels: list[list[int | None]] = [[] for _ in models]
    rows_for_grid: list[dict] = []
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for n, (path, truth) in enumerate(samples):
            key = path.relative_to(data).as_posix()
            image = decode_image(path)
            pristine = []
            for m in models:
                res, _ = predict(m, image, **options)
                probs = class_probabilities(res)
                pristine.append((res.index, float(probs[first.labels[truth]])))
            for spec in specs:
                s = degrade.sample_seed(key, spec, seed)
                img = degrade.apply(image, spec, s)
                row: list = [key, path.parent.name, truth, spec, s]
                labels_here, fs = [], []
                grid_row = {"truth": truth}
                for k, m in enumerate(models):
                    res, _ = predict(m, img, **options)
                    probs = class_probabilities(res)
                    phi = float(probs[first.labels[truth]])
                    pp, phip = pristine[k]
                    fval = utility(phi, phip, rec[k])
                    lab = classification_label(pp, res.index, truth, phi, t_high, t_low)
                    labels_here.append(lab)
                    per_model_labels[k].append(lab)
                    fs.append(fval)
                    row += [pp, f"{phip:.5f}", res.index, f"{res.confidence:.5f}", f"{phi:.5f}", f"{fval:.5f}",
                            "" if lab is None else lab]
                    grid_row.update({f"m{k}_pred_pristine": pp, f"m{k}_pred": res.index, f"m{k}_phi": phi})
                lab = combine_labels(labels_here)
                combined.append(lab)
                rows_for_grid.append(grid_row)
                row += [f"{float(np.mean(fs)):.5f}", "" if lab is None else lab]
                writer.writerow(row)
            if (n + 1) % 25 == 0 or n + 1 == len(samples):
                el = time.perf_counter() - t0
                print(f"  {n + 1}/{len(samples)} images ({len(combined)} samples) {el:.0f} s; so far "
                      f"{count_labels(combined)}", flush=True)
    os.replace(tmp, out_csv)
    wall = time.perf_counter() - t0
    grid = {f"T_H={th}, T_L={tl}": count_labels(relabel(rows_for_grid, len(models), th, tl))
            for th, tl in THRESHOLD_GRID}
    by_spec: dict[str, Counter] = {}
    for spec_i, lab in zip([s for _ in samples for s in specs], combined):
        by_spec.setdefault(spec_i, Counter())[lab] += 1
    summary = {
        "csv": out_csv.name,
        "task": first.task, "dataset": data.name, "splits": splits, "originals": len(samples), "samples": len(combined),
        "degradations": list(specs), "jpeg_qualities": list(degrade.JPEG_QUALITIES),
        "models": [{"file": m.path.name, "backend": m.session.backend, "precision": m.info.precision,
                    "name": m.info.name, "sha256": sha256(m.path), "phi_rec": r}
                   for m, r in zip(models, rec)],
        "thresholds": {"t_high": t_high, "t_low": t_low, "paper": {"t_high": T_HIGH, "t_low": T_LOW}},
        "counts": count_labels(combined),
        "counts_per_model": [count_labels(l) for l in per_model_labels],
        "counts_threshold_grid": grid,
        "counts_per_degradation": {s: {"useful": c.get(1, 0), "not_useful": c.get(0, 0), "left_out": c.get(None, 0)}
                                   for s, c in by_spec.items()},
        "wall_s": round(wall, 1), "seed": seed,
        "command": " ".join([Path(sys.executable).name, "-m", "edgecell.convert.gate_labels"] + sys.argv[1:]),
    }
    out_csv.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m edgecell.convert.gate_labels", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task-model", action="append", required=True,
                   help="task model file (repeat for several: labels combined by agreement)")
    p.add_argument("--data", help="datasets folder or the dataset folder itself (else $EDGECELL_DATA, ../shared/data)")
    p.add_argument("--dataset", default=DATASET)
    p.add_argument("--splits", default=None,
                   help="splits to label, '+'-joined (default products: validation+test, images the task model "
                        "was NOT trained on; xray: train, never its held-out images)")
    p.add_argument("--split-list", help="X-ray: xray_split.tsv of edgecell.calibration.xray (else rebuilt, seed 0)")
    p.add_argument("--out", required=True, help="labels CSV (a summary FILE.json is written beside it)")
    p.add_argument("--t-high", type=float, default=T_HIGH)
    p.add_argument("--t-low", type=float, default=T_LOW)
    p.add_argument("--phi-rec", type=float, default=None, help="recognition threshold (default: sidecar min_confidence)")
    p.add_argument("--no-extras", action="store_true", help="JPEG only (the paper), no blur/noise/exposure")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="label only this many images (seeded; 0 = all)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--backend", default="auto")
    return p.parse_args(argv)


@script_main
def main(argv=None) -> int:
    from edgecell.calibration.degrade import default_specs
    from edgecell.modelinfo import read_model_info

    args = parse_args(argv)
    task = read_model_info(args.task_model[0]).task
    data = gate_data_dir(task, args.dataset, args.data)
    splits = args.splits or ("train" if task == "xray" else "validation+test")
    summary = label_dataset(args.task_model, data, Path(args.out), splits=splits, split_list=args.split_list,
                            specs=default_specs(extras=not args.no_extras), t_high=args.t_high,
                            t_low=args.t_low, phi_rec=args.phi_rec, seed=args.seed, limit=args.limit,
                            threads=args.threads, backend=args.backend)
    print(json.dumps({k: summary[k] for k in ("originals", "samples", "counts", "counts_threshold_grid", "wall_s")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
