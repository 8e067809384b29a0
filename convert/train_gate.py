"""Train a utility gate (issue 7; Khan et al., EUSIPCO 2022) from a labels CSV made by
`edgecell.convert.gate_labels`, export it FP32 + INT8 to TFLite, OpenVINO and ONNX through the
shared converter, and optionally ship the INT8 TFLite to `edge/models/`.

    python -m edgecell.convert.train_gate --labels FILE.csv --data DIR --out DIR --minutes 15 \
        [--for-task products|xray] [--resize-via 224]

Choices (and why):
- Network: MobileNet V1, alpha 0.25, ImageNet weights (`--weights` / $EDGECELL_WEIGHTS /
  ../shared/weights), input 128 x 128, new 2-way softmax head [not_useful, useful], every layer
  trainable (the gate must learn low-level cues: blocking, blur, noise, clipping, which the first
  layers see). The paper uses ResNet-18 (11.7 M parameters, ~1.8 GFLOPs at 224). Measured on the
  development CPU (shared/notes/backends-measured.md) ResNet-18 takes 12-29 ms per image INT8,
  several times the whole product classifier it would guard (a MobileNet V1 0.25 at 224), so it
  cannot meet the "gate adds <= 25 %" target; and ~1,000 labelled originals are far too few to
  train 11.7 M parameters. MobileNet V1 0.25 at 128 has ~0.22 M parameters and ~1/3 of the
  task model's multiply-adds. Cost: a smaller receptive field and less capacity, and at 128 px
  the resize averages away part of fine JPEG blocking and noise that the 224-px task model still
  sees; the gate accuracy reported by `edgecell.benchmarks.gate_eval` is the price tag.
- Split by ORIGINAL image (`gate_labels.split_by_original`, stratified by product class,
  seeded): `--test-fraction` of the originals are held out with ALL their degraded copies
  (written to OUT/gate_split.json for the evaluation), `--val-fraction` more for early stopping.
- Class balance: the paper adds augmented utility-0 images and relabels them; we weight the
  loss by inverse class frequency instead (no relabelling run needed). Augmentation is a
  horizontal flip only: any resampling (zoom, rotation) would itself blur the image and
  change what the gate must judge.
- Pre-processing is the device's own: `edgecell.tasks.gate.gate_pixels` (with `--resize-via N`,
  the task model's input size: full image -> N x N, the resize the task model does anyway and
  shares at run time, then bilinear to the gate's size), then `to_input_tensor` ((p - 127.5) /
  127.5). The degraded images are rebuilt from the CSV's spec + seed, never stored.
- Any classifier task: `--for-task xray` reads the X-ray images from the data root (paths in its
  labels CSV are relative to it) and names the files gate_xray_*.
- `--qat-from OUT/gate_<task>.keras`: quantization-aware fine-tuning (`edgecell.convert.qat`) of
  a trained float gate, all layers, instead of training from ImageNet weights (same split, class
  weights, early stopping and threshold rule). Why: full-integer INT8 of the X-ray gate lost 6
  points on near-black films, whose early activations use only a few int8 steps.
- Threshold: the sidecar's `threshold` is the P(useful) that maximises balanced accuracy on the
  validation originals (grid 0.05 .. 0.95).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecell.errors import EdgecellError, script_main
from edgecell.modelinfo import ModelInfo
from edgecell.resources import shipped_path

LABELS = ["not_useful", "useful"]
MEAN = [127.5, 127.5, 127.5]
STD = [127.5, 127.5, 127.5]
ALPHA = 0.25
DEFAULT_SIZE = 128


def stem(for_task: str) -> str:
    """File stem of a gate's files: gate_products, gate_xray, ..."""
    return f"gate_{for_task}"


