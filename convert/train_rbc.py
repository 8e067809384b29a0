"""Train the red-cell morphology models on Chula RBC-12 (`edgecell.calibration.chula`, its split by
image): a cell-centre detector, and the patch classifier with one sigmoid head per cell type.

    python -m edgecell.convert.train_rbc centres --out DIR --minutes 25
    python -m edgecell.convert.train_rbc patches --out DIR --minutes 20 --cells mixed    # Model A
    python -m edgecell.convert.train_rbc patches --out DIR --minutes 20 --cells single   # Model B

* centres: the cell counter's CenterNet (ImageNet MobileNet V1 0.25 + FPN to stride 8) with one class,
  "RBC", trained on Chula's centre points of the completely labelled train fields (`Smear.complete`) as boxes of one cell radius around each point, through the
  counter's own augmentation (scale 0.75-1.25, flips, HSV jitter, mosaic, 10 % greyscale) and the
  runtime's `edgecell.tasks.cells.preprocess`. The result is a `cells` model: `edgecell run` counts
  with it, and the `rbc` task uses it to find the cells it classifies. The checkpoint with the best
  centre F1 on the val smears (within one cell radius) is kept.
* patches: see `edgecell.tasks.rbc` for how a patch is cut (the runtime's function).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

DETECTOR_INPUT = (320, 256)  # a 640x480 Chula field at half scale (cells ~20 px across), letterboxed


def train_loop(tf, model, loss_fn: Callable, next_batch: Callable, steps_per_epoch: int, validate: Callable,
               out: Path, *, minutes: float, lr: float, max_steps: int = 0, name: str = "model") -> dict:
    """Adam with warm-up then cosine decay over a wall-clock budget; `validate()` -> (score, record)
    after each epoch, the best score's weights kept in out/best.weights.h5 (loaded at the end)."""
    import keras

    from edgecell.convert.train_cells import progress

    opt = keras.optimizers.Adam(learning_rate=lr, weight_decay=5e-4, clipnorm=10.0)

    @tf.function(reduce_retracing=True)
    def train_step(x, *t):
        with tf.GradientTape() as tape:
            total, parts = loss_fn(model(x, training=True), *t)
        opt.apply_gradients(zip(tape.gradient(total, model.trainable_variables), model.trainable_variables))
        return total, parts

    budget, warmup = minutes * 60, min(150, steps_per_epoch * 2)
    t0, step, best, best_epoch, times = time.time(), 0, -np.inf, 0, []
    log = open(out / "train_log.jsonl", "a")
    for epoch in range(1, 100_000):
        te, run = time.time(), []
        for s in range(steps_per_epoch):
            frac = min(1.0, (time.time() - t0) / budget)
            rate = lr * min(1.0, (step + 1) / warmup) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
            opt.learning_rate.assign(rate)
            x, *t = next_batch()
            total, parts = train_step(tf.constant(x), *map(tf.constant, t))
            run.append(float(total))
            step += 1
            progress(epoch, s + 1, steps_per_epoch, float(np.mean(run[-20:])), rate, time.time() - t0, budget)
            if max_steps and step >= max_steps:
                break
        score, rec = validate()
        times.append(time.time() - te)
        elapsed = time.time() - t0
        improved = score > best
        if improved:
            best, best_epoch = score, epoch
            model.save_weights(out / ".best.tmp.weights.h5")  # then a rename: a reader never sees half a file
            os.replace(out / ".best.tmp.weights.h5", out / "best.weights.h5")
        rec = {"epoch": epoch, "step": step, "train_loss": float(np.mean(run)), "lr": rate,
               "elapsed_s": round(elapsed, 1), "score": score, **rec}
        log.write(json.dumps(rec) + "\n")
        log.flush()
        print(f"{name} epoch {epoch} ({times[-1]:.0f} s) loss {np.mean(run):.4f} " +
              " ".join(f"{k} {v:.4f}" for k, v in rec.items() if isinstance(v, float) and k.startswith("val")) +
              ("  *best*" if improved else ""), flush=True)
        if (max_steps and step >= max_steps) or elapsed + np.mean(times[-3:]) > budget:
            break
    model.load_weights(out / "best.weights.h5")
    return {"epochs": epoch, "steps": step, "best_epoch": best_epoch, "best_score": float(best),
            "train_minutes": round((time.time() - t0) / 60, 1)}


# ----------------------------------------------------------------------------- centres

def detector_info(weights_name: str, input_size: tuple[int, int] = DETECTOR_INPUT):
    """The cells-task self-description of the centre detector (one class, "RBC")."""
    from edgecell.modelinfo import ModelInfo
    from edgecell.tasks import cells

    return ModelInfo(task="cells", name="rbc-centres-centernet-mobilenetv1", version="1", labels=["RBC"],
                     input_size=input_size, mean=[127.5], std=[127.5], resize="letterbox", precision="fp32",
                     settings={"head": "centernet", "stride": cells.CENTERNET_STRIDE,
                               "offset_scale": cells.CENTERNET_OFFSET_SCALE, "size_scale": cells.CENTERNET_SIZE_SCALE,
                               "interpolation": "linear", "thresholds": {"RBC": 0.3}, "nms_iou": 0.3,
                               "architecture": "mobilenet-v1 0.25 (ImageNet) + FPN stride 8 + CenterNet head, 1 class",
                               "backbone_weights": weights_name, "trained_on": "chula_rbc12 train split (centre points)"})


def point_boxes(points: np.ndarray, radius: float) -> np.ndarray:
    """Centre points -> boxes of one cell radius around each (what the CenterNet head learns)."""
    p = np.asarray(points, np.float32).reshape(-1, 2)
    return np.concatenate([p - radius, p + radius], 1)


def centre_scores(detections: list[tuple[np.ndarray, np.ndarray]], truth: list[np.ndarray], radius: float,
                  thresholds=(0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)) -> dict[float, dict]:
    """Recall / precision / F1 of detected centres (points, scores) per score threshold."""
    from edgecell.evaluation.rbc import match_points

    out = {}
    for thr in thresholds:
        tp = n_det = n_gt = 0
        for (pts, sc), gt in zip(detections, truth):
            keep = sc >= thr
            tp += int((match_points(pts[keep], sc[keep], gt, radius) >= 0).sum())
            n_det, n_gt = n_det + int(keep.sum()), n_gt + len(gt)
        r, p = tp / max(n_gt, 1), tp / max(n_det, 1)
        out[thr] = {"recall": r, "precision": p, "f1": 2 * r * p / max(r + p, 1e-9)}
    return out


