"""Red-cell morphology metrics (`edgecell eval rbc`), through the device pipeline.

- `roc_auc` / `roc_curve`: per-type ROC (ties counted half, as the Mann-Whitney U);
- `multilabel_report`: per-type AUC, the mean over types with positives, exact-match accuracy (a
  patch is right only when every head is right at its threshold, the paper's Table 1 "accuracy");
- `match_points`: detected cell centres against labelled centres, each labelled centre matched at
  most once, to the nearest unused detection within one cell radius, detections taken in
  descending score (the VOC rule with distance instead of IoU).

No TensorFlow, no scikit-learn: this runs where the device code runs.
"""

from __future__ import annotations

import json
import math

import numpy as np

from edgecell.evaluation.flags import flags_markdown


def match_points(points: np.ndarray, scores: np.ndarray, gt_points: np.ndarray, radius: float) -> np.ndarray:
    """Index of the matched labelled centre per detection (-1: none), detections taken in
    descending score, each labelled centre matched at most once, within `radius` pixels."""
    points = np.asarray(points, np.float32).reshape(-1, 2)
    gt_points = np.asarray(gt_points, np.float32).reshape(-1, 2)
    match = np.full(len(points), -1, np.int64)
    if len(points) == 0 or len(gt_points) == 0:
        return match
    dist = np.sqrt(((points[:, None, :] - gt_points[None, :, :]) ** 2).sum(-1))
    used = np.zeros(len(gt_points), bool)
    for k in np.argsort(-np.asarray(scores), kind="stable"):
        d = np.where(used, np.inf, dist[k])
        j = int(np.argmin(d))
        if d[j] <= radius:
            used[j] = True
            match[k] = j
    return match