def gate_info(size: int, threshold: float, for_task: str, resize_via: int = 0, **extra) -> ModelInfo:
    """The gate's metadata; `resize_via` (the task model's square input size, 0 = none) makes its
    input from the task model's already resized image (`edgecell.tasks.gate.gate_pixels`)."""
    settings = {"threshold": round(float(threshold), 4), "for_task": for_task}
    if resize_via:
        settings["resize_via"] = [int(resize_via), int(resize_via)]
    settings.update(extra)
    return ModelInfo(task="gate", name=f"gate_{for_task}_mobilenet_v1_{ALPHA}_{size}", version="1",
                     labels=list(LABELS), input_size=(size, size), channels=3, layout="NHWC",
                     mean=list(MEAN), std=list(STD), resize="stretch", settings=settings)


def build_gate(size: int = DEFAULT_SIZE, weights: str | os.PathLike | None = None, dropout: float = 0.2,
               alpha: float = ALPHA):
    import keras

    base = keras.applications.MobileNet(alpha=alpha, include_top=False, weights=None, input_shape=(size, size, 3))
    if weights is not None:
        base.load_weights(str(weights))  # conv weights do not depend on the input size
    x = keras.layers.GlobalAveragePooling2D(name="gate_gap")(base.output)
    x = keras.layers.Dropout(dropout, name="gate_dropout")(x)
    out = keras.layers.Dense(2, activation="softmax", name="gate_probs")(x)
    return keras.Model(base.input, out, name=f"gate_mobilenet_v1_{alpha}_{size}")


def balanced_accuracy(y: np.ndarray, p_useful: np.ndarray, threshold: float) -> float:
    y = np.asarray(y).astype(int)
    pred = (np.asarray(p_useful) >= threshold).astype(int)
    accs = [float((pred[y == c] == c).mean()) for c in (0, 1) if (y == c).any()]
    return float(np.mean(accs)) if accs else 0.0


def choose_threshold(y: np.ndarray, p_useful: np.ndarray) -> float:
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
    scores = [balanced_accuracy(y, p_useful, t) for t in grid]
    best = max(scores)
    # among ties, the one closest to 0.5
    cands = [t for t, s in zip(grid, scores) if s >= best - 1e-9]
    return float(min(cands, key=lambda t: abs(t - 0.5)))


