"""Detection and counting metrics for the cells model, through the device pipeline.

- `map50`: VOC all-point AP at IoU 0.5 per class and their mean;
- `counting_metrics`: the paper's Table 2 accuracy (1 - |est - gt| / gt on totals over the split)
  and Table 1's mean absolute count error per image, per class;
- `threshold_sweep`: Table 1's procedure, 0.20..0.60 step 0.05, one threshold per class by the
  smallest mean absolute error on a validation list;
- `evaluate_cells(model_paths, data_dir, out_dir, backend, split)`: every model through
  `load_model` + `pipeline.predict` (the code a device runs), JSON + Markdown + PNG.

No TensorFlow needed.
"""

from __future__ import annotations

import numpy as np

from edgecell.evaluation.flags import flags_markdown
from edgecell.tasks.boxes import box_iou


def match_detections(boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """True-positive flags for detections of one class in one image, in the given order's
    descending score; each ground truth matches at most one detection (VOC rule)."""
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros(len(scores), bool)
    if len(gt_boxes) == 0 or len(boxes) == 0:
        return tp
    ious = box_iou(boxes[order], gt_boxes)
    used = np.zeros(len(gt_boxes), bool)
    for k in range(len(order)):
        j = int(np.argmax(np.where(used, -1, ious[k])))
        if not used[j] and ious[k, j] >= iou:
            used[j] = True
            tp[order[k]] = True
    return tp


def average_precision(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> tuple[float, np.ndarray, np.ndarray]:
    """VOC all-point interpolated AP from pooled detections; also the precision/recall curve."""
    if n_gt == 0:
        return float("nan"), np.zeros(0), np.zeros(0)
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.asarray(tp, bool)[order]
    ctp, cfp = np.cumsum(tp), np.cumsum(~tp)
    recall = ctp / n_gt
    precision = ctp / np.maximum(ctp + cfp, 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1])), precision, recall


def map50(predictions: list[tuple[np.ndarray, np.ndarray, np.ndarray]], truths: list[tuple[np.ndarray, np.ndarray]],
          labels: list[str] | tuple[str, ...], iou: float = 0.5) -> dict:
    """predictions: per image (boxes, classes, scores); truths: per image (boxes, labels).
    Returns {"ap": {label: AP}, "map": mean, "curves": {label: (precision, recall)}}."""
    aps, curves = {}, {}
    for c, name in enumerate(labels):
        all_scores, all_tp, n_gt = [], [], 0
        for (pb, pc, ps), (gb, gl) in zip(predictions, truths):
            m, g = pc == c, gb[gl == c]
            n_gt += len(g)
            all_scores.append(ps[m])
            all_tp.append(match_detections(pb[m], ps[m], g, iou))
        ap, prec, rec = average_precision(np.concatenate(all_scores) if all_scores else np.zeros(0),
                                          np.concatenate(all_tp) if all_tp else np.zeros(0, bool), n_gt)
        aps[name], curves[name] = ap, (prec, rec)
    vals = [v for v in aps.values() if not np.isnan(v)]
    return {"ap": aps, "map": float(np.mean(vals)) if vals else float("nan"), "curves": curves}


# ----------------------------------------------------------------------------- counting
SWEEP = tuple(round(0.20 + 0.05 * i, 2) for i in range(9))  # 0.20 .. 0.60, the paper's Table 1


def counting_accuracy(est_total: float, gt_total: float) -> float:
    """The paper's Table 2: 1 - |estimated - ground truth| / ground truth, on totals over a split."""
    if gt_total == 0:
        return float("nan") if est_total else 1.0
    return 1.0 - abs(est_total - gt_total) / gt_total


def count_matrix(predictions: list[tuple[np.ndarray, np.ndarray, np.ndarray]], thresholds: np.ndarray,
                 n_classes: int) -> np.ndarray:
    """Images x classes counts of the detections whose score reaches the class threshold.
    (NMS and platelet de-duplication are greedy from the highest score, so thresholding their
    output at a floor equals running them on the thresholded detections.)"""
    out = np.zeros((len(predictions), n_classes), np.int64)
    for i, (_, c, s) in enumerate(predictions):
        keep = s >= thresholds[c] if len(s) else np.zeros(0, bool)
        out[i] = np.bincount(c[keep], minlength=n_classes)[:n_classes]
    return out


def counting_metrics(est: np.ndarray, gt: np.ndarray, labels) -> dict:
    """Per class: totals, Table-2 accuracy on totals, mean absolute count error per image."""
    res = {}
    for k, name in enumerate(labels):
        res[name] = {"estimated": int(est[:, k].sum()), "ground_truth": int(gt[:, k].sum()),
                     "accuracy": counting_accuracy(est[:, k].sum(), gt[:, k].sum()),
                     "mae_per_image": float(np.mean(np.abs(est[:, k] - gt[:, k]))) if len(gt) else float("nan")}
    return res


