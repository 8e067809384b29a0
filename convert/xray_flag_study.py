"""Which device-side signal says "do not trust this answer" on a hospital the model never saw?

    python -m edgecell.convert.xray_flag_study RUN_DIR [--folds covid-padchest,covid-web] [-o OUT]

Reads each fold's `scores.npz` and `head.npz` (written by `train_xray_mobilenet`: pooled features,
probabilities and mirrored-film probabilities of the validation films, the test split of the sites
seen in training and the held-out site whole) and scores candidate signals, all numpy on the
pooled 256 features a device already has:

- `confidence` (1 - top probability), `margin` (top-2 logit gap, negated), `energy` (-logsumexp);
- `maha_nearest`: squared Mahalanobis distance to the nearest class mean, shared covariance (the
  flag that shipped before);
- `maha_predicted`: distance to the *predicted* class's mean under that class's own covariance
  (a film called Normal must look like the training normals, not merely like nothing else);
- `relative_maha`: that distance minus the distance to one Gaussian of all training films (Ren et
  al. 2021, relative Mahalanobis);
- `maha_vs_softmax`: distance to the predicted class minus distance to the nearest other class
  (positive: the feature-space classifier disagrees with the network);
- `flip`: total-variation distance between the probabilities of the film and of its mirror image.

Thresholds are calibrated only on the training side: the validation films (held out from
training, of the sites the model *was* trained on): "flag the top r of those" (one threshold, or one per predicted class: `per_class`). The held-out site is only
measured, never used to choose. Output: JSON with AUCs and, per signal and rate r, the share of
wrong and of right answers flagged on each held-out site, and a PNG of the trade-off curves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgecell.errors import script_main

RATES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)


def logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(1, keepdims=True)))[:, 0]


def shrunk_precision(centred: np.ndarray, shrink: float = 0.1) -> np.ndarray:
    cov = centred.T @ centred / max(1, len(centred) - 1)
    d = cov.shape[0]
    return np.linalg.inv((1 - shrink) * cov + shrink * np.trace(cov) / d * np.eye(d))


def quad(d: np.ndarray, precision: np.ndarray) -> np.ndarray:
    return np.einsum("nk,kl,nl->n", d, precision, d)


def fit_gaussians(feats: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """Class means, the shared precision, one precision per class, the all-films Gaussian."""
    means = np.stack([feats[y == c].mean(0) for c in range(n_classes)])
    return {"means": means, "shared": shrunk_precision(feats - means[y]),
            "per_class": np.stack([shrunk_precision(feats[y == c] - means[c]) for c in range(n_classes)]),
            "mean_all": feats.mean(0), "all": shrunk_precision(feats - feats.mean(0))}


def signals(feats: np.ndarray, probs: np.ndarray, flip_probs: np.ndarray, head: dict, g: dict) -> dict[str, np.ndarray]:
    """Every candidate signal per film (larger = trust the answer less)."""
    logits = feats @ head["w"] + head["b"]
    pred = logits.argmax(1)
    top2 = np.sort(logits, 1)[:, -2:]
    n_classes = g["means"].shape[0]
    shared = np.stack([quad(feats - g["means"][c], g["shared"]) for c in range(n_classes)], 1)
    own = np.stack([quad(feats - g["means"][c], g["per_class"][c]) for c in range(n_classes)], 1)
    background = quad(feats - g["mean_all"], g["all"])
    rows = np.arange(len(feats))
    others = np.where(np.eye(n_classes, dtype=bool)[pred], np.inf, shared).min(1)
    return {"confidence": 1 - probs.max(1), "margin": top2[:, 0] - top2[:, 1], "energy": -logsumexp(logits),
            "maha_nearest": shared.min(1), "maha_predicted": own[rows, pred],
            "relative_maha": own[rows, pred] - background, "maha_vs_softmax": shared[rows, pred] - others,
            "flip": 0.5 * np.abs(probs - flip_probs).sum(1)}


def auc(wrong: np.ndarray, right: np.ndarray) -> float:
    """ROC-AUC of a score for wrong (positive) vs right answers (0.5: no use; < 0.5: backwards)."""
    if not len(wrong) or not len(right):
        return float("nan")
    w, r = np.asarray(wrong, np.float64)[:, None], np.asarray(right, np.float64)[None, :]
    return float((w > r).mean() + 0.5 * (w == r).mean())


def thresholds(score: np.ndarray, pred: np.ndarray, rate: float, per_class: bool, n_classes: int) -> np.ndarray:
    """Threshold per class (the same for all unless `per_class`): the (1 - rate) quantile of the
    calibration films' scores (of those the model gave that class)."""
    if not per_class:
        return np.full(n_classes, np.quantile(score, 1 - rate))
    whole = np.quantile(score, 1 - rate)
    return np.array([np.quantile(score[pred == c], 1 - rate) if (pred == c).sum() >= 20 else whole
                     for c in range(n_classes)])