def build_tensors(rows: Sequence[dict], data: Path, info: ModelInfo, progress: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Rebuild every degraded image from (image, degradation, seed) and pre-process it with the
    device's functions (`gate_pixels`, then `to_input_tensor`); float16 storage (values in
    [-1, 1], error < 5e-4) to halve the memory."""
    from edgecell.calibration import degrade
    from edgecell.images import decode_image
    from edgecell.tasks.common import to_input_tensor
    from edgecell.tasks.gate import gate_pixels

    w, h = info.input_size
    x = np.empty((len(rows), h, w, 3), np.float16)
    y = np.empty(len(rows), np.int32)
    cache_key, cache_img = None, None
    order = sorted(range(len(rows)), key=lambda i: rows[i]["image"])
    for n, i in enumerate(order):
        r = rows[i]
        if r["image"] != cache_key:
            cache_key, cache_img = r["image"], decode_image(data / r["image"])
        img = degrade.apply(cache_img, r["degradation"], r["seed"])
        x[i] = to_input_tensor(gate_pixels(img, info), info)[0][0]
        y[i] = int(r["label"])
        if progress and (n + 1) % 1000 == 0:
            print(f"  {progress}: {n + 1}/{len(rows)}", flush=True)
    return x, y


def _split(rows: list[dict], test_fraction: float, val_fraction: float, seed: int):
    from edgecell.convert.gate_labels import split_by_original

    test = split_by_original(rows, test_fraction, seed)
    rest = [r for r in rows if r["image"] not in test]
    val = split_by_original(rest, val_fraction / max(1e-9, 1 - test_fraction), seed + 1) if val_fraction else set()
    return test, val


def train(args) -> dict:
    from edgecell.convert.gate_labels import count_labels, gate_data_dir, read_labels
    from edgecell.convert.products import find_weights
    from edgecell.convert.training import start_tensorflow

    tf, keras = start_tensorflow(threads=args.threads, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = gate_data_dir(args.for_task, args.dataset, args.data)
    rows = read_labels(args.labels)
    test, val = _split(rows, args.test_fraction, args.val_fraction, args.seed)
    labelled = [r for r in rows if r["label"] is not None]
    fit_rows = [r for r in labelled if r["image"] not in test and r["image"] not in val]
    val_rows = [r for r in labelled if r["image"] in val]
    test_rows = [r for r in labelled if r["image"] in test]
    split = {"labels_csv": Path(args.labels).name, "seed": args.seed, "test_fraction": args.test_fraction,
             "val_fraction": args.val_fraction, "test_images": sorted(test), "val_images": sorted(val),
             "counts": {"fit": count_labels(r["label"] for r in fit_rows),
                        "val": count_labels(r["label"] for r in val_rows),
                        "test": count_labels(r["label"] for r in test_rows)},
             "originals": {"all": len({r["image"] for r in rows}), "test": len(test), "val": len(val)}}
    (out / "gate_split.json").write_text(json.dumps(split, indent=2) + "\n")
    print(f"originals: {split['originals']}; labelled samples: {split['counts']}", flush=True)
    if min(split["counts"]["fit"]["useful"], split["counts"]["fit"]["not_useful"]) < args.min_per_class:
        raise EdgecellError(f"too few labelled samples of one class to train a gate: {split['counts']['fit']}; "
                            "relabel with relaxed --t-high/--t-low (see the labels summary JSON)")

    info = gate_info(args.size, 0.5, args.for_task, args.resize_via)
    t0 = time.perf_counter()
    x_fit, y_fit = build_tensors(fit_rows, data, info, "fit")
    x_val, y_val = build_tensors(val_rows, data, info, "val")
    print(f"tensors built in {time.perf_counter() - t0:.0f} s: fit {x_fit.shape}, val {x_val.shape}", flush=True)

    plain = None
    if args.qat_from:  # quantization-aware fine-tuning of a trained float gate (edgecell.convert.qat)
        from edgecell.convert.qat import QatSettings, qat_pair

        weights = Path(args.qat_from)
        if not weights.is_file():
            raise EdgecellError(f"{weights}: no such gate model")
        float_model = keras.models.load_model(weights, compile=False)
        if int(float_model.input_shape[1]) != args.size:
            raise EdgecellError(f"{weights}: input {float_model.input_shape[1]} px, not --size {args.size}")
        qat_settings = QatSettings(lr=args.lr, batch=args.batch, trainable_from="", seed=args.seed)
        model, plain = qat_pair(float_model, qat_settings)
    else:
        weights = find_weights(args.weights)
        model = build_gate(args.size, weights, args.dropout)
    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    counts = np.bincount(y_fit, minlength=2).astype(np.float64)
    class_weight = {c: float(len(y_fit) / (2 * counts[c])) for c in (0, 1)}

    def gen():
        rng = np.random.default_rng(args.seed)
        while True:
            idx = rng.permutation(len(y_fit))
            for s in range(0, len(idx) - args.batch + 1, args.batch):
                b = idx[s:s + args.batch]
                xb = x_fit[b].astype(np.float32)
                flip = rng.random(len(b)) < 0.5
                xb[flip] = xb[flip, :, ::-1]
                wb = np.array([class_weight[int(c)] for c in y_fit[b]], np.float32)
                yield xb, y_fit[b], wb

    sig = (tf.TensorSpec((None, args.size, args.size, 3), tf.float32), tf.TensorSpec((None,), tf.int32),
           tf.TensorSpec((None,), tf.float32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig).prefetch(2)
    steps = max(1, len(y_fit) // args.batch)
    val_ds = tf.data.Dataset.from_tensor_slices((x_val.astype(np.float32), y_val)).batch(64) if len(y_val) else None

    class Budget(keras.callbacks.Callback):
        """Stop when the wall-clock budget would be exceeded by one more epoch; keep the best
        weights by validation loss."""

        def __init__(self):
            super().__init__()
            self.best, self.best_weights, self.best_epoch, self.t0, self.last = np.inf, None, -1, 0.0, 0.0

        def on_train_begin(self, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("val_loss", (logs or {}).get("loss", np.inf))
            if loss < self.best:
                self.best, self.best_epoch = loss, epoch
                self.best_weights = [w.copy() for w in self.model.get_weights()]
            el = time.perf_counter() - self.t0
            per = el / (epoch + 1)
            if args.minutes and el + per > args.minutes * 60:
                print(f"  time budget: stopping after epoch {epoch + 1} ({el / 60:.1f} min)", flush=True)
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    budget = Budget()
    early = keras.callbacks.EarlyStopping(monitor="val_loss" if val_ds is not None else "loss", patience=args.patience)
    log = keras.callbacks.CSVLogger(str(out / "gate_history.csv"))
    t1 = time.perf_counter()
    hist = model.fit(ds, steps_per_epoch=steps, epochs=args.epochs, validation_data=val_ds,
                     callbacks=[budget, early, log], verbose=2)
    train_s = time.perf_counter() - t1
    if plain is not None:  # export the plain folded model, kernels snapped to their int8 grid
        from edgecell.convert.qat import copy_weights

        copy_weights(model, plain, snap=True)
        model = plain
    if len(y_val):
        p_val = model.predict(x_val.astype(np.float32), batch_size=64, verbose=0)[:, 1]
        threshold = choose_threshold(y_val, p_val)
    else:  # no validation originals (tiny runs): the class-weighted midpoint
        p_val, threshold = np.zeros(0), 0.5
    keras_path = out / f"{stem(args.for_task)}.keras"
    model.save(keras_path)
    summary = {
        "labels_csv": str(Path(args.labels).name), "size": args.size, "resize_via": args.resize_via, "alpha": ALPHA, "weights": weights.name,
        "params": int(model.count_params()), "epochs_run": len(hist.history["loss"]),
        "best_epoch": budget.best_epoch + 1, "train_minutes": round(train_s / 60, 2),
        "tensor_build_s": round(t1 - t0, 1), "class_weight": class_weight, "threshold": threshold,
        "val_accuracy_at_threshold": float(((p_val >= threshold).astype(int) == y_val).mean()) if len(y_val) else None,
        "val_balanced_accuracy": balanced_accuracy(y_val, p_val, threshold), "counts": split["counts"],
        "lr": args.lr, "batch": args.batch, "seed": args.seed, "qat_from": args.qat_from,
        "command": " ".join([Path(sys.executable).name, "-m", "edgecell.convert.train_gate"] + sys.argv[1:]),
    }
    (out / "gate_train.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("epochs_run", "best_epoch", "train_minutes", "threshold",
                                               "val_accuracy_at_threshold", "val_balanced_accuracy")}), flush=True)
    return summary


def export(args, summary: dict) -> dict[str, Path]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from edgecell.convert.gate_labels import gate_data_dir, read_labels
    from edgecell.convert.quantize import export_model

    out = Path(args.out)
    data = gate_data_dir(args.for_task, args.dataset, args.data)
    model = keras.models.load_model(out / f"{stem(args.for_task)}.keras", compile=False)
    size = int(model.input_shape[1])
    split = json.loads((out / "gate_split.json").read_text())
    held = set(split["test_images"]) | set(split["val_images"])
    rows = [r for r in read_labels(args.labels) if r["image"] not in held]
    rng = np.random.default_rng(args.seed)
    pick = [rows[i] for i in sorted(rng.permutation(len(rows))[:args.calibration].tolist())]
    for r in pick:
        r["label"] = 0 if r["label"] is None else r["label"]  # labels are not used for calibration
    info = gate_info(size, summary["threshold"], args.for_task, summary.get("resize_via", 0),
                     labels_csv=summary["labels_csv"])
    x, _ = build_tensors(pick, data, info)
    calib = [x[i:i + 1].astype(np.float32) for i in range(len(x))]
    t0 = time.perf_counter()
    paths = export_model(model, info, calib, out / "export", stem(args.for_task))
    print(f"exported in {time.perf_counter() - t0:.0f} s with {len(calib)} calibration images (training "
          "originals, degraded and pristine): " + ", ".join(p.name for p in paths.values()), flush=True)
    (out / "gate_export.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}, indent=2) + "\n")
    return paths


def ship(args, dest: str | os.PathLike | None = None) -> Path:
    """Copy OUT/export/gate_<task>_int8.tflite to edge/models/ with a sidecar whose `metrics`
    come from OUT/eval/gate.json (run `python -m edgecell.benchmarks.gate_eval` first)."""
    from edgecell.convert.quantize import ship_model

    out = Path(args.out)
    src = out / "export" / f"{stem(args.for_task)}_int8.tflite"
    report = out / "eval" / "gate.json"
    if not report.is_file():
        raise EdgecellError(f"{report}: no evaluation; an unevaluated gate is not shipped")
    r = json.loads(report.read_text())
    r4 = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
    metrics = {
        "held_out_originals": r.get("test_originals"), "labelled_copies": r.get("test_labelled"),
        "task_model": r["task_model"]["file"], "task_model_sha256": r["task_model"]["sha256"],
        "gate_accuracy": {k: r4(v["accuracy"]) for k, v in r["gate_accuracy"].items()},
        "gate_balanced_accuracy": {k: r4(v["balanced_accuracy"]) for k, v in r["gate_accuracy"].items()},
        "task_accuracy_all_degraded": r4(next(iter(r["task_accuracy"].values()))["accuracy_all"]),
        "task_accuracy_accepted": {k: r4(v["accuracy_accepted"]) for k, v in r["task_accuracy"].items()},
        "share_rejected": {k: r4(v) for k, v in r["share_rejected"].items()},
    }
    dest = Path(dest) if dest else shipped_path("models")
    target = ship_model(src, dest, metrics)
    print(f"shipped {target} ({target.stat().st_size / 1e3:.0f} kB)", flush=True)
    return target


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m edgecell.convert.train_gate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--labels", required=True, help="labels CSV from edgecell.convert.gate_labels")
    p.add_argument("--data", help="datasets folder or the dataset folder itself (else $EDGECELL_DATA, ../shared/data)")
    p.add_argument("--dataset", default="clothing_small_subset")
    p.add_argument("--weights", help="MobileNet V1 0.25 ImageNet no-top .h5 (else $EDGECELL_WEIGHTS, ../shared/weights)")
    p.add_argument("--out", required=True, help="output folder (outside the repo)")
    p.add_argument("--for-task", default="products", help="the task the gate guards (sidecar for_task)")
    p.add_argument("--minutes", type=float, default=15.0, help="wall-clock training budget (0 = none)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--size", type=int, default=DEFAULT_SIZE)
    p.add_argument("--resize-via", type=int, default=0,
                   help="the task model's (square) input size: the gate's input is made from the image the "
                        "task model resizes anyway (shared at run time); 0 = resize the full image directly")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--patience", type=int, default=4)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--calibration", type=int, default=100)
    p.add_argument("--min-per-class", type=int, default=20, help="refuse to train with fewer labelled samples of a class")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--qat-from", help="trained float gate .keras: quantization-aware fine-tuning of all its layers "
                   "(BN folded, int8 weights and ReLU6 outputs fake-quantized; use a low --lr, e.g. 3e-5) "
                   "instead of training from ImageNet weights; same split, class weights and threshold rule")
    p.add_argument("--skip-train", action="store_true", help="export an already trained OUT/gate_<task>.keras")
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--ship", action="store_true", help="only ship (after evaluation): copy the INT8 TFLite to edge/models")
    return p.parse_args(argv)


@script_main
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.ship:
        ship(args)
        return 0
    if args.skip_train:
        record = Path(args.out) / "gate_train.json"
        if not record.is_file():
            raise EdgecellError(f"{record}: no training record; train first (without --skip-train) into --out")
        summary = json.loads(record.read_text())
    else:
        summary = train(args)
    if not args.no_export:
        export(args, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