def threshold_sweep(predictions, gt_counts: np.ndarray, labels, grid=SWEEP) -> dict:
    """The paper's Table 1: mean absolute count error per image for each class at each threshold;
    the chosen threshold per class is the one with the smallest error (ties: the lowest)."""
    table = {}
    for t in grid:
        est = count_matrix(predictions, np.full(len(labels), t, np.float32), len(labels))
        table[f"{t:.2f}"] = {name: float(np.mean(np.abs(est[:, k] - gt_counts[:, k]))) for k, name in enumerate(labels)}
    chosen = {}
    for name in labels:
        errs = [(table[f"{t:.2f}"][name], t) for t in grid]
        chosen[name] = float(min(errs)[1])
    return {"grid": [float(t) for t in grid], "mae": table, "chosen": chosen}


# ----------------------------------------------------------------------------- device pipeline
FLOOR = 0.01  # detections kept for mAP and the sweep; counts apply the class thresholds on top


def _model_key(backend: str, precision: str, taken: set) -> str:
    key = f"{backend}-{precision}"
    n = 2
    while key in taken:
        key = f"{backend}-{precision}-{n}"
        n += 1
    taken.add(key)
    return key


def run_model(model_path, annotations, backend: str = "auto", threads: int | None = None, tiles="auto") -> dict:
    """Run the device pipeline (`load_model` + `pipeline.predict`) on annotated images.
    Returns the loaded model, floor-threshold detections per image (image pixels), timings and
    the results' flags (`FlagTally`)."""
    from edgecell.evaluation.flags import FlagTally
    from edgecell.images import decode_image
    from edgecell.model import load_model
    from edgecell.pipeline import predict
    from edgecell.tasks import cells

    model = load_model(model_path, backend, threads=threads)
    cells.check_info(model.info)
    floor = [FLOOR] * len(cells.labels_of(model.info))
    preds, ms, flags = [], [], FlagTally()
    for a in annotations:
        r, timings = predict(model, decode_image(a.image_path), thresholds=floor, tiles=tiles)
        ms.append(timings.total)
        preds.append((r.boxes, r.classes, r.scores))
        flags.add(r)
    return {"model": model, "session": model.session, "info": model.info, "predictions": preds, "ms": ms,
            "flags": flags}