def study_fold(fold_dir: Path, holdout: str) -> dict:
    with np.load(fold_dir / "scores.npz") as z:
        a = {k: z[k] for k in z.files}
    with np.load(fold_dir / "head.npz") as z:
        head = {k: z[k] for k in z.files}
    n_classes = a["train_probs"].shape[1]
    g = fit_gaussians(a["train_feats"], a["train_y"], n_classes)
    held = a["test_site"] == holdout
    cal = signals(a["val_feats"], a["val_probs"], a["val_flip_probs"], head, g)
    cal_pred = a["val_probs"].argmax(1)
    test = signals(a["test_feats"][held], a["test_probs"][held], a["test_flip_probs"][held], head, g)
    pred, y = a["test_probs"][held].argmax(1), a["test_y"][held]
    right = pred == y
    out: dict = {"holdout": holdout, "films": int(held.sum()), "wrong": int((~right).sum()),
                 "top1": float(right.mean()), "calibration_films": int(len(cal_pred)),
                 "calibration_top1": float((cal_pred == a["val_y"]).mean()),
                 "auc_wrong_vs_right": {k: auc(v[~right], v[right]) for k, v in test.items()}, "curves": {}}
    for name in test:
        for per_class in (False, True):
            key = name + (" per class" if per_class else "")
            rows = []
            for rate in RATES:
                limit = thresholds(cal[name], cal_pred, rate, per_class, n_classes)
                flagged = test[name] > limit[pred]
                rows.append({"rate": rate, "wrong_flagged": float(flagged[~right].mean()),
                             "right_flagged": float(flagged[right].mean())})
            out["curves"][key] = rows
    return out


def plot(results: Sequence[dict], keys: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 5), squeeze=False)
    for ax, r in zip(axes[0], results):
        for k in keys:
            rows = r["curves"][k]
            ax.plot([x["right_flagged"] for x in rows], [x["wrong_flagged"] for x in rows], marker="o", ms=3, label=k)
        ax.add_patch(plt.Rectangle((0, 0.5), 0.25, 0.5, color="green", alpha=0.1, label="target"))
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="right answers flagged", ylabel="wrong answers flagged",
               title=f"held out: {r['holdout']} ({r['wrong']} wrong of {r['films']})")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@script_main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgecell.convert.xray_flag_study", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a train_xray_mobilenet --out directory")
    p.add_argument("--folds", default="covid-padchest,covid-web")
    p.add_argument("-o", "--out", type=Path, help="directory for flag_study.json/png (default: RUN)")
    args = p.parse_args(argv)
    out = args.out or args.run
    results = [study_fold(args.run / f"fold_{h}", h) for h in args.folds.split(",")]
    (out / "flag_study.json").write_text(json.dumps(results, indent=1) + "\n")
    for r in results:
        print(f"== {r['holdout']}: {r['wrong']} wrong of {r['films']} (top-1 {r['top1']:.3f})")
        print("AUC " + " ".join(f"{k} {v:.2f}" for k, v in r["auc_wrong_vs_right"].items()))
        for k, rows in r["curves"].items():
            print(f"  {k:28s} " + " ".join(f"{x['rate']:.2f}:{100 * x['wrong_flagged']:.0f}/{100 * x['right_flagged']:.0f}"
                                            for x in rows))
    keys = ["confidence", "energy", "maha_nearest", "relative_maha per class", "flip", "maha_vs_softmax"]
    plot(results, [k for k in keys if k in results[0]["curves"]], out / "flag_study.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
