"""The default X-ray model: ImageNet MobileNet V1 0.25, measured across sources (a whole site held
out), with the statistics the device needs for the "unfamiliar film" and "uncertain" flags and the
upright check. V-BreathNet (`edgecell.convert.train_xray`) stays as the paper's reproduction.

    python -m edgecell.convert.train_xray_mobilenet --out DIR --folds covid-padchest,covid-web,none

Each fold trains one model on every site but the held-out one (`none`: the pooled model that
ships) and scores it on the held-out site whole plus the held-out split of the other sites.

Two recipes (`--recipe`), measured against each other on both held-out-site folds (model card):
- `plain` (the shipped model's): borders trimmed and one size (`film_grey`, bit-exact resize),
  V-BreathNet's mild augmentation, class x age sampling;
- `lungs` (the previous default, against the source shortcut): CLAHE and a margin cut from every
  side (`film_grey` / `film_crop`), a quarter of every batch per class x age cell with every site
  equal within a cell, strong augmentation (geometry, intensity, blur, noise, random erasing,
  text-like strips, black frames).
Both: ImageNet-pretrained backbone, quantization-aware fine-tuning, the same film preparation
functions on the device and in training.

The unfamiliar score is the Mahalanobis distance of the film's pooled features (mean of the last
feature map) to the nearest class mean of the training films (shared covariance, shrunk); its
threshold is a quantile of the in-distribution validation scores; beside it the features' second
opinion (`FLAG_RULE`, chosen by `edgecell.convert.xray_flag_study`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from edgecell.calibration import xray as xdata
from edgecell.errors import script_main
from edgecell.modelinfo import ModelInfo

STEM = "xray"
HEAD_FILE = "xray_head.npz"
SIZE = 192
ALPHA = 0.25
FEATURE_LAYER = "conv_pw_13_relu"
ROTATIONS = (0, 90, 180, 270)
MEAN = [127.5, 127.5, 127.5]
STD = [127.5, 127.5, 127.5]


def model_info(size: int = SIZE, settings: dict | None = None, metrics: dict | None = None) -> ModelInfo:
    from edgecell.quality import DEFAULTS
    from edgecell.tasks.xray import FILM_PREP

    base = {"probs_output": "scores", "features_output": FEATURE_LAYER, "gradcam_head": HEAD_FILE,
            "film_prep": dict(FILM_PREP), "quality": dict(DEFAULTS), "dataset_folders": list(xdata.LABELS),
            "architecture": f"mobilenet-v1 {ALPHA} (ImageNet) + global average pool + dense 3",
            "note": "research use only; not a medical device"}
    base.update(settings or {})
    return ModelInfo(task="xray", name=f"xray-mobilenet-v1-{ALPHA}-{size}", version="3", labels=list(xdata.LABELS),
                     input_size=(size, size), channels=3, mean=list(MEAN), std=list(STD), resize="stretch",
                     settings=base, metrics=metrics or {})


# ----------------------------------------------------------------------------- model

def build_model(size: int = SIZE, weights: str | os.PathLike | None = None, dropout: float = 0.3):
    """MobileNet V1 0.25 (ImageNet weights when given) -> global average pool -> dropout -> dense 3
    softmax ("scores"). Batch-norm momentum 0.9 (Keras' 0.99 lags over a few hundred steps)."""
    import keras

    base = keras.applications.MobileNet(alpha=ALPHA, include_top=False, weights=None, input_shape=(size, size, 3))
    if weights is not None:
        base.load_weights(str(weights))
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    x = keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    out = keras.layers.Dense(len(xdata.LABELS), activation="softmax", name="scores")(x)
    return keras.Model(base.input, out, name=f"xray_mobilenet_v1_{ALPHA}_{size}")


def with_feature_output(model):
    """[scores, last feature map]: what ships (the device pools the map itself for the flag and
    weighs it for Grad-CAM)."""
    import keras

    return keras.Model(model.inputs, [model.get_layer("scores").output, model.get_layer(FEATURE_LAYER).output],
                       name=model.name + "_cam")


def dense_head(model) -> dict[str, np.ndarray]:
    w, b = (np.asarray(v, np.float32) for v in model.get_layer("scores").get_weights())
    return {"kind": np.asarray("gap_dense"), "w": w, "b": b}


# ----------------------------------------------------------------------------- data

def site_weighted_cells(items: Sequence[xdata.Item]) -> dict[str, dict[str, list[int]]]:
    """{cell: {site: [item index]}} for the sampler."""
    out: dict[str, dict[str, list[int]]] = {}
    for i, it in enumerate(items):
        out.setdefault(it.cell, {}).setdefault(xdata.site_of(it), []).append(i)
    return out


class SiteSampler:
    """Each cell (class x age) a quarter of every epoch; within a cell, each site equally (without
    replacement within a site until it is exhausted)."""

    def __init__(self, items: Sequence[xdata.Item], seed: int):
        self.rng = np.random.default_rng(seed)
        self.cells = site_weighted_cells(items)
        self.queue = {(c, s): [] for c, v in self.cells.items() for s in v}

    def epoch(self, size: int) -> np.ndarray:
        per_cell = size // len(self.cells)
        out = []
        for c, sites in self.cells.items():
            per = per_cell // len(sites)
            for s, members in sites.items():
                q = self.queue[(c, s)]
                while len(q) < per:
                    q.extend(self.rng.permutation(members).tolist())
                out.extend(q[:per])
                del q[:per]
        return self.rng.permutation(np.asarray(out))


def augment(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Strong augmentation of a prepared (`film_grey`) film: geometry, intensity, blur/noise, random
    black frames, erased patches and bright text-like strips. No flips (the heart is on the left)."""
    h, w = grey.shape
    angle = rng.uniform(-12, 12)
    scale = rng.uniform(0.85, 1.15)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[0, :2] *= rng.uniform(0.9, 1.1)  # aspect
    m[:, 2] += rng.uniform(-0.08, 0.08, 2) * (w, h)
    out = cv2.warpAffine(grey, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=int(rng.integers(0, 40)))
    x = out.astype(np.float32) / 255.0
    x = np.power(np.clip(x, 0, 1), rng.uniform(0.7, 1.4))
    x = (x - 0.5) * rng.uniform(0.75, 1.3) + 0.5 + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.3:
        x = x + rng.normal(0, rng.uniform(0.01, 0.04), x.shape).astype(np.float32)
    out = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    r = rng.random()
    if r < 0.2:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    elif r < 0.3:
        blur = cv2.GaussianBlur(out, (0, 0), 1.0)
        out = cv2.addWeighted(out, 1.6, blur, -0.6, 0)
    if rng.random() < 0.25:  # black frame (collimation, a scanned film)
        t = rng.integers(0, int(0.12 * h), 4)
        out[: t[0]] = 0
        out[h - t[1]:] = 0
        out[:, : t[2]] = 0
        out[:, w - t[3]:] = 0
    for _ in range(rng.integers(0, 3)):  # bright text-like strip, anywhere
        sh, sw = int(rng.integers(4, 14)), int(rng.integers(15, 70))
        y, x0 = int(rng.integers(0, h - sh)), int(rng.integers(0, w - sw))
        out[y:y + sh, x0:x0 + sw] = np.where(rng.random((sh, sw)) < 0.5, 255, out[y:y + sh, x0:x0 + sw])
    if rng.random() < 0.4:  # random erasing
        eh, ew = int(rng.uniform(0.1, 0.3) * h), int(rng.uniform(0.1, 0.3) * w)
        y, x0 = int(rng.integers(0, h - eh)), int(rng.integers(0, w - ew))
        out[y:y + eh, x0:x0 + ew] = rng.integers(0, 256)
    return out


def to_tensor(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) - 127.5) / 127.5


#: Film preparation per recipe: "lungs" (the default: CLAHE and the margin cut) and "plain" (the
#: ablation: borders trimmed and resized only), to measure what the steps against the shortcut buy.
RECIPES = {"lungs": {}, "plain": {"clahe_clip": 0.0, "margin": 0.0}}


def prepared(items: Sequence[xdata.Item], cache: Path, prep: dict | None = None) -> dict[str, np.ndarray]:
    """{rel: film_grey of the original file} (the device's first step), cached in `cache` (npz)."""
    from edgecell.images import decode_image
    from edgecell.tasks.xray import film_grey

    if cache.exists():
        with np.load(cache) as z:
            have = {k.replace("|", "/"): z[k] for k in z.files}
        if all(it.rel in have for it in items):
            return have
    out = {}
    t0 = time.time()
    for k, it in enumerate(items):
        out[it.rel] = film_grey(decode_image(it.path), prep)[0]
        if (k + 1) % 500 == 0:
            print(f"[data] prepared {k + 1}/{len(items)} films ({time.time() - t0:.0f} s)", flush=True)
    np.savez(cache, **{k.replace("/", "|"): v for k, v in out.items()})
    return out


def batch_tensor(greys: Sequence[np.ndarray], size: int, prep: dict | None = None) -> np.ndarray:
    from edgecell.tasks.xray import film_crop

    return np.stack([to_tensor(film_crop(g, size, prep)) for g in greys])


# ----------------------------------------------------------------------------- training

def fold_items(items: Sequence[xdata.Item], holdout: str, split: str) -> list[xdata.Item]:
    return [it for it in items if it.split == split and xdata.site_of(it) != holdout]


def fit_epochs(model, items: Sequence[xdata.Item], films: dict[str, np.ndarray], holdout: str, epochs: int,
               args, tag: str) -> list[dict]:
    """`epochs` sampled epochs of the recipe's sampling and augmentation on the fold's training
    films (train_on_batch: the films are small and already prepared); validation accuracy after each."""
    train_items, val_items = fold_items(items, holdout, "train"), fold_items(items, holdout, "val")
    if args.recipe == "plain":  # the ablation: V-BreathNet's mild augmentation, class x age cells only
        from edgecell.convert.train_xray import CellSampler
        from edgecell.convert.train_xray import augment as aug

        sampler = CellSampler(train_items, args.seed)
    else:
        sampler, aug = SiteSampler(train_items, args.seed), augment
    rng = np.random.default_rng(args.seed + 1)
    eye = np.eye(len(xdata.LABELS), dtype=np.float32)
    x_val = batch_tensor([films[it.rel] for it in val_items], args.size, args.prep)
    y_val = np.array([it.label_index for it in val_items])
    history = []
    for epoch in range(epochs):
        t0 = time.time()
        order = sampler.epoch(args.epoch_size)
        losses, accs = [], []
        for s in range(len(order) // args.batch):
            idx = order[s * args.batch:(s + 1) * args.batch]
            xb = batch_tensor([aug(films[train_items[i].rel], rng) for i in idx], args.size, args.prep)
            yb = eye[[train_items[i].label_index for i in idx]]
            loss, acc = model.train_on_batch(xb, yb)[:2]
            losses.append(float(loss))
            accs.append(float(acc))
        pred = model.predict(x_val, batch_size=64, verbose=0).argmax(1)
        row = {"stage": tag, "epoch": epoch + 1, "loss": round(float(np.mean(losses)), 4),
               "acc": round(float(np.mean(accs)), 4), "val_acc": round(float((pred == y_val).mean()), 4),
               "seconds": round(time.time() - t0, 1)}
        history.append(row)
        print(f"[{holdout}] " + json.dumps(row), flush=True)
    return history


def train_fold(items: Sequence[xdata.Item], films: dict[str, np.ndarray], holdout: str, out: Path, args) -> dict:
    """Train on every site but `holdout` ('none': all), train split only, then (`--qat-epochs`)
    quantization-aware fine-tuning; save the Keras models and return the fold's report."""
    import keras

    from edgecell.convert.products import find_weights

    keras.utils.set_random_seed(args.seed)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    model = build_model(args.size, find_weights(args.weights))
    steps_total = args.epochs * (args.epoch_size // args.batch)
    sched = keras.optimizers.schedules.CosineDecay(args.lr, steps_total, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(sched),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1), metrics=["accuracy"])
    history = fit_epochs(model, items, films, holdout, args.epochs, args, "float")
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    model.save(out / "model_float.keras")
    print(f"[{holdout}] trained in {(time.time() - t_start) / 60:.1f} min", flush=True)
    return finish_fold(model, items, films, holdout, out, args)


def finish_fold(model, items, films, holdout: str, out: Path, args) -> dict:
    """QAT (if asked), save model.keras (what is exported), score the fold."""
    if args.qat_epochs:
        model = qat_finetune(model, items, films, holdout, out, args)
    model.save(out / "model.keras")
    return score_fold(model, items, films, holdout, out, args)


def qat_finetune(model, items, films, holdout: str, out: Path, args):
    """Quantization-aware fine-tuning (`edgecell.convert.qat`: batch norm folded, per-channel int8
    weights and ReLU6 int8 activations fake-quantized, straight-through): post-training INT8 moved
    5-6 points of top-1 per site on the held-out sites; QAT lets the layers learn around the
    rounding. Returns the plain folded model (kernels snapped to their grid) to export."""
    import keras

    from edgecell.convert.qat import QatSettings, copy_weights, qat_pair

    settings = QatSettings(trainable_from="", lr=args.qat_lr)
    qat, plain = qat_pair(model, settings)
    qat.compile(optimizer=keras.optimizers.Adam(args.qat_lr),
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1), metrics=["accuracy"])
    history = fit_epochs(qat, items, films, holdout, args.qat_epochs, args, "qat")
    copy_weights(qat, plain, snap=True, levels=settings.weight_levels)
    (out / "history_qat.json").write_text(json.dumps(history, indent=1) + "\n")
    return plain


def pooled_features(cam_model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs, fmap = cam_model.predict(x, batch_size=64, verbose=0)
    return probs, fmap.mean(axis=(1, 2))


def rotated_tensor(greys: Sequence[np.ndarray], size: int, k: int, prep: dict | None = None) -> np.ndarray:
    return batch_tensor([np.ascontiguousarray(np.rot90(g, -k)) for g in greys], size, prep)


def score_fold(model, items, films, holdout: str, out: Path, args) -> dict:
    """Probabilities and pooled features of train (for the flag statistics), val and test films of
    the fold, upright and (for the rotation check) turned by 90/180/270 degrees; saved as npz."""
    cam = with_feature_output(model)
    keep = lambda it: xdata.site_of(it) != holdout  # noqa: E731
    groups = {"train": [it for it in items if it.split == "train" and keep(it)],
              "val": [it for it in items if it.split == "val" and keep(it)],
              "test": [it for it in items if it.split == "test" or not keep(it)]}
    arrays = {}
    for name, group in groups.items():
        greys = [films[it.rel] for it in group]
        probs, feats = pooled_features(cam, batch_tensor(greys, args.size, args.prep))
        arrays[f"{name}_probs"], arrays[f"{name}_feats"] = probs, feats
        arrays[f"{name}_y"] = np.array([it.label_index for it in group])
        arrays[f"{name}_site"] = np.array([xdata.site_of(it) for it in group])
        arrays[f"{name}_rel"] = np.array([it.rel for it in group])
        if name in ("val", "test"):  # mirrored films: test-time disagreement, a candidate flag signal
            flipped = [np.ascontiguousarray(g[:, ::-1]) for g in greys]
            arrays[f"{name}_flip_probs"], arrays[f"{name}_flip_feats"] = pooled_features(
                cam, batch_tensor(flipped, args.size, args.prep))
        if name in ("train", "test"):
            sub = greys if name == "test" else greys[::3]
            for k in (1, 2, 3):
                arrays[f"{name}_rot{k}_feats"] = pooled_features(cam, rotated_tensor(sub, args.size, k, args.prep))[1]
    np.savez(out / "scores.npz", **arrays)
    np.savez(out / "head.npz", **dense_head(model))
    return summarize_fold(arrays, holdout)


# ----------------------------------------------------------------------------- flag statistics

def fit_mahalanobis(feats: np.ndarray, y: np.ndarray, n_classes: int, shrink: float = 0.1) -> dict[str, np.ndarray]:
    """Class means and the shared precision matrix (covariance shrunk toward its mean variance)."""
    means = np.stack([feats[y == c].mean(0) if (y == c).any() else feats.mean(0) for c in range(n_classes)])
    centred = feats - means[y]
    cov = centred.T @ centred / max(1, len(feats) - 1)
    d = cov.shape[0]
    cov = (1 - shrink) * cov + shrink * np.trace(cov) / d * np.eye(d)
    return {"maha_means": means.astype(np.float32), "maha_precision": np.linalg.inv(cov).astype(np.float32)}


def mahalanobis(feats: np.ndarray, stats: dict[str, np.ndarray]) -> np.ndarray:
    from edgecell.tasks.xray import unfamiliar_score

    return np.array([unfamiliar_score(f, stats) for f in np.atleast_2d(feats)])


def fit_rotation(arrays: dict) -> dict[str, np.ndarray]:
    """Multinomial logistic regression (0/90/180/270 degrees) on pooled features of training films."""
    from sklearn.linear_model import LogisticRegression

    up = arrays["train_feats"][::3]
    x = np.concatenate([up] + [arrays[f"train_rot{k}_feats"] for k in (1, 2, 3)])
    y = np.repeat(np.arange(4), len(up))
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
    return {"rot_w": clf.coef_.T.astype(np.float32), "rot_b": clf.intercept_.astype(np.float32)}


def summarize_fold(arrays: dict, holdout: str) -> dict:
    """Accuracy on the held-out site and on the other sites' held-out split; the flag scores."""
    y, p = arrays["test_y"], arrays["test_probs"].argmax(1)
    site = arrays["test_site"]
    report: dict = {"holdout": holdout, "n_test": int(len(y)), "top1": float((p == y).mean()), "per_site": {}}
    for s in sorted(set(site.tolist())):
        m = site == s
        report["per_site"][s] = {"n": int(m.sum()), "top1": float((p[m] == y[m]).mean())}
    stats = fit_mahalanobis(arrays["train_feats"], arrays["train_y"], len(xdata.LABELS))
    report["maha_val"] = mahalanobis(arrays["val_feats"], stats).tolist()
    report["maha_test"] = mahalanobis(arrays["test_feats"], stats).tolist()
    return report


# ----------------------------------------------------------------------------- the flag rule

#: The flag rule, calibrated on the training side only (the fold's validation films, of the sites
#: it was trained on; never the held-out site): `unfamiliar` above this quantile of their nearest-
#: class distances; `disagrees` above this quantile of their disagreement scores (the features'
#: second opinion, `edgecell.tasks.xray.disagreement_score`); `uncertain` also under this
#: confidence. Why these signals: `python -m edgecell.convert.xray_flag_study` (XRAY_MODEL_CARD.md).
FLAG_RULE = {"unfamiliar_quantile": 0.99, "disagreement_quantile": 0.90, "min_confidence": 0.5}


def load_fold(fold_dir: Path) -> dict:
    """The fold's scores, its Mahalanobis statistics and the validation films' flag scores."""
    from edgecell.tasks.xray import class_distances, disagreement_score

    with np.load(fold_dir / "scores.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["stats"] = fit_mahalanobis(arrays["train_feats"], arrays["train_y"], len(xdata.LABELS))
    distances = np.stack([class_distances(f, arrays["stats"]) for f in arrays["val_feats"]])
    arrays["val_maha"] = distances.min(1)
    arrays["val_disagreement"] = np.array([disagreement_score(d, int(p))[0]
                                           for d, p in zip(distances, arrays["val_probs"].argmax(1))])
    return arrays


def flag_thresholds(arrays: dict, rule: dict = FLAG_RULE) -> dict:
    """The sidecar settings of `rule` for this fold (thresholds from its validation films)."""
    return {"unfamiliar_threshold": round(float(np.quantile(arrays["val_maha"], rule["unfamiliar_quantile"])), 2),
            "disagreement_threshold": round(float(np.quantile(arrays["val_disagreement"],
                                                              rule["disagreement_quantile"])), 3),
            "min_confidence": rule["min_confidence"], "flag_rule": dict(rule)}


# ----------------------------------------------------------------------------- export and device figures

def calibration_tensors(items: Sequence[xdata.Item], films: dict[str, np.ndarray], holdout: str, n: int,
                        size: int, seed: int, prep: dict | None = None) -> list[np.ndarray]:
    """`n` training films of the fold, spread over cells and sites, prepared as on the device."""
    rng = np.random.default_rng(seed)
    pool = [it for it in items if it.split == "train" and xdata.site_of(it) != holdout]
    chosen = [pool[i] for i in sorted(rng.permutation(len(pool))[:n].tolist())]
    return [batch_tensor([films[it.rel]], size, prep) for it in chosen]


def export_fold(fold_dir: Path, items, films, holdout: str, args, *, formats=("tflite",),
                precisions=("fp32", "int8")) -> dict[str, Path]:
    """The fold's model as the device gets it: [scores, feature map] through the shared converter,
    the head file (dense weights, unfamiliar statistics, upright check) and the sidecar with the
    flag thresholds (`FLAG_RULE` on the fold's validation films)."""
    import keras

    from edgecell.convert.quantize import export_model
    from edgecell.tasks.xray import FILM_PREP

    model = keras.models.load_model(fold_dir / "model.keras", compile=False)
    arrays = load_fold(fold_dir)
    rotation = fit_rotation(arrays)
    export_dir = fold_dir / "export"
    export_dir.mkdir(parents=True, exist_ok=True)
    np.savez(export_dir / HEAD_FILE, **dense_head(model), **arrays["stats"], **rotation)
    model.save(export_dir / f"{STEM}_float.keras")
    info = model_info(args.size, {"film_prep": {**FILM_PREP, **args.prep}, **flag_thresholds(arrays),
                                  "upright_min_probability": 0.5,
                                  # a dict, not a file name: bundles carry the files a setting names and
                                  # the device does not need the float model (only --adapt does)
                                  "training": {"float_model": f"{STEM}_float.keras", "recipe": args.recipe}})
    cal = calibration_tensors(items, films, holdout, args.calibration, args.size, args.seed, args.prep)
    t0 = time.time()
    paths = export_model(with_feature_output(model), info, cal, export_dir, STEM, formats=formats, precisions=precisions,
                         progress=lambda name: print(f"[export {holdout}] {name} ({time.time() - t0:.0f} s)", flush=True))
    if "tflite-int8" in paths:  # its OpenVINO / ONNX siblings (same INT8 arithmetic) share its sidecar
        add_feature_correction(paths["tflite-int8"], model, cal)
        add_linear_correction(paths["tflite-int8"], model, calibration_tensors(
            items, films, holdout, CORRECTION_FILMS, args.size, args.seed, args.prep))
    return paths


def refit_correction(args, items, films) -> dict:
    """The linear feature correction for folds already exported (the INT8 files stay as they
    are: the correction is sidecar + head file), then their INT8 device figures again
    (`cross_source.json`, FP32 rows unchanged)."""
    import keras

    out = Path(args.out)
    report = json.loads((out / "cross_source.json").read_text())
    for h in args.folds.split(","):
        fold_dir = out / f"fold_{h}"
        int8 = fold_dir / "export" / f"{STEM}_int8.tflite"
        model = keras.models.load_model(fold_dir / "model.keras", compile=False)
        add_linear_correction(int8, model, calibration_tensors(items, films, h, CORRECTION_FILMS, args.size,
                                                               args.seed, args.prep))
        if h == "none":
            continue
        report["folds"][h]["tflite-int8"] = r = device_figures(int8, items, h)
        print(f"[device {h}] tflite-int8 (linear correction): "
              + json.dumps({s: round(v["top1"], 4) for s, v in r["per_site"].items()}), flush=True)
        (out / "cross_source.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    return report


def int8_and_float_features(int8_path: Path, model, films: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features of `films` (prepared tensors) from the INT8 file (raw, uncorrected) and from
    the float model it was exported from."""
    from edgecell.model import load_model

    batch = np.stack([np.asarray(x, np.float32).reshape(np.shape(x)[-3:]) for x in films])
    reference = pooled_features(with_feature_output(model), batch)[1]
    session = load_model(int8_path, threads=args_threads()).session
    quantized = []
    for i in range(len(batch)):
        fmap = sorted(session.run(batch[i:i + 1]).values(), key=lambda v: v.size)[1]
        quantized.append(fmap.reshape(-1, fmap.shape[-1]).mean(0))
    return np.stack(quantized), reference


def add_feature_correction(int8_path: Path, model, cal: Sequence[np.ndarray]) -> dict:
    """Fit the per-channel affine map of the INT8 file's pooled features onto the float model's on
    the calibration films (least squares per channel) and write it into the file's sidecar
    (`feature_correction`, read by `edgecell.tasks.xray.pooled_features`)."""
    from edgecell.modelinfo import read_model_info, write_sidecar

    quantized, reference = int8_and_float_features(int8_path, model, cal)
    q0, r0 = quantized - quantized.mean(0), reference - reference.mean(0)
    scale = np.where((q0 * q0).sum(0) > 1e-9, (q0 * r0).sum(0) / np.maximum((q0 * q0).sum(0), 1e-9), 1.0)
    offset = reference.mean(0) - scale * quantized.mean(0)
    info = read_model_info(int8_path)
    info.settings["feature_correction"] = {"scale": np.round(scale, 5).tolist(), "offset": np.round(offset, 5).tolist(),
                                           "fitted_on": f"{len(cal)} calibration films"}
    write_sidecar(int8_path, info)
    w = dense_head(model)["w"]
    shift = float((quantized - reference).mean(0) @ (w[:, 0] - w[:, 1]))
    print(f"[export] {int8_path.name}: feature correction fitted (COVID-Normal logit shift before: {shift:+.3f})", flush=True)
    return info.settings["feature_correction"]


#: Ridge penalties the linear feature correction chooses from (5-fold cross-validation on its films).
CORRECTION_LAMBDAS = (0.1, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
#: Training films the linear correction is fitted on (257 numbers per channel need more than 160).
CORRECTION_FILMS = 960


def ridge_map(q: np.ndarray, r: np.ndarray, lam: float) -> np.ndarray:
    """[K+1, K]: least squares of r on [q, 1] with an L2 penalty `lam` on every coefficient."""
    x = np.hstack([q, np.ones((len(q), 1))]).astype(np.float64)
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ r.astype(np.float64))


def fit_linear_correction(q: np.ndarray, r: np.ndarray, w: np.ndarray, b: np.ndarray,
                          lambdas: Sequence[float] = CORRECTION_LAMBDAS) -> tuple[np.ndarray, float, dict]:
    """The ridge map of INT8 features `q` onto float features `r`, its penalty chosen by 5-fold
    cross-validation on these films (mean squared error of the head's logits `w`, `b`: what the
    answer sees). Returns (matrix, penalty, {penalty: CV error})."""
    folds = np.arange(len(q)) % 5
    logits = r @ w + b
    errors = {}
    for lam in lambdas:
        err = []
        for f in range(5):
            m = ridge_map(q[folds != f], r[folds != f], lam)
            z = (q[folds == f] @ m[:-1] + m[-1]) @ w + b
            err.append(float(((z - logits[folds == f]) ** 2).mean()))
        errors[lam] = float(np.mean(err))
    lam = min(errors, key=errors.get)
    return ridge_map(q, r, lam).astype(np.float32), lam, errors


def add_linear_correction(int8_path: Path, model, films: Sequence[np.ndarray]) -> dict:
    """The linear (across channels) feature correction of the INT8 file: the [K+1, K] matrix goes
    into its head file (`correction_matrix`), the sidecar's `feature_correction` gets
    {"kind": "linear"} (its per-channel scale and offset stay, for the record)."""
    from edgecell.modelinfo import read_model_info, write_sidecar

    quantized, reference = int8_and_float_features(int8_path, model, films)
    head = dense_head(model)
    matrix, lam, errors = fit_linear_correction(quantized, reference, head["w"], head["b"])
    info = read_model_info(int8_path)
    head_path = int8_path.parent / info.settings["gradcam_head"]
    with np.load(head_path) as z:
        stored = {k: z[k] for k in z.files}
    np.savez(head_path, **{**stored, "correction_matrix": matrix})
    info.settings["feature_correction"] = {**info.settings.get("feature_correction", {}), "kind": "linear",
                                           "ridge_penalty": lam, "fitted_on": f"{len(films)} training films",
                                           "cv_logit_mse": {str(k): round(v, 5) for k, v in errors.items()}}
    write_sidecar(int8_path, info)
    print(f"[export] {int8_path.name}: linear feature correction (ridge {lam:g}, CV logit MSE "
          f"{errors[lam]:.4f}) on {len(films)} films", flush=True)
    return info.settings["feature_correction"]


def device_figures(model_path: Path, items: Sequence[xdata.Item], holdout: str) -> dict:
    """Per site: top-1 and the flags, through the device pipeline (decode the original file,
    `pipeline.predict`), on the fold's test films (held-out site whole + the others' test split)."""
    from edgecell.commission import LabelledFilm, flagged_shares, score_films, wilson_interval
    from edgecell.model import load_model

    test = [it for it in items if it.split == "test" or xdata.site_of(it) == holdout]
    films = [LabelledFilm(it.rel, it.path, it.label) for it in test]
    outcomes, errors = score_films(load_model(model_path, threads=args_threads()), films)
    site = {it.rel: xdata.site_of(it) for it in test}
    out: dict = {"model": model_path.name, "errors": errors, "per_site": {}}
    for s in sorted(set(site.values())):
        sub = [o for o in outcomes if site[o.file] == s]
        k = sum(o.correct for o in sub)
        out["per_site"][s] = {"n": len(sub), "top1": k / len(sub), "ci95": wilson_interval(k, len(sub)),
                              **flagged_shares(sub)}
    k = sum(o.correct for o in outcomes)
    out["all"] = {"n": len(outcomes), "top1": k / len(outcomes), **flagged_shares(outcomes)}
    if holdout in xdata.SITES:
        # COVID vs adult Normal with the held-out COVID site: recall on it and on the RSNA test films
        adult_normal = [o for o in outcomes if site[o.file] == "rsna"]
        held = [o for o in outcomes if site[o.file] == holdout]
        out["balanced_holdout_vs_rsna"] = 0.5 * (np.mean([o.correct for o in held]) + np.mean([o.correct for o in adult_normal]))
    out["outcomes"] = [{"file": o.file, "site": site[o.file], "truth": o.truth, "label": o.label,
                        "confidence": round(o.confidence, 4), "uncertain": o.uncertain, "unfamiliar": o.unfamiliar,
                        "score": o.unfamiliar_score} for o in outcomes]
    return out


def args_threads() -> int:
    return 2


def finish(args, items, films) -> dict:
    """After training: the flag rule across folds, each fold exported (TFLite FP32 + INT8) and
    scored through the device pipeline, the pooled model exported in every format."""
    from edgecell.convert.xray_flag_study import study_fold

    out = Path(args.out)
    holdouts = [h for h in args.folds.split(",") if h != "none" and (out / f"fold_{h}" / "scores.npz").exists()]
    previous = json.loads((out / "cross_source.json").read_text()) if (out / "cross_source.json").exists() else {}
    report = {"flag_rule": FLAG_RULE, "folds": previous.get("folds", {}) if not holdouts else {},
              **{k: v for k, v in previous.items() if k == "pooled"}}
    for h in holdouts:
        report.setdefault("flag_study", {})[h] = study_fold(out / f"fold_{h}", h)["auc_wrong_vs_right"]
        paths = export_fold(out / f"fold_{h}", items, films, h, args)
        report["folds"][h] = {k: device_figures(p, items, h) for k, p in paths.items()}
        for k, r in report["folds"][h].items():
            print(f"[device {h}] {k}: " + json.dumps({s: round(v["top1"], 4) for s, v in r["per_site"].items()})
                  + f" balanced {r.get('balanced_holdout_vs_rsna', float('nan')):.4f}", flush=True)
        (out / "cross_source.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    if "none" in args.folds.split(",") and (out / "fold_none" / "scores.npz").exists():
        paths = export_fold(out / "fold_none", items, films, "none", args, formats=("tflite", "openvino", "onnx"))
        report["pooled"] = {k: device_figures(p, items, "none") for k, p in paths.items()}
        for k, r in report["pooled"].items():
            print(f"[device pooled] {k}: top-1 {r['all']['top1']:.4f} " +
                  json.dumps({s: round(v["top1"], 4) for s, v in r["per_site"].items()}), flush=True)
    (out / "cross_source.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    return report


# ----------------------------------------------------------------------------- commissioning as a new site

def commission_study(args, items, holdout: str, sizes: Sequence[int] = (10, 25, 50)) -> dict:
    """A held-out site commissions the fold's exported model: the site's films are the held-out
    site's (all COVID) plus the held-out RSNA normals (the films a site would have of both
    findings); for each size, `adapt` on that many and score the rest, before and after."""
    from edgecell.convert.adapt_xray import adapt

    fold_dir = Path(args.out) / f"fold_{holdout}"
    site_dir = fold_dir / "site_films"
    site_dir.mkdir(parents=True, exist_ok=True)
    films = [it for it in items if xdata.site_of(it) == holdout or (xdata.site_of(it) == "rsna" and it.split == "test")]
    rows = ["file,label"]
    for it in films:
        name = it.rel.replace("/", "__")
        link = site_dir / name
        if not link.exists():
            link.symlink_to(it.path)
        rows.append(f"{name},{it.label}")
    (fold_dir / "site_labels.csv").write_text("\n".join(rows) + "\n")
    study = {}
    for n in sizes:
        t0 = time.time()
        summary = adapt(fold_dir / "export" / f"{STEM}_int8.tflite", site_dir, fold_dir / "site_labels.csv",
                        fold_dir / f"site_{n}", n_train=n, seed=args.seed,
                        formats=("tflite", "openvino") if n == max(sizes) else ("tflite",))
        study[n] = {k: summary[k] for k in ("films_adapted_on", "films_evaluated", "before", "after", "seconds")}
        print(f"[commission {holdout}] {n} films: {summary['before']['accuracy']:.4f} -> {summary['after']['accuracy']:.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)
        (fold_dir / "commission_study.json").write_text(json.dumps(study, indent=1) + "\n")
    return study


# ----------------------------------------------------------------------------- pooled figures and shipping

def pooled_eval(args) -> dict:
    """The pooled model on the held-out split through the device pipeline (`evaluate_classifier`):
    TFLite FP32 and INT8, the OpenVINO IR and ONNX siblings of the INT8 file (`convert.siblings`:
    the same INT8 arithmetic; kept at >= 99 % agreement with LiteRT on 60 held-out films) and the
    FP32 IR and ONNX; end-to-end latency with Grad-CAM and the flag (`train_xray.latency`, the
    V-BreathNet card's measurement) and the upright check."""
    import shutil
    from types import SimpleNamespace

    from edgecell.convert import train_xray
    from edgecell.convert.siblings import make_siblings
    from edgecell.evaluation.classification import evaluate_classifier

    out = Path(args.out)
    fold = out / "fold_none"
    export_dir = fold / "export"
    shutil.copyfile(out / "xray_split.tsv", fold / "xray_split.tsv")
    items = xdata.read_list(fold / "xray_split.tsv", args.data)
    sib = export_dir / "siblings"
    sib.mkdir(exist_ok=True)
    for name in (f"{STEM}_int8.tflite", f"{STEM}_int8.json", HEAD_FILE):
        shutil.copyfile(export_dir / name, sib / name)
    test = [it.path for it in items if it.split == "test"]
    check = [test[i] for i in np.random.default_rng(1).permutation(len(test))[:60]]
    siblings = make_siblings(sib / f"{STEM}_int8.tflite", sib, check)
    print("[siblings] " + json.dumps(siblings), flush=True)
    models = [export_dir / f"{STEM}_fp32.tflite", export_dir / f"{STEM}_int8.tflite"]
    models += [sib / r["file"] for r in siblings if r["kept"]]
    models += [export_dir / f"{STEM}_fp32.xml", export_dir / f"{STEM}_fp32.onnx"]
    report = evaluate_classifier(models, xdata.heldout_folder(items, fold), fold / "eval", split="test",
                                 title="X-ray MobileNet on the held-out split (pooled sites)")
    for key, r in report["models"].items():
        print(f"[eval] {key:22s} {r['file']} top-1 {100 * r['top1']:.1f} %  macro-F1 {100 * r['macro']['f1']:.1f} %",
              flush=True)
    lat = train_xray.latency(SimpleNamespace(out=str(fold), data=args.data))
    for name in (f"{STEM}_int8.xml", f"{STEM}_int8.onnx"):
        if (sib / name).exists():
            lat.update(sibling_latency(sib / name, items))
    return {"classification": report, "latency": lat, "siblings": siblings,
            "upright_check": upright_figures(export_dir / f"{STEM}_int8.tflite", items)}


def sibling_latency(path: Path, items, runs: int = 30) -> dict:
    """End-to-end ms with Grad-CAM and the flag for one sibling file (as `train_xray.latency`)."""
    from edgecell.images import decode_image
    from edgecell.model import load_model
    from edgecell.pipeline import predict

    image = decode_image(next(it.path for it in items if it.split == "test"))
    model = load_model(path, threads=2)
    for _ in range(5):
        predict(model, image)
    t = [predict(model, image)[1] for _ in range(runs)]
    row = {"total_ms": round(float(np.median([x.total for x in t])), 2),
           "p90_ms": round(float(np.percentile([x.total for x in t], 90)), 2),
           "infer_ms": round(float(np.median([x.infer for x in t])), 2), "backend": model.session.backend}
    print(f"[latency] sibling {path.name}: " + json.dumps(row), flush=True)
    return {f"sibling-{path.suffix[1:]}-int8": row}


def upright_figures(model_path: Path, items: Sequence[xdata.Item], n: int = 120) -> dict:
    """The upright check through the device pipeline: `n` held-out films as they are and turned by
    90, 180 and 270 degrees; share of each reported as turned (upright: false alarms)."""
    from edgecell.images import decode_image
    from edgecell.model import load_model
    from edgecell.pipeline import predict

    model = load_model(model_path, threads=2)
    test = [it for it in items if it.split == "test"]
    chosen = [test[i] for i in np.random.default_rng(0).permutation(len(test))[:n]]
    out = {}
    for k in range(4):
        turned = [predict(model, np.ascontiguousarray(np.rot90(decode_image(it.path), -k)), gradcam=False)[0].rotation
                  for it in chosen]
        out[f"turned_{90 * k}"] = {"films": len(chosen), "reported_turned": float(np.mean([bool(r) for r in turned])),
                                   "angle_right": float(np.mean([r == 90 * k for r in turned]))}
    print("[upright] " + json.dumps(out), flush=True)
    return out


def ship(args, dest: Path) -> dict:
    """Copy the pooled INT8 TFLite model, its sidecar (with the held-out and cross-source figures),
    the head file and the float Keras model (for `commission --adapt`) into `dest`."""
    from edgecell.convert.quantize import ship_model
    from edgecell.evaluation.classification import sha256

    out = Path(args.out)
    export_dir = out / "fold_none" / "export"
    ev = json.loads((out / "fold_none" / "eval" / "classification.json").read_text())
    cross = json.loads((out / "cross_source.json").read_text())
    r = ev["models"]["litert-int8"]
    metrics = {"heldout_images": r["n"], "top1": round(r["top1"], 4), "macro_f1": round(r["macro"]["f1"], 4),
               "split": f"xray_split.tsv test (seed {args.seed})",
               "cross_source": {h: {"held_out_site_top1": round(f["tflite-int8"]["per_site"][h]["top1"], 4),
                                    "balanced_vs_rsna": round(float(f["tflite-int8"]["balanced_holdout_vs_rsna"]), 4),
                                    "wrong_flagged_uncertain": round(f["tflite-int8"]["per_site"][h]["wrong_flagged_uncertain"], 4),
                                    "right_flagged_uncertain": round(f["tflite-int8"]["per_site"][h]["right_flagged_uncertain"], 4)}
                                for h, f in cross["folds"].items()}}
    target = ship_model(export_dir / f"{STEM}_int8.tflite", dest, metrics,
                        extra_files=[export_dir / HEAD_FILE, export_dir / f"{STEM}_float.keras"])
    sums = {p.name: sha256(p) for p in (target, target.with_suffix(".json"), dest / HEAD_FILE, dest / f"{STEM}_float.keras")}
    print("[ship] " + json.dumps(sums), flush=True)
    return sums


# ----------------------------------------------------------------------------- main

@script_main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgecell.convert.train_xray_mobilenet", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="data root holding both X-ray sets (default: EDGECELL_DATA or ../shared/data)")
    p.add_argument("--out", required=True)
    p.add_argument("--folds", default="covid-padchest,covid-web,none",
                   help="sites to hold out, one model each, comma-separated ('none' = the pooled model)")
    p.add_argument("--weights", help="ImageNet MobileNet V1 0.25 no-top .h5 (default ../shared/weights)")
    p.add_argument("--size", type=int, default=SIZE)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--epoch-size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--qat-epochs", type=int, default=3, help="quantization-aware fine-tuning epochs (0: none)")
    p.add_argument("--qat-lr", type=float, default=5e-5)
    p.add_argument("--qat-only", action="store_true",
                   help="skip the float training: QAT the fold's model_float.keras and score it again")
    p.add_argument("--calibration", type=int, default=160, help="INT8 calibration films (training split)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="plain",
                   help="film preparation + augmentation + sampling: plain (the shipped model's) or lungs "
                        "(CLAHE, margin cut, strong augmentation, site-balanced sampling: the previous default)")
    p.add_argument("--measure", type=Path, metavar="MODEL",
                   help="score MODEL on the held-out split per site through the device pipeline and exit")
    p.add_argument("--commission-study", action="store_true",
                   help="after --finish: each held-out site commissions its fold's model with 10/25/50 films")
    p.add_argument("--ship", type=Path, metavar="DIR", help="after --finish: pooled figures, then ship to DIR")
    p.add_argument("--refit-correction", action="store_true",
                   help="skip training: fit the linear INT8 feature correction of the exported folds, device figures")
    p.add_argument("--finish", action="store_true", help="skip training: flag rule, export, device figures")
    args = p.parse_args(argv)
    args.prep = RECIPES[args.recipe]
    from edgecell.convert.training import start_tensorflow

    start_tensorflow(threads=args.threads, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = out / "xray_split.tsv"
    if split.exists():
        items = xdata.read_list(split, args.data)
    else:
        items, notes, _ = xdata.build(args.data, seed=args.seed)
        xdata.write_list(split, items)
        (out / "xray_split_notes.json").write_text(json.dumps(notes, indent=1) + "\n")
    if args.measure:
        figures = device_figures(args.measure, items, "none")
        (out / f"measure_{args.measure.stem}.json").write_text(json.dumps(figures, indent=1, default=float) + "\n")
        print(json.dumps({k: v for k, v in figures.items() if k != "outcomes"}, default=float))
        return 0
    films = prepared(items, out / f"films_{args.recipe}.npz", args.prep)
    print(f"[data] {len(items)} films prepared", flush=True)
    if args.ship:
        (out / "pooled_eval.json").write_text(json.dumps(pooled_eval(args), indent=1, default=float) + "\n")
        ship(args, args.ship)
        return 0
    if args.commission_study:
        for holdout in [h for h in args.folds.split(",") if h != "none"]:
            commission_study(args, items, holdout)
        return 0
    if args.finish:
        finish(args, items, films)
        return 0
    if args.refit_correction:
        refit_correction(args, items, films)
        return 0
    for holdout in args.folds.split(","):
        if holdout != "none" and holdout not in xdata.SITES:
            raise SystemExit(f"error: unknown site {holdout!r}; sites: {', '.join(xdata.SITES)}")
        fold_dir = out / f"fold_{holdout}"
        if args.qat_only:
            import keras

            if not (fold_dir / "model_float.keras").exists():
                (fold_dir / "model.keras").rename(fold_dir / "model_float.keras")
            report = finish_fold(keras.models.load_model(fold_dir / "model_float.keras", compile=False), items, films,
                                 holdout, fold_dir, args)
        else:
            report = train_fold(items, films, holdout, fold_dir, args)
        (fold_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"[{holdout}] top-1 {report['top1']:.3f} " + json.dumps(report["per_site"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