def roc_curve(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) over every distinct score threshold."""
    truth = np.asarray(truth).astype(bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the last index of each distinct score
    tp, fp = np.cumsum(t)[last], np.cumsum(~t)[last]
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def roc_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    truth = np.asarray(truth).astype(bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    scores = np.asarray(scores, np.float64)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # average rank of tied scores
    starts = np.r_[0, np.nonzero(np.diff(sorted_scores))[0] + 1]
    ends = np.r_[starts[1:], len(scores)]
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def exact_rows(probs: np.ndarray, truth: np.ndarray, threshold: float | np.ndarray = 0.5,
               care: np.ndarray | None = None) -> np.ndarray:
    """Per patch (N x T `probs` / `truth`): every head right at `threshold` (one value, or one per
    type); an entry outside `care` (the don't-care band, `patch_truth`) counts as right."""
    right = (probs >= threshold) == np.asarray(truth).astype(bool)
    return (right if care is None else right | ~np.asarray(care, bool)).all(axis=1)


def abnormal_judged(truth: np.ndarray, care: np.ndarray, cols) -> np.ndarray:
    """Per patch: whether it has an abnormal verdict: it holds an abnormal type (`cols` of the N x T
    `truth`), or no abnormal type is only in its don't-care band (`care`, `patch_truth`)."""
    return np.asarray(truth)[:, cols].any(axis=1) | np.asarray(care, bool)[:, cols].all(axis=1)


def multilabel_report(truth: np.ndarray, probs: np.ndarray, names, threshold: float | np.ndarray = 0.5,
                      care: np.ndarray | None = None) -> dict:
    """Per-type AUC and positives, mean AUC over the types that have positives and negatives,
    exact-match accuracy at `threshold` (one value, or one per type; every head right), over N
    patches x T types. `care` (N x T bool, `patch_truth`): the entries that count; a type held only
    by a cell in a patch's don't-care band is left out of that type's AUC and of exact match."""
    truth = np.asarray(truth).astype(bool)
    probs = np.asarray(probs, np.float32)
    care = np.ones_like(truth) if care is None else np.asarray(care, bool)
    per_type = {}
    for k, name in enumerate(names):
        c = care[:, k]
        per_type[name] = {"auc": roc_auc(truth[c, k], probs[c, k]), "positives": int(truth[c, k].sum())}
    aucs = [v["auc"] for v in per_type.values() if not np.isnan(v["auc"])]
    exact = exact_rows(probs, truth, threshold, care)
    return {"per_type": per_type, "mean_auc": float(np.mean(aucs)) if aucs else float("nan"),
            "exact_match": float(exact.mean()) if len(exact) else float("nan"), "patches": int(len(truth))}


# ----------------------------------------------------------------------------- labels of a patch

def patch_type_truth(points: np.ndarray, classes: np.ndarray, type_names, class_names, crop: int) -> np.ndarray:
    """N x T multi-hot: for each labelled centre's patch, the types of every labelled centre inside it
    (classes without a head, e.g. "uncategorised", are left out). Training uses the same function."""
    from edgecell.tasks.rbc import centres_in_patches

    inside = centres_in_patches(points, points, crop)
    head = np.array([list(type_names).index(n) if n in type_names else -1 for n in class_names], np.int64)
    truth = np.zeros((len(points), len(type_names)), np.uint8)
    for i in range(len(points)):
        h = head[np.asarray(classes)[inside[i]]]
        truth[i, h[h >= 0]] = 1
    return truth


def patch_truth(points: np.ndarray, classes: np.ndarray, type_names, class_names, core_px: float,
                dont_care_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The patch truth by distance from the patch's own centre (Euclidean, image pixels), as the
    paper's region proposals hold whole touching cells: (truth, care, cells), N x T multi-hot of the
    types of every labelled centre within `core_px` (the own cell and the cells touching it), N x T
    bool `care` = False for a type held only by cells between `core_px` and `dont_care_px` (the
    don't-care band: whether such a cell belongs to the patch is a coin toss, so neither answer is
    wrong; masked in the loss and in `multilabel_report`), and per patch how many labelled centres
    lie within `core_px` (1 = a single-cell patch)."""
    points = np.asarray(points, np.float32).reshape(-1, 2)
    head = np.array([list(type_names).index(n) if n in type_names else -1 for n in class_names], np.int64)
    dist = np.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    h = head[np.asarray(classes, np.int64)]
    n, t = len(points), len(type_names)
    truth, near = np.zeros((n, t), bool), np.zeros((n, t), bool)
    rows, cols = np.nonzero((dist <= core_px) & (h[None, :] >= 0))
    truth[rows, h[cols]] = True
    rows, cols = np.nonzero((dist > core_px) & (dist < dont_care_px) & (h[None, :] >= 0))
    near[rows, h[cols]] = True
    return truth.astype(np.uint8), truth | ~near, (dist <= core_px).sum(1)


LEGACY_WINDOW_PX = 80  # the first patch truth: every labelled centre inside an 80 px square (4 cell radii)


def truth_of_patches(points: np.ndarray, classes: np.ndarray, names, info) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth, care, cells per patch) by the model's own definition (`settings["patch_truth"]`: cells
    within `core_px`, a don't-care band to `dont_care_px`), else every centre in its square window."""
    from edgecell.calibration.chula import CLASS_NAMES
    from edgecell.tasks.rbc import PATCH_CROP, centres_in_patches

    rule = info.settings.get("patch_truth")
    if rule:
        return patch_truth(points, classes, names, CLASS_NAMES, float(rule["core_px"]), float(rule["dont_care_px"]))
    crop = int(info.settings.get("patch_crop", PATCH_CROP))
    t = patch_type_truth(points, classes, names, CLASS_NAMES, crop)
    return t, np.ones(t.shape, bool), centres_in_patches(points, points, crop).sum(1)


# ----------------------------------------------------------------------------- evaluation

def evaluate_rbc(model_paths, data_dir, out_dir, *, backend: str = "auto", split: str = "test",
                 threads: int | None = None, overlay_stem: str | None = None) -> dict:
    """Every model file on the held-out Chula smears through the device pipeline:
    - patches around the LABELLED centres (the paper's manually identified patches): per-type ROC-AUC,
      exact-match accuracy, own-cell class accuracy and confusion, patch-level abnormal accuracy;
    - the whole pipeline (`edgecell.pipeline.predict`, as `edgecell run`): centre recall/precision
      within one cell radius, smear-level flag accuracy, time per smear.
    Writes rbc_eval.json, rbc_eval.md, roc_<key>.png, confusion_<key>.png, overlay_<key>.png."""
    import time
    from pathlib import Path

    from edgecell.calibration.chula import CELL_RADIUS_PX, CLASS_NAMES, list_smears
    from edgecell.errors import EdgecellError
    from edgecell.evaluation.classification import confusion_matrix, model_bytes, result_key, sha256
    from edgecell.evaluation.flags import FlagTally
    from edgecell.model import load_model
    from edgecell.pipeline import predict
    from edgecell.tasks import rbc

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    smears = list_smears(data_dir, split)
    if not smears:
        raise EdgecellError(f"no labelled Chula smears in split {split!r}")
    images = {s.stem: s.load() for s in smears}
    overlay_stem = overlay_stem or smears[0].stem
    report: dict = {"split": split, "smears": len(smears), "cells": int(sum(len(s.points) for s in smears)),
                    "radius_px": CELL_RADIUS_PX, "models": {}}
    for raw in model_paths:
        path = Path(raw)
        model = load_model(path, backend, threads=threads)
        info = model.info
        rbc.check_info(info)
        names, classes = list(info.labels), list(info.settings["classes"])
        abnormal_types = list(info.settings.get("abnormal_types", []))
        ab_cols = [names.index(t) for t in abnormal_types]
        ab_ids = [CLASS_NAMES.index(t) for t in abnormal_types]
        threshold = float(info.settings.get("abnormal_threshold", 0.5))
        crop = int(info.settings.get("patch_crop", rbc.PATCH_CROP))
        truth, care, legacy, probs, own, own_truth, ab_p, multi = [], [], [], [], [], [], [], []
        tp = n_det = n_gt = 0
        tp_c = n_det_c = 0  # on the completely labelled fields, where an unmatched detection is a real error
        smear_ok, borderline, complete, complete_cells, times, overlay = [], [], [], [], [], None
        flags = FlagTally()
        for s in smears:
            image = images[s.stem]
            t, c, n_cells = truth_of_patches(s.points, s.classes, names, info)
            logits = rbc.classify_patches(model.session, rbc.cut_patches(image, s.points, crop=crop,
                                                                          size=int(info.input_size[0])), info)
            p = rbc.sigmoid(logits[:, : len(names)])
            multi.append(n_cells > 1)
            legacy.append(patch_type_truth(s.points, s.classes, names, CLASS_NAMES, LEGACY_WINDOW_PX))
            truth.append(t), care.append(c), probs.append(p)
            own.append(logits[:, len(names):].argmax(1)), own_truth.append(s.classes)
            ab_p.append(rbc.trees_probability(p, info.settings["abnormal_trees"]))
            result, timings = predict(model, image)
            times.append(timings.total)
            flags.add(result)
            found = np.array([[c.x, c.y] for c in result.cells], np.float32).reshape(-1, 2)
            score = np.array([c.score for c in result.cells], np.float32)
            hits = int((match_points(found, score, s.points, CELL_RADIUS_PX) >= 0).sum())
            tp += hits
            n_det, n_gt = n_det + len(found), n_gt + len(s.points)
            complete.append(s.complete)
            complete_cells.append(np.full(len(s.points), s.complete))
            if s.complete:
                tp_c, n_det_c = tp_c + hits, n_det_c + len(found)
            truth_flag = bool(np.isin(s.classes, ab_ids).mean() >= float(info.settings.get("smear_truth_fraction", 0.1)))
            smear_ok.append(result.abnormal == truth_flag)
            borderline.append(result.borderline)
            if s.stem == overlay_stem:
                overlay = (image, result, s)
        truth, care, probs = np.concatenate(truth), np.concatenate(care), np.concatenate(probs)
        own, own_truth, ab_p = np.concatenate(own), np.concatenate(own_truth), np.concatenate(ab_p)
        thresholds = rbc.type_thresholds(info)
        ml = multilabel_report(truth, probs, names, thresholds, care=care)
        ab_truth = truth[:, ab_cols].any(1)
        ab_care = abnormal_judged(truth, care, ab_cols)  # an abnormal cell only in the don't-care band: no verdict
        multi = np.concatenate(multi)
        complete, complete_cells = np.array(complete), np.concatenate(complete_cells)
        exact = exact_rows(probs, truth, thresholds, care)
        legacy = np.concatenate(legacy)
        legacy_exact = float(exact_rows(probs, legacy, thresholds).mean())
        legacy_auc = {n: roc_auc(legacy[:, k], probs[:, k]) for k, n in enumerate(names)}
        key = result_key(model.session.backend, info.precision, path, set(report["models"]))
        cm = confusion_matrix(own_truth, own, len(classes))
        report["models"][key] = {
            "path": str(path), "file": path.name, "backend": model.session.backend, "precision": info.precision,
            "bytes": model_bytes(path), "sha256": sha256(path), "trained_on": info.settings.get("cells_trained_on", ""),
            "per_type": ml["per_type"], "mean_auc": ml["mean_auc"], "exact_match": ml["exact_match"],
            "patches": ml["patches"], "multi_cell_patches": int(multi.sum()),
            "patch_truth": info.settings.get("patch_truth") or f"every labelled centre inside the {crop} px window",
            "exact_match_legacy": legacy_exact, "auc_legacy": legacy_auc, "dont_care_patches": int((~care).any(1).sum()),
            "exact_match_single": float(exact[~multi].mean()), "exact_match_multi": float(exact[multi].mean()),
            "own_cell_accuracy": float((own == own_truth).mean()), "confusion": cm.tolist(),
            "abnormal_patch_accuracy": float(((ab_p >= threshold) == ab_truth)[ab_care].mean()),
            "abnormal_patch_auc": roc_auc(ab_truth[ab_care], ab_p[ab_care]),
            "abnormal_base_rate": float(ab_truth[ab_care].mean()), "abnormal_patches_judged": int(ab_care.sum()),
            "centre_recall": tp / max(n_gt, 1), "centre_precision": tp / max(n_det, 1),
            "smear_accuracy": float(np.mean(smear_ok)), "ms_per_smear_median": float(np.median(times)),
            "smear_borderline": int(np.sum(borderline)), "smear_flags": [bool(v) for v in smear_ok],
            "smear_accuracy_decided": float(np.mean(np.array(smear_ok)[~np.array(borderline)]))
            if not all(borderline) else None,
            "complete_fields": int(complete.sum()),
            "centre_precision_complete": tp_c / max(n_det_c, 1),
            "smear_accuracy_complete": float(np.mean(np.array(smear_ok)[complete])) if complete.any() else None,
            "exact_match_complete": float(exact[complete_cells].mean()) if complete_cells.any() else None,
            "ms_per_smear_p90": float(np.percentile(times, 90)), "flags": flags.as_dict(),
        }
        _write_plots(out_dir, key, truth, probs, names, cm, classes, overlay, rbc.cell_radius(info))
    report = _clean(report)
    (out_dir / "rbc_eval.json").write_text(json.dumps(report, indent=1))
    (out_dir / "rbc_eval.md").write_text(markdown_report(report))
    return report


def _clean(obj):
    """NaN -> None, numpy scalars -> Python, for JSON."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _f(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def markdown_report(report: dict) -> str:
    """Table 1 style: per-type AUC and exact-match per model file, then detection and flags."""
    models = report["models"]
    if not models:
        return "no models\n"
    names = list(next(iter(models.values()))["per_type"])
    lines = [f"# Red-cell morphology, Chula RBC-12 `{report['split']}` split: {report['smears']} smears, "
             f"{report['cells']} labelled cells", "",
             "Patches around the labelled centres (held-out smears); per-type ROC-AUC (positives in brackets), "
             "exact-match accuracy (every head right at its threshold: the sidecar's `type_thresholds`, else 0.5) on "
             "all patches, single-cell and multi-cell patches.", "",
             "| model | " + " | ".join(names) + " | mean AUC | exact match (all / single / multi) | "
             f"exact match, first definition (every labelled centre in the central {LEGACY_WINDOW_PX} px) |",
             "|---|" + "---|" * (len(names) + 3)]
    for key, r in models.items():
        lines.append(f"| {key} {r['trained_on']} | " + " | ".join(
            f"{_f(r['per_type'][n]['auc'])} ({r['per_type'][n]['positives']})" for n in names) +
            f" | {_f(r['mean_auc'])} | {_f(r['exact_match'])} / {_f(r['exact_match_single'])} / "
            f"{_f(r['exact_match_multi'])} | {_f(r.get('exact_match_legacy'))} |")
    lines += ["", "Complete fields: the held-out fields whose labels cover >= 70 % of the cells "
              "(`Smear.complete`); elsewhere an unmatched detection may be an unlabelled cell and the labelled "
              "cells are a chosen subset.", "",
              "| model | own-cell accuracy (13 classes) | abnormal patch accuracy (base rate) | abnormal AUC | "
              "centre recall / precision (complete fields) | exact match, complete fields | smear flag accuracy "
              "(complete fields) | borderline smears; accuracy of the others | ms per smear (median / p90) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for key, r in models.items():
        lines.append(f"| {key} | {_f(r['own_cell_accuracy'])} | {_f(r['abnormal_patch_accuracy'])} "
                     f"({_f(r['abnormal_base_rate'])}) | {_f(r['abnormal_patch_auc'])} | {_f(r['centre_recall'])} / "
                     f"{_f(r['centre_precision'])} ({_f(r['centre_precision_complete'])}) | "
                     f"{_f(r['exact_match_complete'])} | {_f(r['smear_accuracy'])} ({_f(r['smear_accuracy_complete'])}) | "
                     f"{r.get('smear_borderline', 0)}; {_f(r.get('smear_accuracy_decided'))} | "
                     f"{r['ms_per_smear_median']:.1f} / {r['ms_per_smear_p90']:.1f} |")
    lines += ["", *flags_markdown(models)]
    lines += ["Files: " + ", ".join(f"`{r['file']}` {r['sha256'][:12]}" for r in models.values()), ""]
    return "\n".join(lines)


def _write_plots(out_dir, key: str, truth, probs, names, cm, classes, overlay, radius: float) -> None:
    """roc_<key>.png (one curve per type), confusion_<key>.png, overlay_<key>.png (prediction beside
    the labels); nothing when matplotlib is missing (the figures are in the JSON)."""
    import cv2

    from edgecell.images import write_image_atomic
    from edgecell.tasks import rbc

    if overlay is not None:
        image, result, smear = overlay
        truth_view = image.copy()
        from edgecell.calibration.chula import CLASS_NAMES

        for (x, y), c in zip(smear.points, smear.classes):
            colour = rbc.NORMAL_COLOUR if CLASS_NAMES[int(c)] not in result.abnormal_types else rbc.ABNORMAL_COLOUR
            cv2.circle(truth_view, (int(x), int(y)), int(radius * 0.9), colour, 1, cv2.LINE_AA)
            if colour == rbc.ABNORMAL_COLOUR:
                cv2.putText(truth_view, CLASS_NAMES[int(c)], (int(x) - 18, int(y) - 20), cv2.FONT_HERSHEY_SIMPLEX,
                            0.4, colour, 1, cv2.LINE_AA)
        cv2.putText(truth_view, f"labels (smear {smear.stem})", (6, 470), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
        write_image_atomic(out_dir / f"overlay_{key}.png", np.hstack([rbc.annotate(image, result), truth_view]))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    from edgecell.evaluation.classification import plot_confusion

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for k, n in enumerate(names):
        if truth[:, k].any() and not truth[:, k].all():
            fpr, tpr = roc_curve(truth[:, k], probs[:, k])
            ax.plot(fpr, tpr, label=f"{n} {roc_auc(truth[:, k], probs[:, k]):.3f}", lw=1.2)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=f"ROC per type, {key}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / f"roc_{key}.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 6))
    plot_confusion(ax, np.asarray(cm), classes, f"own-cell class, {key}")
    fig.tight_layout()
    fig.savefig(out_dir / f"confusion_{key}.png", dpi=100)
    plt.close(fig)