def train_centres(args) -> None:
    from edgecell.convert.training import start_tensorflow

    tf, keras = start_tensorflow(threads=args.threads, seed=args.seed)
    from edgecell.calibration.chula import CELL_RADIUS_PX, list_smears
    from edgecell.convert.centernet_loss import build_heat_targets, make_centernet_loss
    from edgecell.convert.models import build_centernet
    from edgecell.convert.products import find_weights
    from edgecell.convert.train_cells import Batches
    from edgecell.modelinfo import write_sidecar
    from edgecell.tasks import cells

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = find_weights(args.imagenet)
    info = detector_info(weights.name)
    model = build_centernet(info.input_size, 1, weights=weights, name="rbc_centres")
    # only fields labelled (nearly) completely: elsewhere an unlabelled cell would be taught as background
    train = [s for s in list_smears(args.data, "train") if s.complete]
    val = [s for s in list_smears(args.data, "val") if s.complete]
    data = [(s.load(), point_boxes(s.points, CELL_RADIUS_PX), np.zeros(len(s.points), np.int64)) for s in train]
    val_x, val_ctx = zip(*(cells.preprocess(s.load(), info) for s in val))
    val_x = np.concatenate(val_x)
    print(f"centres: {len(train)} train smears, {len(val)} val smears; {model.count_params():,} parameters", flush=True)

    def targets(bs, ls):
        return (build_heat_targets(bs, ls, 1, info.input_size),)

    batches = Batches(data, info, targets, args.batch, args.seed, args.mosaic, 0.1)
    predict = tf.function(lambda x: model(x, training=False))

    def validate():
        dets = []
        for i in range(0, len(val_x), 8):
            for k, pk in enumerate(predict(val_x[i : i + 8]).numpy()):
                r = cells.postprocess({"out": pk[None]}, val_ctx[i + k], info, thresholds=0.1)
                dets.append(((r.boxes[:, :2] + r.boxes[:, 2:]) / 2, r.scores))
        sc = centre_scores(dets, [s.points for s in val], CELL_RADIUS_PX)
        thr = max(sc, key=lambda t: sc[t]["f1"])
        return sc[thr]["f1"], {"val_f1": sc[thr]["f1"], "val_recall": sc[thr]["recall"],
                               "val_precision": sc[thr]["precision"], "val_threshold": float(thr)}

    loss = make_centernet_loss(1)
    summary = train_loop(tf, model, lambda p, y: loss(p, y), batches.get, batches.steps_per_epoch, validate, out,
                         minutes=args.minutes, lr=args.lr, max_steps=args.max_steps, name="centres")
    score, rec = validate()
    info.settings["thresholds"] = {"RBC": rec["val_threshold"]}
    info.settings["threshold_chosen_on"] = f"best centre F1 on the {len(val)} Chula val smears (FP32)"
    info.metrics = {"val_centre_recall": round(rec["val_recall"], 4), "val_centre_precision": round(rec["val_precision"], 4),
                    **summary}
    path = out / "rbc_centres.keras"
    model.save(path)
    write_sidecar(path, info)
    print(f"done: {json.dumps(info.metrics)}; model {path}", flush=True)


# ----------------------------------------------------------------------------- patches

PATCH_MARGIN = 4  # px of room around each cached patch: training shifts the centre by up to this much
CENTRE_LOSS_WEIGHT = 0.5


def type_names() -> tuple[str, ...]:
    """The multi-label heads: every Chula type except "uncategorised" (no type to learn)."""
    from edgecell.calibration.chula import CLASS_NAMES, UNCATEGORISED

    return tuple(n for i, n in enumerate(CLASS_NAMES) if i != UNCATEGORISED)


def smear_patches(smear, crop: int, size: int, margin: int = PATCH_MARGIN) -> dict[str, np.ndarray]:
    """Patches around every labelled centre of one smear, with their labels: `types` multi-hot over
    `type_names()` from every labelled centre inside the patch, `centre` the class id of the patch's
    own cell, `cells` how many labelled centres the patch holds (1 = a single-cell patch)."""
    from edgecell.calibration.chula import CLASS_NAMES
    from edgecell.evaluation.rbc import patch_type_truth
    from edgecell.tasks.rbc import centres_in_patches, cut_patches

    inside = centres_in_patches(smear.points, smear.points, crop)
    types = patch_type_truth(smear.points, smear.classes, type_names(), CLASS_NAMES, crop)
    return {"x": cut_patches(smear.load(), smear.points, crop=crop, size=size, margin=margin), "types": types,
            "centre": smear.classes.astype(np.int64), "cells": inside.sum(1).astype(np.int64),
            "smear": np.full(len(smear.points), int(smear.stem) if smear.stem.isdigit() else -1, np.int64)}


def patch_dataset(data, split: str, crop: int, size: int, cache: Path | None = None) -> dict[str, np.ndarray]:
    """Every labelled cell's patch of one split (cached as .npz: cutting takes a minute)."""
    from edgecell.calibration.chula import list_smears

    path = cache / f"patches_{split}_{crop}_{size}.npz" if cache else None
    if path and path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    parts = [smear_patches(s, crop, size) for s in list_smears(data, split)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **out)
    return out


def build_patch_classifier(size: int, n_types: int, n_classes: int, weights: str | None, alpha: float = 0.25):
    """ImageNet MobileNet V1 (alpha 0.25) on a size x size patch -> logits: n_types sigmoid heads
    (which types the patch holds) then n_classes softmax logits (the class of the patch's own cell)."""
    import keras
    from keras import layers

    base = keras.applications.MobileNet(input_shape=(size, size, 3), alpha=alpha, include_top=False, weights=None)
    if weights:
        base.load_weights(str(weights))
    x = layers.GlobalAveragePooling2D(name="pool")(base.output)
    x = layers.Dropout(0.2, name="drop")(x)
    types = layers.Dense(n_types, name="types")(x)
    centre = layers.Dense(n_classes, name="centre")(x)
    return keras.Model(base.input, layers.Concatenate(name="logits")([types, centre]), name="rbc_patches")