def _pr_plot(curves_by_model: dict, labels, path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 4.2), squeeze=False)
    for k, name in enumerate(labels):
        ax = axes[0, k]
        for key, curves in curves_by_model.items():
            prec, rec = curves[name]
            if len(rec):
                ax.plot(rec, prec, label=key, lw=1.2)
        ax.set_title(f"{name}: precision-recall (IoU 0.5)")
        ax.set_xlabel("recall"), ax.set_ylabel("precision"), ax.set_xlim(0, 1), ax.set_ylim(0, 1.02), ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _overlay_pair(image, ann, result, labels, path) -> str:
    """Ground truth (left) next to the model's counted detections (right)."""
    import cv2

    from edgecell.images import write_image_atomic
    from edgecell.tasks import cells

    gt = cells.CellsResult(ann.boxes, ann.labels, np.ones(len(ann.labels), np.float32), list(labels), image.shape[1::-1])
    left = cells.annotate(image, gt)
    right = cells.annotate(image, result)
    for img, text in ((left, "ground truth"), (right, "edgecell")):
        cv2.putText(img, text, (img.shape[1] - 190, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.65, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, (img.shape[1] - 190, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.65, (255, 255, 255), 1, cv2.LINE_AA)
    sep = np.full((image.shape[0], 6, 3), 255, np.uint8)
    return str(write_image_atomic(path, np.concatenate([left, sep, right], 1)))


def _fmt(v, pct=False):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return f"{100 * v:.2f}" if pct else f"{v:.3f}"


def evaluate_cells(model_paths, data_dir, out_dir, backend: str = "auto", split: str = "Testing",
                   sweep_split: str | list | None = None, threads: int | None = None,
                   overlay_stem: str | None = None) -> dict:
    """Evaluate cells models through the device pipeline on a split, side by side.

    For each model: mAP@0.5 per class and mean (detections above a 0.01 floor), counting
    accuracy per class on totals (Table 2) and mean absolute count error per image (Table 1), at
    the paper's thresholds, at the model's stored thresholds, and at the thresholds chosen by the
    Table 1 sweep (0.20..0.60) on `sweep_split` (a split name, or a list of VOC XML paths; default:
    the training hold-out named in the model's `settings["threshold_holdout"]`, else the official
    Validation list). Writes cells_eval.json, cells_eval.md, cells_pr.png and one
    overlay next to its ground truth into out_dir. Returns the JSON dict.
    """
    import hashlib
    import json
    from pathlib import Path

    from edgecell.calibration.voc import load_split, parse_voc
    from edgecell.pipeline import predict
    from edgecell.tasks import cells

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    test = load_split(data_dir, split)
    if sweep_split is None:
        # the hold-out the model's thresholds were chosen on (stored in its sidecar), else the
        # paper's list (the official Validation split, a subset of Training)
        from edgecell.modelinfo import read_model_info

        stems = read_model_info(model_paths[0]).settings.get("threshold_holdout") if model_paths else None
        sweep_split = ([data_dir / "Training" / "Annotations" / f"{st}.xml" for st in stems] if stems
                       else "Validation")
    if isinstance(sweep_split, str):
        sweep = load_split(data_dir, sweep_split)
        sweep_name = sweep_split
    else:
        sweep = [parse_voc(p) for p in sweep_split]
        sweep_name = f"{len(sweep)} listed images"
    labels = list(test[0].classes)
    gt_test = np.array([[a.counts()[c] for c in labels] for a in test])
    gt_sweep = np.array([[a.counts()[c] for c in labels] for a in sweep])
    report = {"split": split, "images": len(test), "sweep_on": sweep_name, "sweep_images": len(sweep),
              "ground_truth": dict(zip(labels, gt_test.sum(0).tolist())), "models": {}}
    curves, taken, overlay_done, all_preds = {}, set(), None, {}
    paper = np.array([cells.DEFAULT_THRESHOLDS.get(c, 0.5) for c in labels], np.float32)
    for path in map(Path, model_paths):
        run = run_model(path, test, backend, threads)
        info, preds = run["info"], run["predictions"]
        key = _model_key(run["session"].backend, info.precision, taken)
        m = map50(preds, [(a.boxes, a.labels) for a in test], labels)
        curves[key] = m["curves"]
        all_preds[key] = preds
        sw_run = run_model(path, sweep, backend, threads)
        sw = threshold_sweep(sw_run["predictions"], gt_sweep, labels)
        chosen = np.array([sw["chosen"][c] for c in labels], np.float32)
        stored = cells.thresholds_of(info)
        files = [path] + ([path.with_suffix(".bin")] if path.suffix == ".xml" else [])
        size = sum(f.stat().st_size for f in files if f.is_file())
        report["models"][key] = {
            "path": str(path), "backend": run["session"].backend, "precision": info.precision,
            "size_bytes": size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "ms_per_image_median": float(np.median(run["ms"])),
            "map50": {"per_class": m["ap"], "mean": m["map"]},
            "counting": {
                "paper_thresholds": {"thresholds": dict(zip(labels, paper.tolist())),
                                     "per_class": counting_metrics(count_matrix(preds, paper, len(labels)), gt_test, labels)},
                "model_thresholds": {"thresholds": dict(zip(labels, stored.tolist())),
                                     "per_class": counting_metrics(count_matrix(preds, stored, len(labels)), gt_test, labels)},
                "swept_thresholds": {"thresholds": dict(zip(labels, chosen.tolist())),
                                     "per_class": counting_metrics(count_matrix(preds, chosen, len(labels)), gt_test, labels)},
            },
            "sweep": sw,
            "flags": run["flags"].as_dict(),
            "counting_settings": cells.counting_settings(info),
        }
        if overlay_done is None:
            idx = next((i for i, a in enumerate(test) if a.stem == overlay_stem), 0)
            from edgecell.images import decode_image

            image = decode_image(test[idx].image_path)
            r, _ = predict(run["model"], image)
            overlay_done = _overlay_pair(image, test[idx], r, labels, out_dir / f"overlay_{test[idx].stem}_{key}.png")
            report["overlay"] = overlay_done
    # INT8 against FP32 of the same backend
    for key, r in report["models"].items():
        fp_key = key.replace("int8", "fp32")
        fp = report["models"].get(fp_key) if "int8" in key else None
        if fp:
            # same thresholds (the INT8 file's: the product's) on both: what quantization alone
            # changes; the other counting rules are the same only when the sidecars say so
            thr = np.array([r["counting"]["model_thresholds"]["thresholds"][c] for c in labels], np.float32)
            fp_same = counting_metrics(count_matrix(all_preds[fp_key], thr, len(labels)), gt_test, labels)
            r["vs_fp32"] = {
                "same_counting_settings": r["counting_settings"] == fp["counting_settings"],
                "accuracy_delta_points_same_thresholds": {
                    c: 100 * (r["counting"]["model_thresholds"]["per_class"][c]["accuracy"] - fp_same[c]["accuracy"])
                    for c in labels},
                "map50_delta": r["map50"]["mean"] - fp["map50"]["mean"],
                "accuracy_delta_points": {c: 100 * (r["counting"]["model_thresholds"]["per_class"][c]["accuracy"]
                                                    - fp["counting"]["model_thresholds"]["per_class"][c]["accuracy"])
                                          for c in labels},
            }
    png = _pr_plot(curves, labels, out_dir / "cells_pr.png")
    report["pr_png"] = png
    (out_dir / "cells_eval.json").write_text(json.dumps(report, indent=1, default=float))
    (out_dir / "cells_eval.md").write_text(markdown_report(report, labels))
    return report


def markdown_report(report: dict, labels) -> str:
    lines = [f"# Cells evaluation: {report['split']} ({report['images']} images)", "",
             "Ground truth totals: " + ", ".join(f"{c} {n}" for c, n in report["ground_truth"].items()), "",
             "## mAP@0.5 (detections above 0.01)", "",
             "| model | " + " | ".join(labels) + " | mean | ms/image (median) | size |",
             "|---" * (len(labels) + 4) + "|"]
    for key, r in report["models"].items():
        lines.append(f"| {key} | " + " | ".join(_fmt(r["map50"]["per_class"][c]) for c in labels) +
                     f" | **{_fmt(r['map50']['mean'])}** | {r['ms_per_image_median']:.1f} | {r['size_bytes'] / 1e6:.2f} MB |")
    for mode, title in (("model_thresholds", "thresholds stored in the model"),
                        ("paper_thresholds", "the paper's thresholds (RBC 0.55, WBC 0.35, Platelets 0.25)"),
                        ("swept_thresholds", f"thresholds chosen by the Table 1 sweep on {report['sweep_on']}")):
        lines += ["", f"## Counting, {title}", "",
                  "| model | thresholds | " + " | ".join(f"{c} est/gt" for c in labels) + " | " +
                  " | ".join(f"{c} acc %" for c in labels) + " | " + " | ".join(f"{c} MAE/img" for c in labels) + " |",
                  "|---" * (2 + 3 * len(labels)) + "|"]
        for key, r in report["models"].items():
            c = r["counting"][mode]
            pc = c["per_class"]
            lines.append(f"| {key} | " + "/".join(f"{c['thresholds'][n]:.2f}" for n in labels) + " | " +
                         " | ".join(f"{pc[n]['estimated']}/{pc[n]['ground_truth']}" for n in labels) + " | " +
                         " | ".join(_fmt(pc[n]["accuracy"], True) for n in labels) + " | " +
                         " | ".join(f"{pc[n]['mae_per_image']:.2f}" for n in labels) + " |")
    lines += ["", *flags_markdown(report["models"])]
    first = next(iter(report["models"].values()), None)
    if first:
        sw = first["sweep"]
        lines += ["", f"## Threshold sweep (Table 1) on {report['sweep_on']}, first model", "",
                  "| threshold | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for t, row in sw["mae"].items():
            lines.append(f"| {t} | " + " | ".join(f"{row[c]:.2f}" for c in labels) + " |")
        lines.append("| chosen | " + " | ".join(f"{sw['chosen'][c]:.2f}" for c in labels) + " |")
    deltas = [(k, r["vs_fp32"]) for k, r in report["models"].items() if "vs_fp32" in r]
    if deltas:
        lines += ["", "## INT8 against FP32 (same backend)", "",
                  "Accuracy deltas at each file's stored thresholds, and (same thr.) with the INT8 file's "
                  "thresholds (the product's) on both: what quantization alone changes when both sidecars carry "
                  "the same counting rules (last column).", "", "| model | mAP@0.5 delta | " +
                  " | ".join(f"{c} acc delta (points)" for c in labels) + " | " +
                  " | ".join(f"{c} same thr." for c in labels) + " | same counting rules |",
                  "|---" * (2 * len(labels) + 3) + "|"]
        for k, d in deltas:
            same = d.get("accuracy_delta_points_same_thresholds", {})
            lines.append(f"| {k} | {d['map50_delta']:+.4f} | " +
                         " | ".join(f"{d['accuracy_delta_points'][c]:+.2f}" for c in labels) + " | " +
                         " | ".join(f"{same[c]:+.2f}" if c in same else "-" for c in labels) +
                         f" | {'yes' if d.get('same_counting_settings') else 'no'} |")
    return "\n".join(lines) + "\n"