def batched_model(core, size: int, batch: int, features: bool = False):
    """One model call for `batch` patches, with the fixed batch-1 input every converter wants: the
    patches stacked vertically, (1, batch * size, size, 3) -> reshape (batch, size, size, 3) inside
    the graph -> core -> (1, batch, outputs). `features`: a second output, the pooled features
    (1, batch, F) the heads read, so the device can apply the heads in float (`head_setting`)."""
    import keras
    from keras import layers

    inp = keras.Input((batch * size, size, 3), batch_size=1, name="patches")
    x = layers.Reshape((batch, size, size, 3), name="split")(inp)
    x = layers.Lambda(lambda t: keras.ops.reshape(t, (batch, size, size, 3)), name="to_batch")(x)
    if features:
        y, f = keras.Model(core.input, [core.output, core.get_layer("pool").output], name=core.name)(x)
        y = layers.Lambda(lambda t: keras.ops.reshape(t, (1, batch, -1)), name="to_one")(y)
        f = layers.Lambda(lambda t: keras.ops.reshape(t, (1, batch, -1)), name="features")(f)
        return keras.Model(inp, [y, f], name=f"rbc_patches_b{batch}")
    y = layers.Lambda(lambda t: keras.ops.reshape(t, (1, batch, -1)), name="to_one")(core(x))
    return keras.Model(inp, y, name=f"rbc_patches_b{batch}")


def head_setting(core) -> dict:
    """The sidecar's `patch_head`: the two Dense heads (types, own class) as one float matrix over
    the pooled features. The INT8 file's logits output is one int8 tensor for 25 logits (scale
    ~0.2 logit per step, 0.05 in probability at 0.5: enough to move a smear's abnormal share);
    the pooled features are quantized 10x finer, and the heads applied to them in float give
    logits within a few hundredths of FP32 (`edgecell.tasks.rbc.patch_logits`)."""
    types, centre = core.get_layer("types"), core.get_layer("centre")
    kernel = np.concatenate([np.asarray(types.kernel), np.asarray(centre.kernel)], 1)
    bias = np.concatenate([np.asarray(types.bias), np.asarray(centre.bias)])
    return {"features": int(kernel.shape[0]), "weights": [[round(float(v), 7) for v in row] for row in kernel],
            "bias": [round(float(v), 7) for v in bias]}


def augment_patches(x: np.ndarray, rng, size: int, margin: int = PATCH_MARGIN) -> np.ndarray:
    """A random size x size window (centre shifted by up to `margin` px, as a detector misplaces
    it), one of the 8 rotations/flips (a cell has no up), per-patch stain jitter (channel gains
    +-8 %, brightness +-15, contrast +-15 %); uint8 in, uint8 out."""
    n = len(x)
    dx, dy = rng.integers(0, 2 * margin + 1, (2, n))
    out = np.stack([x[i, dy[i] : dy[i] + size, dx[i] : dx[i] + size] for i in range(n)])
    k = int(rng.integers(0, 4))
    out = np.rot90(out, k, axes=(1, 2))
    if rng.random() < 0.5:
        out = out[:, :, ::-1]
    f = out.astype(np.float32)
    mean = f.mean(axis=(1, 2, 3), keepdims=True)
    f = (f - mean) * rng.uniform(0.85, 1.15, (n, 1, 1, 1)) + mean
    f = f * rng.uniform(0.92, 1.08, (n, 1, 1, 3)) + rng.uniform(-15, 15, (n, 1, 1, 1))
    return np.clip(f, 0, 255).astype(np.uint8)


MIN_POSITIVES = 50  # the AUC target counts the types with at least this many held-out cells


def balanced_sampling(types: np.ndarray, power: float) -> np.ndarray:
    """Per-patch sampling probabilities that lift the rare types: a patch weighs (N / n_t) ** power
    for its rarest type t (n_t patches hold t); a patch with no type weighs as the commonest type.
    power 0 = uniform, 1 = every type drawn about equally often."""
    counts = np.maximum(types.sum(0), 1).astype(np.float64)
    per_type = (len(types) / counts) ** power
    w = np.where(types.any(1), (types * per_type).max(1), per_type.min())
    return w / w.sum()


def patch_scores(logits: np.ndarray, n_types: int) -> tuple[np.ndarray, np.ndarray]:
    """(type probabilities N x n_types, own-cell class probabilities N x classes) from logits."""
    from edgecell.tasks.common import softmax
    from edgecell.tasks.rbc import sigmoid

    return sigmoid(logits[:, :n_types]), softmax(logits[:, n_types:])


def with_truth(patches: dict[str, np.ndarray], data, split: str, core_px: float | None,
               dont_care_px: float | None) -> dict[str, np.ndarray]:
    """`patches` with `care` (N x T bool) and, when `core_px` is given, `types` and `cells` by the
    distance definition (`edgecell.evaluation.rbc.patch_truth`, the smears in `patch_dataset`'s
    order); else the square-window truth as cut, every entry cared for."""
    from edgecell.calibration.chula import CLASS_NAMES, list_smears
    from edgecell.evaluation.rbc import patch_truth

    out = dict(patches)
    if not core_px:
        out["care"] = np.ones_like(out["types"], bool)
        return out
    parts = [patch_truth(s.points, s.classes, type_names(), CLASS_NAMES, core_px, dont_care_px or core_px)
             for s in list_smears(data, split)]
    types, care, cells = (np.concatenate([p[i] for p in parts]) for i in range(3))
    if len(types) != len(out["x"]):
        raise SystemExit(f"{split}: {len(types)} labelled centres but {len(out['x'])} cached patches; delete the cache")
    out.update(types=types, care=care, cells=cells.astype(np.int64))
    return out


def truth_setting(args) -> dict | None:
    """The sidecar's `patch_truth`: how a patch's types were defined (None: every centre in the window)."""
    if not getattr(args, "truth_core", None):
        return None
    return {"core_px": float(args.truth_core), "dont_care_px": float(args.dont_care or args.truth_core),
            "distance": "euclidean, from the patch's own labelled centre, image pixels"}


def train_patches(args) -> None:
    from edgecell.convert.training import start_tensorflow

    tf, keras = start_tensorflow(threads=args.threads, seed=args.seed)
    from edgecell.calibration.chula import CLASS_NAMES
    from edgecell.convert.products import find_weights
    from edgecell.evaluation.rbc import multilabel_report
    from edgecell.modelinfo import ModelInfo, write_sidecar
    from edgecell.tasks.common import normalise_float

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache) if args.cache else out
    names = type_names()
    crop, size = args.crop, args.size
    train = with_truth(patch_dataset(args.data, "train", crop, size, cache), args.data, "train", args.truth_core, args.dont_care)
    val = with_truth(patch_dataset(args.data, "val", crop, size, cache), args.data, "val", args.truth_core, args.dont_care)
    if args.cells == "single":
        keep = train["cells"] == 1
        train = {k: v[keep] for k, v in train.items()}
    m = PATCH_MARGIN
    val_x = normalise_float(val["x"][:, m : m + size, m : m + size], [127.5], [127.5])
    weights = find_weights(args.imagenet)
    model = build_patch_classifier(size, len(names), len(CLASS_NAMES), weights)
    print(f"patches ({args.cells}): {len(train['x'])} train patches ({(train['cells'] > 1).mean():.0%} multi-cell), "
          f"{len(val_x)} val; {model.count_params():,} parameters", flush=True)
    if args.init:  # continue from a trained model of the same shape (its weights, not its optimiser state)
        model.set_weights(keras.models.load_model(args.init, compile=False).get_weights())
    rng = np.random.default_rng(args.seed)
    order, pos = rng.permutation(len(train["x"])), [0]
    sample_p = balanced_sampling(train["types"], args.balance) if args.balance else None

    def next_batch():
        if sample_p is not None:
            idx = rng.choice(len(sample_p), args.batch, p=sample_p)
        else:
            if pos[0] + args.batch > len(order):
                order[:] = rng.permutation(len(order))
                pos[0] = 0
            idx = order[pos[0] : pos[0] + args.batch]
            pos[0] += args.batch
        x = normalise_float(augment_patches(train["x"][idx], rng, size), [127.5], [127.5])
        return x, train["types"][idx].astype(np.float32), train["care"][idx].astype(np.float32), train["centre"][idx]

    def loss_fn(pred, types, care, centre):  # binary cross-entropy over the entries that count (`care`)
        per = tf.nn.sigmoid_cross_entropy_with_logits(types, pred[:, : len(names)])
        bce = tf.reduce_sum(per * care) / tf.maximum(tf.reduce_sum(care), 1.0)
        ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(centre, pred[:, len(names) :]))
        return bce + CENTRE_LOSS_WEIGHT * ce, {"bce": bce, "ce": ce}

    predict = tf.function(lambda x: model(x, training=False))

    def validate():
        logits = np.concatenate([predict(val_x[i : i + 256]).numpy() for i in range(0, len(val_x), 256)])
        probs, own = patch_scores(logits, len(names))
        rep = multilabel_report(val["types"], probs, names, care=val["care"])
        own_acc = float((own.argmax(1) == val["centre"]).mean())
        worst = min(v["auc"] for v in rep["per_type"].values() if v["positives"] >= MIN_POSITIVES)
        record = {"val_mean_auc": rep["mean_auc"], "val_exact_match": rep["exact_match"],
                  "val_own_cell_accuracy": own_acc, "val_worst_auc": worst,
                  **{f"val_auc_{n}": v["auc"] for n, v in rep["per_type"].items()}}
        return {"worst": worst, "mean": rep["mean_auc"], "exact": rep["exact_match"]}[args.select], record

    summary = train_loop(tf, model, loss_fn, next_batch, len(order) // args.batch, validate, out,
                         minutes=args.minutes, lr=args.lr, max_steps=args.max_steps, name=f"patches-{args.cells}")
    score, rec = validate()
    info = ModelInfo(task="rbc", name=f"rbc-patches-{args.cells}-mobilenetv1", version="1",
                     labels=list(names), input_size=(size, size), mean=[127.5], std=[127.5],
                     resize="stretch", precision="fp32",
                     settings={"cells_trained_on": args.cells, "classes": list(CLASS_NAMES),
                               "patch_crop": crop, "patch_size": size, "patch_truth": truth_setting(args),
                               "backbone_weights": weights.name, "continued_from": Path(args.init).name if args.init else None,
                               "balance": args.balance, "checkpoint_chosen_by": f"val {args.select} AUC"},
                     metrics={**{k: round(v, 4) for k, v in rec.items()}, **summary})
    path = out / f"rbc_patches_{args.cells}.keras"
    model.save(path)
    write_sidecar(path, info)
    print(f"done: {json.dumps(info.metrics)}; model {path}", flush=True)


# ----------------------------------------------------------------------------- abnormal flag + export

# Which types make a patch "abnormal" by default. The paper's abnormal set, mapped onto Chula's
# types: elongated/sickle -> elliptocyte, echinocyte -> burr, stomatocyte; reticulocyte and granular
# have no Chula counterpart. Teardrop and schistocyte (fragments) are added as the poikilocytes a
# haematologist is asked to look at first. Normal and ovalocyte ("oval + disc" was the paper's normal),
# and the size / colour types (macrocyte, microcyte, hypochromia, spherocyte, target) stay reported per
# cell but do not raise the flag. The list is a setting in the sidecar (`abnormal_types`).
DEFAULT_ABNORMAL_TYPES = ("stomatocyte", "teardrop", "burr", "schistocyte", "elliptocyte")
SMEAR_TRUTH_FRACTION = 0.10  # a labelled smear is abnormal when >= 10 % of its cells are of abnormal types
PATCH_BATCH = 16  # patches per model call in the exported files


def export_trees(gbm) -> dict:
    """A fitted scikit-learn GradientBoostingClassifier (binary) -> plain arrays for
    `edgecell.tasks.rbc.trees_decision` (no scikit-learn on the device)."""
    prior = float(gbm.init_.class_prior_[1])
    feature, threshold, left, right, value, roots = [], [], [], [], [], []
    depth = 0
    for est in gbm.estimators_[:, 0]:
        t = est.tree_
        base = len(feature)
        roots.append(base)
        leaf = t.children_left < 0
        feature += np.where(leaf, -1, t.feature).tolist()
        threshold += np.where(leaf, 0.0, t.threshold).tolist()
        left += np.where(leaf, -1, t.children_left + base).tolist()
        right += np.where(leaf, -1, t.children_right + base).tolist()
        value += t.value[:, 0, 0].tolist()
        depth = max(depth, int(t.max_depth))
    return {"init": math.log(prior / (1 - prior)), "learning_rate": float(gbm.learning_rate), "depth": depth,
            "roots": roots, "feature": feature, "threshold": [float(v) for v in threshold], "left": left,
            "right": right, "value": [round(float(v), 7) for v in value],
            "n_features": int(gbm.n_features_in_), "trained_with": "scikit-learn GradientBoostingClassifier"}


def abnormal_truth(types: np.ndarray, abnormal_types) -> np.ndarray:
    """Per patch: holds at least one labelled cell of an abnormal type."""
    names = type_names()
    cols = [names.index(t) for t in abnormal_types]
    return types[:, cols].any(axis=1)


def abnormal_care(types: np.ndarray, care: np.ndarray, abnormal_types) -> np.ndarray:
    """Per patch: whether it has an abnormal verdict (it holds an abnormal type, or no abnormal type
    is only in its don't-care band)."""
    from edgecell.evaluation.rbc import abnormal_judged

    return abnormal_judged(types, care, [type_names().index(t) for t in abnormal_types])


def fit_abnormal(probs: np.ndarray, truth: np.ndarray, seed: int = 0):
    """The paper's second stage: gradient boosting on the per-type probabilities -> abnormal."""
    from sklearn.ensemble import GradientBoostingClassifier

    gbm = GradientBoostingClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, subsample=0.8,
                                     random_state=seed)
    return gbm.fit(probs, truth.astype(int))


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)


def choose_type_thresholds(probs: np.ndarray, truth: np.ndarray, care: np.ndarray | None = None,
                           rounds: int = 3) -> np.ndarray:
    """Per-type probability thresholds for exact match (every head right), by coordinate ascent
    over THRESHOLD_GRID on the given (val) patches, starting from 0.5; on ties the value nearest
    0.5. Balanced sampling (`--balance`) shifts the heads' probabilities, so 0.5 is no longer
    where a rare type is best called. `care`: entries in a don't-care band count as right."""
    from edgecell.evaluation.rbc import exact_rows

    truth = np.asarray(truth).astype(bool)
    thr = np.full(probs.shape[1], 0.5)

    def exact(t: np.ndarray) -> float:
        return float(exact_rows(probs, truth, t, care).mean())

    for _ in range(rounds):
        for k in range(len(thr)):
            trial = thr.copy()
            scores = []
            for g in THRESHOLD_GRID:
                trial[k] = g
                scores.append((exact(trial), -abs(g - 0.5)))
            thr[k] = THRESHOLD_GRID[max(range(len(scores)), key=scores.__getitem__)]
    return thr


def smear_fraction_rule(fractions: np.ndarray, truth: np.ndarray, cuts: np.ndarray | None = None) -> float:
    """The smallest smear-level cut (fraction of cells in abnormal patches) with the best accuracy."""
    cuts = np.round(np.arange(0.05, 0.9, 0.025), 3) if cuts is None else cuts
    acc = [float(((fractions >= c) == truth).mean()) for c in cuts]
    return float(cuts[int(np.argmax(acc))])


def keras_outputs(model, x_uint8: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(logits N x (types + classes), pooled features N x F) of the Keras patch model on cached
    patches (their centre size x size window)."""
    import keras

    from edgecell.tasks.common import normalise_float

    both = keras.Model(model.input, [model.output, model.get_layer("pool").output])
    m = (x_uint8.shape[1] - size) // 2
    logits, features = [], []
    for i in range(0, len(x_uint8), 256):
        y, f = both(normalise_float(x_uint8[i : i + 256, m : m + size, m : m + size], [127.5], [127.5]), training=False)
        logits.append(np.asarray(y)), features.append(np.asarray(f))
    return np.concatenate(logits), np.concatenate(features)


CONTEXT_C = (0.003, 0.01, 0.03, 0.1)  # inverse L2 penalties tried per type (chosen on val AUC)
CONTEXT_MIN_GAIN = 0.002  # a type keeps its CNN head unless the context head is this much better on val


def fit_context_head(train: dict, val: dict, val_logits: np.ndarray) -> dict:
    """The second stage (`edgecell.tasks.rbc.context_type_logits`): per type a logistic regression
    on the patch's pooled features and their difference from the field's mean feature (what the
    other cells of the smear look like: a microcyte is small for ITS smear), fitted on the train
    patches (FP32 features; the CNN underfits, its train AUC is close to val), the L2 penalty per
    type chosen on the val patches' AUC; a type uses it only where it beats the CNN's own head on
    val by CONTEXT_MIN_GAIN. `train`/`val`: "features", "smear", "types", "care"."""
    from sklearn.linear_model import LogisticRegression

    from edgecell.evaluation.rbc import roc_auc
    from edgecell.tasks.rbc import context_features

    xt = np.concatenate([context_features(train["features"][train["smear"] == s])
                         for s in np.unique(train["smear"])])
    order = np.concatenate([np.nonzero(train["smear"] == s)[0] for s in np.unique(train["smear"])])
    xv = np.empty((len(val["features"]), xt.shape[1]), np.float32)
    for s in np.unique(val["smear"]):
        xv[val["smear"] == s] = context_features(val["features"][val["smear"] == s])
    mean, std = xt.mean(0), xt.std(0) + 1e-6
    xt, xv = (xt - mean) / std, (xv - mean) / std
    names, used, weights, bias, report = type_names(), [], [], [], {}
    for k, name in enumerate(names):
        yt, ct = train["types"][order, k].astype(bool), train["care"][order, k]
        yv, cv = val["types"][:, k].astype(bool), val["care"][:, k]
        if yt[ct].all() or not yt[ct].any() or yv[cv].all() or not yv[cv].any():
            continue
        cnn = roc_auc(yv[cv], val_logits[cv, k])
        best = None
        for c in CONTEXT_C:
            lr = LogisticRegression(C=c, max_iter=500).fit(xt[ct], yt[ct])
            auc = roc_auc(yv[cv], lr.decision_function(xv)[cv])
            if best is None or auc > best[0]:
                best = (auc, c, lr)
        report[name] = {"val_auc_cnn": round(cnn, 4), "val_auc_context": round(best[0], 4), "C": best[1]}
        if best[0] >= cnn + CONTEXT_MIN_GAIN:
            used.append(name)
            weights.append(best[2].coef_[0]), bias.append(float(best[2].intercept_[0]))
    return {"types": used, "mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std],
            "weights": [[round(float(v), 7) for v in row] for row in np.array(weights).T.reshape(len(mean), -1)],
            "bias": [round(v, 7) for v in bias], "fitted_on": "train patches (FP32 features), penalty per type on val",
            "val": report}


def export_rbc(args) -> None:
    """Centre detector and patch classifier(s) -> FP32 + INT8 files of every format (the shared
    converter, real calibration inputs from the train split), the trees fitted on the val split."""
    import keras

    from edgecell.calibration.chula import CLASS_NAMES, list_smears
    from edgecell.convert.quantize import export_model
    from edgecell.modelinfo import read_model_info, write_sidecar
    from edgecell.tasks import cells
    from edgecell.calibration.chula import CELL_RADIUS_PX
    from edgecell.evaluation.rbc import exact_rows
    from edgecell.tasks.rbc import trees_decision

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    names = type_names()
    summary = {}
    if args.centres:
        det = keras.models.load_model(args.centres, compile=False)
        det_info = read_model_info(args.centres)
        train = list_smears(args.data, "train")
        pick = rng.choice(len(train), min(args.calibration, len(train)), replace=False)
        cal = [cells.preprocess(train[i].load(), det_info)[0] for i in sorted(pick)]
        paths = export_model(det, det_info, cal, out, "rbc_centres")
        print("detector:", ", ".join(sorted(paths)), flush=True)
    cache = Path(args.cache) if args.cache else out
    val_smears = list_smears(args.data, "val")
    abnormal_types = tuple(args.abnormal_types.split(",")) if args.abnormal_types else DEFAULT_ABNORMAL_TYPES
    unknown = [t for t in abnormal_types if t not in names]
    if unknown:
        raise SystemExit(f"unknown abnormal types {unknown}; choose from {', '.join(names)}")
    for stem, keras_path in (("rbc", args.mixed), ("rbc_single", args.single)):
        if not keras_path:
            continue
        core = keras.models.load_model(keras_path, compile=False)
        info = read_model_info(keras_path)
        crop, size = int(info.settings.get("patch_crop", 80)), int(info.settings.get("patch_size", 64))
        rule = info.settings.get("patch_truth") or {}
        train = with_truth(patch_dataset(args.data, "train", crop, size, cache), args.data, "train",
                           rule.get("core_px"), rule.get("dont_care_px"))
        val = with_truth(patch_dataset(args.data, "val", crop, size, cache), args.data, "val",
                         rule.get("core_px"), rule.get("dont_care_px"))
        val_logits, val["features"] = keras_outputs(core, val["x"], size)
        _, train["features"] = keras_outputs(core, train["x"], size)
        head = head_setting(core)
        if not args.no_context:
            head["context"] = fit_context_head(train, val, val_logits)
            print(stem, "context head:", json.dumps(head["context"]["val"]), flush=True)
        info.settings["patch_head"] = head
        from edgecell.tasks.rbc import head_logits

        probs, _ = patch_scores(np.concatenate([head_logits(val["features"][val["smear"] == s], info)
                                                for s in np.unique(val["smear"])]), len(names))
        val = {k: np.concatenate([v[val["smear"] == s] for s in np.unique(val["smear"])]) for k, v in val.items()}
        thresholds = choose_type_thresholds(probs, val["types"], val["care"])
        truth = abnormal_truth(val["types"], abnormal_types)
        judged = abnormal_care(val["types"], val["care"], abnormal_types)  # no verdict on a band-only abnormal cell
        gbm = fit_abnormal(probs[judged], truth[judged], args.seed)
        trees = export_trees(gbm)
        gap = float(np.abs(trees_decision(probs, trees) - gbm.decision_function(probs)).max())
        if gap > 1e-5:
            raise SystemExit(f"exported trees differ from scikit-learn by {gap}")
        patch_p = gbm.predict_proba(probs)[:, 1]
        patch_abnormal = patch_p >= 0.5
        fractions, smear_truth = [], []
        ab_ids = [CLASS_NAMES.index(t) for t in abnormal_types]
        for s in val_smears:
            sel = val["smear"] == int(s.stem)
            fractions.append(patch_p[sel].mean() if args.smear_score == "mean_probability" else patch_abnormal[sel].mean())
            smear_truth.append(np.isin(s.classes, ab_ids).mean() >= SMEAR_TRUTH_FRACTION)
        min_fraction = smear_fraction_rule(np.array(fractions), np.array(smear_truth))
        info.input_size = (size, size * args.batch)
        info.settings.update({
            "detector": "rbc_centres", "patch_batch": args.batch, "patch_crop": crop, "cell_radius_px": CELL_RADIUS_PX,
            "smear_score": args.smear_score, "smear_borderline": args.smear_borderline,
            "abnormal_types": list(abnormal_types), "abnormal_threshold": 0.5, "abnormal_trees": trees,
            "type_thresholds": {n: float(t) for n, t in zip(names, thresholds)},
            "smear_min_fraction": min_fraction, "smear_truth_fraction": SMEAR_TRUTH_FRACTION,
            "abnormal_fitted_on": f"{len(probs)} val patches (FP32 outputs), {len(val_smears)} val smears",
            "classes": list(CLASS_NAMES)})
        hit = lambda t: float(exact_rows(probs, val["types"], t, val["care"]).mean())  # noqa: E731
        summary[stem] = {"val_abnormal_accuracy": float((patch_abnormal == truth)[judged].mean()),
                         "val_exact_match_at_0.5": hit(0.5), "val_exact_match_at_thresholds": hit(thresholds),
                         "val_abnormal_base_rate": float(truth[judged].mean()), "smear_min_fraction": min_fraction}
        print(stem, json.dumps(summary[stem]), flush=True)
        pick = rng.choice(len(train["x"]), args.batch * args.calibration, replace=False)
        m = PATCH_MARGIN
        from edgecell.tasks.common import normalise_float

        x = normalise_float(train["x"][pick, m : m + size, m : m + size], [127.5], [127.5])
        cal = list(x.reshape(args.calibration, args.batch * size, size, 3))
        formats = args.formats.split(",")
        int8_formats = [f for f in (args.int8_formats or args.formats).split(",") if f in formats]
        batched = batched_model(core, size, args.batch, features=True)
        paths = export_model(batched, info, cal, out, stem, formats=int8_formats)
        if [f for f in formats if f not in int8_formats]:  # FP32 only (their INT8: siblings of the .tflite)
            paths.update(export_model(batched, info, cal, out, stem, precisions=("fp32",),
                                      formats=[f for f in formats if f not in int8_formats]))
        print(stem, ", ".join(sorted(paths)), flush=True)
    (out / "export_summary.json").write_text(json.dumps(summary, indent=1))


def field_scores(out: Path, smears: list, threads: int | None, without_offset: bool = False
                 ) -> tuple[dict[str, np.ndarray], np.ndarray, list]:
    """Per precision ("fp32", "int8": `rbc_{precision}.tflite` in `out`, LiteRT) the smear score of
    every field through the device pipeline (`load_model` + `pipeline.predict`: detected cells, not
    labelled ones), with a mask of the fields both precisions assess (cells found, familiar), and
    the abnormal types. `without_offset`: the INT8 file's stored `int8_smear_offset` is left out."""
    from edgecell.model import load_model
    from edgecell.pipeline import predict
    from edgecell.tasks.rbc import INT8_SMEAR_OFFSET

    scores, assessed, abnormal_types = {}, np.ones(len(smears), bool), []
    for precision in ("fp32", "int8"):
        model = load_model(out / f"rbc_{precision}.tflite", "litert", threads=threads)
        if without_offset:
            model.info.settings.pop(INT8_SMEAR_OFFSET, None)
        abnormal_types = list(model.info.settings["abnormal_types"])
        results = [predict(model, s.load())[0] for s in smears]
        scores[precision] = np.array([r.abnormal_score for r in results])
        assessed &= np.array([bool(r.cells) and not r.uncertain for r in results])
    return scores, assessed, abnormal_types


def smear_rule(args) -> None:
    """The smear cut and its borderline band, from the exported files on the val fields through the
    device pipeline (`field_scores`; the INT8 file with its stored `int8_smear_offset`): the cut
    with the best FP32 accuracy against the val smears' truth (>= SMEAR_TRUTH_FRACTION of labelled
    cells of abnormal types); the band = the largest |INT8 - FP32| smear score over those fields
    (rounded up to 0.005), so that on val no field is decided one way in FP32 and the other in
    INT8 without one of them saying borderline. Written into every `rbc_*.json` of --out."""
    from edgecell.calibration.chula import CLASS_NAMES, list_smears

    out = Path(args.out)
    smears = list_smears(args.data, "val")
    scores, _, abnormal_types = field_scores(out, smears, args.threads)
    ids = [CLASS_NAMES.index(t) for t in abnormal_types]
    truth = np.array([np.isin(s.classes, ids).mean() >= SMEAR_TRUTH_FRACTION for s in smears])
    cut = smear_fraction_rule(scores["fp32"], truth, np.round(np.arange(0.02, 0.9, 0.005), 3))
    band = math.ceil(round(float(np.abs(scores["int8"] - scores["fp32"]).max()) / 0.005, 6)) * 0.005
    rule = {"smear_min_fraction": cut, "smear_borderline": round(band, 3),
            "smear_rule_chosen_on": f"{len(smears)} val fields through the pipeline (FP32 accuracy; band = the "
                                    "largest INT8 - FP32 score difference, INT8 with its int8_smear_offset)"}
    for sidecar in sorted(out.glob("rbc_*.json")):
        meta = json.loads(sidecar.read_text())
        if meta.get("task") == "rbc" and meta.get("settings", {}).get("smear_score") == args.smear_score:
            meta["settings"].update(rule)
            sidecar.write_text(json.dumps(meta, indent=2, sort_keys=True))
    acc = {p: float(((v >= cut) == truth).mean()) for p, v in scores.items()}
    print(json.dumps({**rule, "val_accuracy": acc, "val_borderline": {p: int((np.abs(v - cut) < band).sum())
                                                                      for p, v in scores.items()},
                      "val_opposite": int(((scores["int8"] >= cut) != (scores["fp32"] >= cut)).sum()),
                      "val_int8_minus_fp32": {"mean": round(float((scores["int8"] - scores["fp32"]).mean()), 4),
                                              "sd": round(float((scores["int8"] - scores["fp32"]).std()), 4)}}),
          flush=True)


def store_smear_offset(args) -> dict:
    """`int8-offset`: the INT8 file's smear-score bias against the float file of the same network:
    the median over the TRAIN fields (unlabelled use: no label is read) of INT8 - FP32 smear score
    through the pipeline (`field_scores`, any stored offset left out), stored negated in the INT8
    sidecar (`int8_smear_offset`, read by `edgecell.tasks.rbc.smear_offset`); the FP32 files are
    untouched. Run it before `smear-rule`, which then sizes the band with the correction on."""
    from edgecell.calibration.chula import list_smears
    from edgecell.modelinfo import read_model_info, write_sidecar
    from edgecell.tasks.rbc import INT8_SMEAR_OFFSET

    out = Path(args.out)
    smears = list_smears(args.data, "train")
    scores, assessed, _ = field_scores(out, smears, args.threads, without_offset=True)
    shift = (scores["int8"] - scores["fp32"])[assessed]
    offset = round(-float(np.median(shift)), 4)
    int8_path = out / "rbc_int8.tflite"
    meta = read_model_info(int8_path)
    meta.settings[INT8_SMEAR_OFFSET] = offset
    meta.settings["int8_smear_offset_fitted_on"] = (
        f"{len(shift)} unlabelled Chula train fields against rbc_fp32.tflite through the pipeline: minus the "
        f"median INT8 - FP32 smear score ({meta.settings.get('smear_score', 'fraction')}; mean "
        f"{shift.mean():+.4f}, sd {shift.std():.4f})")
    write_sidecar(int8_path, meta)
    summary = {INT8_SMEAR_OFFSET: offset, "fields": int(len(shift)), "median_shift": round(float(np.median(shift)), 4),
               "mean_shift": round(float(shift.mean()), 4), "sd_shift": round(float(shift.std()), 4),
               "max_abs_shift": round(float(np.abs(shift).max()), 4),
               "max_abs_after": round(float(np.abs(shift + offset).max()), 4)}
    print(json.dumps(summary), flush=True)
    return summary


# ----------------------------------------------------------------------------- CLI

def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, minutes, lr, batch in (("centres", 25.0, 1e-3, 8), ("patches", 20.0, 1e-3, 64)):
        q = sub.add_parser(name)
        q.add_argument("--data", default=None, help="folder holding chula_rbc12/ (default EDGECELL_DATA, ../shared/data)")
        q.add_argument("--out", required=True, help="output folder: checkpoints, log, the Keras model + sidecar")
        q.add_argument("--minutes", type=float, default=minutes, help="wall-clock training budget")
        q.add_argument("--lr", type=float, default=lr)
        q.add_argument("--batch", type=int, default=batch)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--threads", type=int, default=2)
        q.add_argument("--imagenet", help="MobileNet V1 0.25 ImageNet no-top .h5 (else $EDGECELL_WEIGHTS, ../shared/weights)")
        q.add_argument("--max-steps", type=int, default=0, help="stop after N steps (smoke test)")
    sub.choices["centres"].add_argument("--mosaic", type=float, default=0.3)
    sub.choices["patches"].add_argument("--cells", choices=("mixed", "single"), default="mixed",
                                        help="mixed: every cell's patch as it comes (Model A); single: only patches "
                                        "holding one labelled cell (Model B)")
    sub.choices["patches"].add_argument("--cache", help="folder for the cut patches (.npz), shared by both runs")
    sub.choices["patches"].add_argument("--crop", type=int, default=80, help="image pixels around each centre")
    sub.choices["patches"].add_argument("--size", type=int, default=64, help="model input pixels (crop resized)")
    sub.choices["patches"].add_argument("--truth-core", type=float, default=None,
                                        help="a patch holds the types of the labelled cells within this many image "
                                        "pixels of its centre (default: every centre inside the window)")
    sub.choices["patches"].add_argument("--dont-care", type=float, default=None,
                                        help="cells between --truth-core and this distance are neither in nor out "
                                        "(masked in the loss)")
    sub.choices["patches"].add_argument("--init", help="start from this trained patch model (.keras) instead of ImageNet")
    sub.choices["patches"].add_argument("--balance", type=float, default=0.0,
                                        help="draw patches with rare types more often: 0 uniform (default), "
                                        "1 every type about equally often")
    sub.choices["patches"].add_argument("--select", choices=("mean", "worst", "exact"), default="mean",
                                        help="keep the checkpoint with the best val mean AUC, with the best "
                                        f"worst AUC over the types with >= {MIN_POSITIVES} val positives, or with "
                                        "the best val exact match (at 0.5)")
    q = sub.add_parser("export", help="FP32 + INT8 files of every format, the abnormal trees, sidecars")
    q.add_argument("--data", default=None)
    q.add_argument("--out", required=True)
    q.add_argument("--centres", help="the trained detector (.keras, sidecar beside it)")
    q.add_argument("--mixed", help="Model A (.keras): shipped as rbc_*")
    q.add_argument("--single", help="Model B (.keras): exported as rbc_single_* for the comparison")
    q.add_argument("--cache", help="folder with the cut patches (.npz)")
    q.add_argument("--batch", type=int, default=PATCH_BATCH, help="patches per model call")
    q.add_argument("--calibration", type=int, default=60, help="calibration inputs (smears / patch batches)")
    q.add_argument("--abnormal-types", help=f"comma-separated (default {','.join(DEFAULT_ABNORMAL_TYPES)})")
    q.add_argument("--formats", default="tflite,openvino,onnx", help="patch-model formats to write")
    q.add_argument("--int8-formats", help="formats to write INT8 for (default: every one of --formats); the "
                   "others FP32 only, their INT8 made as siblings of the INT8 .tflite (edgecell.convert.siblings)")
    q.add_argument("--no-context", action="store_true", help="no field-context second stage (`patch_head.context`)")
    q.add_argument("--smear-score", choices=("fraction", "mean_probability"), default="fraction",
                   help="the smear score: the share of cells in abnormal patches, or their mean abnormal probability")
    q.add_argument("--smear-borderline", type=float, default=0.0,
                   help="a smear score within this of the cut is reported borderline (review)")
    q.add_argument("--seed", type=int, default=0)
    q = sub.add_parser("smear-rule", help="choose the smear cut and borderline band on the val fields (exported files)")
    q.add_argument("--data", default=None)
    q.add_argument("--out", required=True, help="the export folder (rbc_fp32.tflite, rbc_int8.tflite, sidecars)")
    q.add_argument("--smear-score", default="mean_probability", help="update the sidecars with this smear score")
    q.add_argument("--threads", type=int, default=1)
    q = sub.add_parser("int8-offset", help="measure the INT8 - FP32 smear-score bias on the train fields (no "
                       "labels) and store its negative in the INT8 sidecar (int8_smear_offset); run before smear-rule")
    q.add_argument("--data", default=None)
    q.add_argument("--out", required=True, help="the export folder (rbc_fp32.tflite, rbc_int8.tflite, sidecars)")
    q.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = get_args(argv)
    {"centres": train_centres, "patches": train_patches, "export": export_rbc,
     "smear-rule": smear_rule, "int8-offset": store_smear_offset}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
