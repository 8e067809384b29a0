"""Train a blood-cell detector on CBC/BCCD: the paper's Tiny-YOLOv2 (`--arch tiny-yolo`, the
reproduction) or edgecell's CenterNet on an ImageNet MobileNet V1 0.25 (`--arch centernet`).

    python -m edgecell.convert.train_cells --arch centernet --data DIR --out DIR --minutes 45 --seed 0

* data: Training split only (300 images). The 14 training XMLs with no RBC box at all are left
  out of training (their RBCs would be taught as background); zero-area boxes are dropped by the
  VOC loader. A fixed-seed hold-out of 30 of the remaining training images selects the best
  checkpoint (the official Validation split is a subset of Training, not independent).
* pre-processing: `edgecell.tasks.cells.preprocess`, the runtime's own function.
* augmentation: same-scale mosaic of 4 smears (p=0.5), random scale 0.75-1.25 with translation,
  horizontal and vertical flips, HSV colour jitter, greyscale (`--grey`, CenterNet default 0.1, so a
  greyscale smear still counts).
* schedule: Adam, warm-up then cosine decay over the wall-clock budget (--minutes); one line per
  epoch with validation loss and mAP@0.5; best/last weights and the Keras model in --out.
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np

from edgecell.convert.unfamiliar import unfamiliar_stats  # noqa: F401 (the smears' statistics)


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="dataset folder (or the folder holding cbc_bccd_cleaned/)")
    p.add_argument("--out", required=True, help="output folder for checkpoints, logs, the Keras model")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock training budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", choices=("tiny-yolo", "centernet"), default="tiny-yolo",
                   help="tiny-yolo: the paper's Tiny-YOLOv2 from scratch; centernet: MobileNet V1 0.25 "
                   "(ImageNet) + FPN to stride 8 + CenterNet head")
    p.add_argument("--imagenet", help="centernet: MobileNet V1 0.25 ImageNet no-top .h5 (else $EDGECELL_WEIGHTS, "
                   "../shared/weights)")
    p.add_argument("--grey", type=float, default=None, help="probability of a greyscale training image "
                   "(default 0.1 for centernet, 0 for tiny-yolo as trained for the card)")
    p.add_argument("--input", type=parse_size, default=(416, 320), help="W x H, multiples of 32")
    p.add_argument("--width", type=float, default=1.0, help="filter multiplier (1.0 = the paper's Tiny-YOLOv2)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--holdout", type=int, default=30, help="training images held out to pick the checkpoint")
    p.add_argument("--mosaic", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=0, help="stop after N steps (smoke test)")
    p.add_argument("--epochs", type=int, default=10_000, help="upper bound; the wall-clock budget usually stops first")
    p.add_argument("--export", metavar="KERAS", help="skip training: export this trained .keras model (FP32 + INT8, "
                   "TFLite / OpenVINO / ONNX) into --out, check INT8 against FP32, evaluate on Testing and store "
                   "the thresholds chosen on the hold-out in each sidecar")
    p.add_argument("--calibration", type=int, default=100, help="training images for INT8 calibration (--export)")
    p.add_argument("--stem", default="cells", help="file stem of exported models (--export)")
    p.add_argument("--weights", help="with --export: load these weights into the model first")
    p.add_argument("--thresholds", metavar="MODEL", help="skip training: choose the counting thresholds of an "
                   "exported MODEL again on the hold-out of the run in --out (its split.json), with the counting "
                   "rules its sidecar has now, and store them in its sidecar")
    p.add_argument("--share-settings", metavar="SIDECAR", help="skip training: write the counting rules "
                   "(thresholds, white-cell rules, auto-scale, ...) of SIDECAR (the shipped INT8 file's) into the "
                   "other precisions' sidecars in --out, each one's own thresholds kept as own_thresholds")
    p.add_argument("--int8-offset", metavar="INT8_MODEL", help="skip training: measure the INT8 file's heatmap "
                   "logit shift against --float-reference at the float model's peaks on the unlabelled Training "
                   "smears and store its negative in the INT8 sidecar (int8_logit_offset)")
    p.add_argument("--float-reference", metavar="FP32_MODEL", help="with --int8-offset: the FP32 file of the same network")
    p.add_argument("--labels", choices=("cbc", "txl"), default="cbc",
                   help="cbc: the CBC/BCCD boxes of 286 Training smears (the reproduction); txl: TXL-PBC's "
                   "complete boxes of the 157 Training smears that have them, plus Chula RBC-12 (--chula), "
                   "with lab-shift augmentation")
    p.add_argument("--chula", type=float, default=1.0, help="with --labels txl: share of the Chula training "
                   "images to use (0 = TXL only); Chula's held-out split is never used")
    p.add_argument("--txl-repeat", type=int, default=2, help="with --labels txl: TXL images per epoch, in copies")
    p.add_argument("--crop", type=parse_size, default=None, help="train on random W x H crops of the model input "
                   "(multiples of 32; fully convolutional, so fewer pixels per step at the same cell size)")
    p.add_argument("--init", metavar="WEIGHTS", help="with --labels txl: start from these weights (a fine-tune; "
                   "e.g. a previous run's last.weights.h5) instead of ImageNet alone")
    p.add_argument("--pseudo", metavar="MODEL", help="with --labels txl: also train on the CBC-only Training smears "
                   "(no TXL labels), labelled by this counter (device pipeline, stored thresholds) plus the CBC "
                   "white-cell and platelet boxes it missed")
    p.add_argument("--platelet-weight", type=float, default=1.0, help="with --labels txl: weight of the platelet "
                   "positives in the heatmap loss (platelets are few: ~1 per smear)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- augmentation
def _clip_boxes(boxes, labels, w, h, min_visible=0.4):
    if len(boxes) == 0:
        return boxes.reshape(0, 4), labels
    area0 = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    b = boxes.copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep = (area >= min_visible * np.maximum(area0, 1e-6)) & (b[:, 2] - b[:, 0] > 3) & (b[:, 3] - b[:, 1] > 3)
    return b[keep], labels[keep]


def mosaic(samples, rng):
    """Four smears at their own scale, one per quadrant around a random centre."""
    h, w = samples[0][0].shape[:2]
    cx, cy = int(rng.uniform(0.3, 0.7) * w), int(rng.uniform(0.3, 0.7) * h)
    canvas = np.full((h, w, 3), 114, np.uint8)
    boxes, labels = [], []
    regions = [(0, 0, cx, cy), (cx, 0, w, cy), (0, cy, cx, h), (cx, cy, w, h)]
    for (img, b, l), (x0, y0, x1, y1) in zip(samples, regions):
        if x1 <= x0 or y1 <= y0:
            continue
        ih, iw = img.shape[:2]
        # take the same-size region from a random place in the source image
        sx = int(rng.integers(0, max(1, iw - (x1 - x0) + 1)))
        sy = int(rng.integers(0, max(1, ih - (y1 - y0) + 1)))
        canvas[y0:y1, x0:x1] = img[sy : sy + (y1 - y0), sx : sx + (x1 - x0)]
        bb = b.copy()
        bb[:, [0, 2]] += x0 - sx
        bb[:, [1, 3]] += y0 - sy
        # clip to the quadrant
        if len(bb):
            area0 = (bb[:, 2] - bb[:, 0]) * (bb[:, 3] - bb[:, 1])
            cb = bb.copy()
            cb[:, [0, 2]] = np.clip(cb[:, [0, 2]], x0, x1)
            cb[:, [1, 3]] = np.clip(cb[:, [1, 3]], y0, y1)
            area = (cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])
            keep = (area >= 0.4 * area0) & (cb[:, 2] - cb[:, 0] > 3) & (cb[:, 3] - cb[:, 1] > 3)
            boxes.append(cb[keep]), labels.append(l[keep])
    return canvas, np.concatenate(boxes).reshape(-1, 4), np.concatenate(labels)


def stain_and_optics(img, rng):
    """Another lab's microscope: per-channel gain and gamma (stain, illumination, white balance),
    Gaussian blur (focus), sensor noise and JPEG recompression, each with its own probability."""
    import cv2

    if rng.random() < 0.7:
        gain = rng.uniform(0.8, 1.2, 3)
        gamma = rng.uniform(0.75, 1.35, 3)
        lut = np.stack([np.clip(255 * gain[c] * (np.arange(256) / 255) ** gamma[c], 0, 255) for c in range(3)], 1)
        img = np.take_along_axis(lut.astype(np.uint8), img.reshape(-1, 3).astype(np.intp), 0).reshape(img.shape)
    if rng.random() < 0.3:
        sigma = rng.uniform(0.5, 2.0)
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma)
    if rng.random() < 0.3:
        img = np.clip(img + rng.normal(0, rng.uniform(2, 12), img.shape), 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 96))])
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return np.ascontiguousarray(img)


def augment(img, boxes, labels, rng, grey: float = 0.0, strong: bool = False):
    """strong (lab shift): scale 0.5-2x (log-uniform), stronger colour jitter, `stain_and_optics`,
    and edge-cut cells kept while >= 20 % of their box is visible (the complete labels box edge-cut
    cells down to ~1/4 of a cell); else the reproduction's settings."""
    import cv2

    h, w = img.shape[:2]
    # scale + translate
    s = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))) if strong else rng.uniform(0.75, 1.25)
    tx = rng.uniform(-0.15, 0.15) * w + (1 - s) * w / 2
    ty = rng.uniform(-0.15, 0.15) * h + (1 - s) * h / 2
    m = np.array([[s, 0, tx], [0, s, ty]], np.float32)
    img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(114, 114, 114))
    boxes = boxes * s + np.array([tx, ty, tx, ty], np.float32)
    boxes, labels = _clip_boxes(boxes, labels, w, h, min_visible=0.2 if strong else 0.4)
    if rng.random() < 0.5:
        img = img[:, ::-1]
        boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1) if len(boxes) else boxes
    if rng.random() < 0.5:
        img = img[::-1]
        boxes = np.stack([boxes[:, 0], h - boxes[:, 3], boxes[:, 2], h - boxes[:, 1]], 1) if len(boxes) else boxes
    # HSV jitter
    gains = rng.uniform(-1, 1, 3) * (np.array([0.05, 0.5, 0.35]) if strong else np.array([0.02, 0.4, 0.3])) + 1
    hsv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] * gains[0]) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * gains[1], 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * gains[2], 0, 255)
    img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    if strong:
        img = stain_and_optics(img, rng)
    if grey and rng.random() < grey:
        img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return img, boxes.astype(np.float32).reshape(-1, 4), labels


def to_input(img, boxes, info):
    """Run the runtime pre-processing; map boxes to model-input pixels."""
    from edgecell.tasks.cells import preprocess

    x, ctx = preprocess(img, info)
    lb = ctx.letterbox
    b = boxes * lb.scale + np.array([lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y], np.float32)
    return x[0], b


def random_crop(x, boxes, labels, crop, rng, min_visible=0.2):
    """A crop (W x H) of a model input and its boxes (training on crops of a fully convolutional
    net: fewer pixels per step, same cell sizes)."""
    cw, ch = crop
    h, w = x.shape[:2]
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    b = np.asarray(boxes, np.float32).reshape(-1, 4) - np.array([x0, y0, x0, y0], np.float32)
    b, labels = _clip_boxes(b, labels, cw, ch, min_visible)
    return x[y0 : y0 + ch, x0 : x0 + cw], b, labels


class Batches:
    """Background thread producing augmented batches (OpenCV releases the GIL)."""

    def __init__(self, data, info, targets, batch, seed, mosaic_p, grey=0.0, strong=False, crop=None):
        """targets(boxes_list, labels_list[, weights_list]) -> tuple of target arrays for the loss.
        data items: (image, boxes, labels) or (image, boxes, labels, loss weights, group); mosaic
        only mixes images of one group (their labels mean the same)."""
        self.data, self.info, self.targets = data, info, targets
        self.batch, self.mosaic_p, self.grey, self.strong, self.crop = batch, mosaic_p, grey, strong, crop
        self.groups: dict = {}
        for i, d in enumerate(data):
            self.groups.setdefault(d[4] if len(d) > 4 else 0, []).append(i)
        self.rng = np.random.default_rng(seed)
        self.q: queue.Queue = queue.Queue(maxsize=6)
        self.steps_per_epoch = max(1, len(data) // batch)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            order = self.rng.permutation(len(self.data))
            for s in range(self.steps_per_epoch):
                xs, bs, ls, ws = [], [], [], []
                for k in order[s * self.batch : (s + 1) * self.batch]:
                    img, b, l = self.data[k][:3]
                    weights = self.data[k][3] if len(self.data[k]) > 3 else None
                    if self.rng.random() < self.mosaic_p:
                        group = self.groups[self.data[k][4] if len(self.data[k]) > 4 else 0]
                        others = [self.data[group[j]][:3] for j in self.rng.integers(0, len(group), 3)]
                        img, b, l = mosaic([(img, b, l)] + others, self.rng)
                    img, b, l = augment(img, b, l, self.rng, self.grey, self.strong)
                    x, b = to_input(img, b, self.info)
                    if self.crop:
                        x, b, l = random_crop(x, b, l, self.crop, self.rng)
                    xs.append(x), bs.append(b), ls.append(l), ws.append(weights)
                extra = (ws,) if ws[0] is not None else ()
                self.q.put((np.stack(xs), *self.targets(bs, ls, *extra)))

    def get(self):
        return self.q.get()


class Fitter:
    """Adam (weight decay 5e-4, clip-norm 10), warm-up then cosine decay over the wall-clock
    budget (args.minutes), one epoch of batches per `epoch()` call; `step` counts all steps."""

    def __init__(self, tf, keras, model, loss_fn, args, batches):
        self.tf, self.args, self.batches = tf, args, batches
        self.opt = keras.optimizers.Adam(learning_rate=args.lr, weight_decay=5e-4, clipnorm=10.0)
        self.steps_per_epoch = batches.steps_per_epoch
        self.budget = args.minutes * 60
        self.warmup = min(150, self.steps_per_epoch * 3)
        self.step, self.t0 = 0, time.time()
        opt = self.opt

        @tf.function(reduce_retracing=True)
        def train_step(x, *t):
            with tf.GradientTape() as tape:
                pred = model(x, training=True)
                total, parts = loss_fn(pred, *t)
            grads = tape.gradient(total, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return total, parts

        self.train_step = train_step

    def epoch(self, epoch: int):
        """One epoch (or up to --max-steps); returns (losses, last loss parts, last lr)."""
        tf, args, spe = self.tf, self.args, self.steps_per_epoch
        run, parts, lr = [], {}, args.lr
        for s in range(spe):
            elapsed = time.time() - self.t0
            frac = min(1.0, elapsed / self.budget)
            lr = args.lr * (min(1.0, (self.step + 1) / self.warmup)) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
            self.opt.learning_rate.assign(lr)
            x, *t = self.batches.get()
            total, parts = self.train_step(tf.constant(x), *map(tf.constant, t))
            run.append(float(total))
            self.step += 1
            progress(epoch, s + 1, spe, float(np.mean(run[-20:])), lr, elapsed, self.budget)
            if args.max_steps and self.step >= args.max_steps:
                break
        return run, parts, lr


def run_epochs(fit: Fitter, model, args, out: Path, validate) -> tuple[float, int, int]:
    """Epochs until the wall-clock budget (or --max-steps, --epochs) is spent; after each,
    `validate()` -> (score, log fields, summary line): a line in train_log.jsonl, best/last weights
    in `out`. Loads the best weights at the end; returns (best score, epochs, steps)."""
    best, epoch_times, epoch = -1.0, [], 0
    with open(out / "train_log.jsonl", "a") as log:
        for epoch in range(1, args.epochs + 1):
            te = time.time()
            run, parts, lr = fit.epoch(epoch)
            score, fields, line = validate()
            epoch_times.append(time.time() - te)
            elapsed = time.time() - fit.t0
            log.write(json.dumps({"epoch": epoch, "step": fit.step, "train_loss": float(np.mean(run)), **fields,
                                  "score": score, "lr": lr, "elapsed_s": round(elapsed, 1),
                                  "parts": {k: float(v) for k, v in parts.items()}}) + "\n")
            log.flush()
            improved = score > best
            if improved:
                best = score
                model.save_weights(out / "best.weights.h5")
            model.save_weights(out / "last.weights.h5")
            progress(epoch, fit.steps_per_epoch, fit.steps_per_epoch, float(np.mean(run)), lr, elapsed, fit.budget, end="\n")
            print(f"  {line}; epoch {epoch_times[-1]:.0f} s{'  *best*' if improved else ''}", flush=True)
            if (args.max_steps and fit.step >= args.max_steps) or elapsed + np.mean(epoch_times[-3:]) > fit.budget:
                break
    model.load_weights(out / "best.weights.h5")
    return best, epoch, fit.step


def progress(epoch, step, total, loss, lr, elapsed, budget, end="\r"):
    n = 24
    done = int(n * step / total)
    eta = max(0.0, budget - elapsed)
    line = (f"epoch {epoch:3d} [{'#' * done}{'.' * (n - done)}] {step:3d}/{total} loss {loss:8.3f} "
            f"lr {lr:.2e} elapsed {elapsed / 60:5.1f} min, budget left {eta / 60:5.1f} min")
    if sys.stdout.isatty():
        print(line, end=end, flush=True)
    elif end == "\n":
        print(line, flush=True)


def check_int8(paths: dict, hold: list, out: Path) -> dict:
    """INT8 against FP32 per format on hold-out inputs (cosine, max abs error): int8_check.json."""
    from edgecell.backends import load_session
    from edgecell.convert.quantize import compare_outputs

    check = {}
    for fmt in ("tflite", "openvino", "onnx"):
        if f"{fmt}-int8" in paths:
            c = compare_outputs(load_session(paths[f"{fmt}-fp32"]), load_session(paths[f"{fmt}-int8"]), hold)
            check[fmt] = {"cosine": c["cosine"], "max_abs_error": c["max_abs_error"]}
            print(f"  {fmt}: INT8 vs FP32 cosine on {len(hold)} hold-out images {c['cosine']:.4f}", flush=True)
    (out / "int8_check.json").write_text(json.dumps(check, indent=1))
    return check


def export(args) -> dict:
    """Export a trained model with the shared converter, compare INT8 with FP32 per backend on
    hold-out images, evaluate every file through the device pipeline, store chosen thresholds."""
    import keras

    from edgecell.backends import load_session
    from edgecell.calibration import dataset_dir
    from edgecell.convert.quantize import compare_outputs, export_model
    from edgecell.evaluation.detection import evaluate_cells
    from edgecell.images import decode_image
    from edgecell.modelinfo import read_model_info, write_sidecar
    from edgecell.tasks import cells

    src = Path(args.export)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "txl_train" in json.loads((src.parent / "split.json").read_text()):
        return export_complete(args, src, out)
    info = read_model_info(src)
    cells.check_info(info)
    model = keras.models.load_model(src, compile=False)
    if args.weights:
        model.load_weights(args.weights)
    split = json.loads((src.parent / "split.json").read_text())
    data_dir = dataset_dir("cbc_bccd_cleaned", args.data)
    images = data_dir / "Training" / "Images"
    rng = np.random.default_rng(args.seed)
    cal_stems = sorted(rng.choice(split["train"], min(args.calibration, len(split["train"])), replace=False))
    cal = [cells.preprocess(decode_image(images / f"{s}.jpg"), info)[0] for s in cal_stems]
    print(f"calibration: {len(cal)} training images; exporting ...", flush=True)
    t0 = time.time()
    paths = export_model(model, info, cal, out, args.stem, progress=lambda n: print(f"  wrote {n} ({time.time() - t0:.0f} s)", flush=True))
    hold = [cells.preprocess(decode_image(images / f"{s}.jpg"), info)[0] for s in split["holdout"]]
    check_int8(paths, hold, out)
    hold_xml = [data_dir / "Training" / "Annotations" / f"{s}.xml" for s in split["holdout"]]
    order = [paths[k] for k in sorted(paths)]
    report = evaluate_cells(order, data_dir, out / "eval", split="Testing", sweep_split=hold_xml)
    # the paper's procedure on the official Validation list (a subset of Training) for the record
    official = evaluate_cells([paths["tflite-fp32"]], data_dir, out / "eval_official_validation", split="Testing",
                              sweep_split="Validation")
    # one sidecar per precision (cells_int8.json serves .tflite, .xml and .onnx): the thresholds are
    # those the sweep chose for the TFLite file of that precision (the one shipped)
    by_key = {k: r for k, r in report["models"].items()}
    for precision in ("fp32", "int8"):
        r = by_key.get(f"litert-{precision}") or next((v for k, v in by_key.items() if k.endswith(precision)), None)
        if r is None:
            continue
        path = Path(r["path"])
        meta = read_model_info(path)
        meta.settings["thresholds"] = r["sweep"]["chosen"]
        meta.settings["threshold_holdout"] = list(split["holdout"])
        meta.settings["thresholds_chosen_on"] = (f"Table 1 sweep (0.20-0.60) on {len(hold_xml)} held-out training "
                                                 f"images, {r['backend']} {precision}")
        meta.metrics = {"testing_images": report["images"],
                        **{f"testing_map50_{k}": round(v["map50"]["mean"], 4) for k, v in by_key.items() if k.endswith(precision)},
                        "testing_counting_accuracy": {k: round(v["accuracy"], 4) for k, v in
                                                      r["counting"]["swept_thresholds"]["per_class"].items()}}
        write_sidecar(path, meta)
    print((out / "eval" / "cells_eval.md").read_text(), flush=True)
    print("official Validation sweep (FP32 TFLite):", official["models"][next(iter(official["models"]))]["sweep"]["chosen"])
    return report


FEATURES_LAYER = "fpn3_pw_relu"  # the stride-8 merged feature map, pooled: the unfamiliar-smear score (a probe of
# four layers: it separated training smears from product photos and X-rays with the widest margin)


def with_features(model, layer: str = FEATURES_LAYER):
    """The detector plus a second output "features": the global mean of `layer` (1 x K), for the
    unfamiliar-smear score. The detection output is unchanged."""
    import keras

    pooled = keras.layers.GlobalAveragePooling2D(name="features")(model.get_layer(layer).output)
    return keras.Model(model.input, [model.output, pooled], name=model.name)


#: white cells that cannot be one (`edgecell.tasks.cells.plausible_wbc`), measured on the 157 TXL
#: Training smears through the shipped counter: every whole detected white cell that matches a
#: labelled one is >= 1.14 x the smear's median red cell, every false one <= 0.90 x; a second box on
#: one white cell lies >= 0.61 inside it, two labelled white cells overlap by <= 0.26 (0.34 detected)
WBC_RULES = {"min_rbc_size": 1.0, "max_inside": 0.5}
#: count again on 2 x 2 enlarged tiles when the median red cell is below `below_rbc_px` in the model
#: input (`edgecell.tasks.cells.infer`): on the 20 hold-out smears re-framed at 0.5x-1.25x, tiles
#: (overlap 0.4) count better at 0.5x and 0.6x (median red cell 32.5 and 37.3 px) and no better from
#: 0.7x (41.5 px); the cut is the midpoint of 37.3 and 41.5
AUTO_SCALE = {"below_rbc_px": 39.4, "tiles": 2, "overlap": 0.4, "min_cells": 10}

#: platelets that are not stained (`edgecell.tasks.cells.stained_platelets`), measured on the 157
#: TXL Training smears through the shipped counter (platelet detections >= 0.30): the dust spot of
#: BCCD's camera (20 of its 22 detections) <= 0.12 x the smear's stain spread (<= 0.23 with hue +10
#: and saturation x 0.6), labelled platelets >= 0.56 (>= 0.56 under colour, blur and noise shifts;
#: one at 0.0 under JPEG quality 10); the cut is about their geometric middle
PLATELET_STAIN = {"min_relative_spread": 0.25}

#: magnifications the RBC and platelet thresholds are chosen over (hold-out smears re-framed as
#: `edgecell.evaluation.cell_counts.magnify` does for the sweep)
SWEEP_SCALES = (0.5, 0.7, 1.0, 1.4)
#: classes whose threshold is chosen by their total across magnifications (the counting target is
#: the total; with < 1 platelet per smear Table 1's per-image error is flat: on the 20 hold-out
#: smears 0.20, 0.25, 0.35 and 0.40 tie and its tie-break takes the lowest); WBC by Table 1
ACROSS_SCALES = ("RBC", "Platelets")


def detections_across_scales(detect, images, annotations, scales=SWEEP_SCALES) -> list[tuple[list, np.ndarray]]:
    """Per magnification: the hold-out smears re-framed at it, their detections and their labels."""
    from edgecell.evaluation.cell_counts import magnify

    per_scale = []
    for sc in scales:
        preds, labels = [], []
        for i in range(len(images)):
            img, _, lab = magnify(images, annotations, i, sc) if sc != 1.0 else (images[i], None, annotations[i].labels)
            preds.append(detect(img))
            labels.append(np.asarray(lab))
        per_scale.append((preds, np.concatenate(labels)))
    return per_scale


def threshold_across_scales(per_scale: list[tuple[list, np.ndarray]], index: int) -> dict:
    """The threshold of class `index` (0.20-0.60, step 0.05) with the smallest mean relative error
    of its total over the magnifications of `detections_across_scales`: a threshold that counts
    well at one magnification only is not chosen."""
    from edgecell.evaluation.detection import SWEEP

    error = {f"{t:.2f}": float(np.mean([abs(sum(int(((c == index) & (s >= t)).sum()) for _, c, s in preds)
                                            - int((lab == index).sum())) / max(int((lab == index).sum()), 1)
                                        for preds, lab in per_scale])) for t in SWEEP}
    return {"chosen": float(min((e, float(t)) for t, e in error.items())[1]), "error": error}


def choose_thresholds(path, annotations, images, threads: int | None = None) -> tuple[dict, dict]:
    """The counting thresholds of the model file `path` (its sidecar's other counting rules on),
    on held-out smears with complete labels: WBC by the Table 1 sweep, `ACROSS_SCALES` by
    `threshold_across_scales`. Returns (chosen {class: threshold}, {class: error by threshold})."""
    from edgecell.evaluation.cell_counts import detector
    from edgecell.evaluation.detection import threshold_sweep
    from edgecell.tasks import cells

    detect, info, _ = detector(path, threads=threads)
    labels = cells.labels_of(info)
    gt = np.array([[int((a.labels == k).sum()) for k in range(len(labels))] for a in annotations])
    chosen = dict(threshold_sweep([detect(img) for img in images], gt, labels)["chosen"])
    per_scale = detections_across_scales(detect, images, annotations)
    errors = {}
    for name in ACROSS_SCALES:
        r = threshold_across_scales(per_scale, labels.index(name))
        chosen[name], errors[name] = r["chosen"], r["error"]
    return chosen, errors


def thresholds_chosen_on(n: int, precision: str) -> str:
    return (f"{n} held-out TXL training smears (complete labels), LiteRT {precision}, the sidecar's other counting "
            f"rules on: WBC by the Table 1 sweep (0.20-0.60); {' and '.join(ACROSS_SCALES)} by the smallest mean "
            f"relative error of the total over magnifications {', '.join(f'{x:g}x' for x in SWEEP_SCALES)} "
            f"(Chula's labels are incomplete, so not used)")


def record_thresholds(meta, chosen: dict, errors: dict, holdout, precision: str) -> None:
    """Write the thresholds `choose_thresholds` gave into `meta` (a ModelInfo), with the hold-out
    smears (`holdout`: their stems) and how they were chosen."""
    meta.settings["thresholds"] = chosen
    meta.settings["threshold_holdout"] = list(holdout)
    meta.settings["thresholds_chosen_on"] = thresholds_chosen_on(len(holdout), precision)
    meta.settings["threshold_error_across_scales"] = errors


def store_thresholds(path: Path, run_dir: Path, data=None, threads: int | None = None) -> dict:
    """`--thresholds`: choose the thresholds of an exported model file again on its run's hold-out
    (`run_dir/split.json`), with the counting rules its sidecar has now, and store them there."""
    from edgecell.calibration.cell_labels import load_txl
    from edgecell.images import decode_image
    from edgecell.modelinfo import read_model_info, write_sidecar

    split = json.loads((run_dir / "split.json").read_text())
    txl = {a.stem: a for a in load_txl("Training", data)}
    hold = [txl[s] for s in split["txl_holdout"]]
    chosen, errors = choose_thresholds(path, hold, [decode_image(a.image_path) for a in hold], threads)
    meta = read_model_info(path)
    record_thresholds(meta, chosen, errors, split["txl_holdout"], meta.precision)
    meta.settings.pop("rbc_threshold_sweep", None)
    write_sidecar(path, meta)
    return chosen


def share_counting_settings(source, target) -> None:
    """Give `target` (a ModelInfo) the counting rules of `source` (`cells.COUNTING_SETTINGS`: the
    thresholds, white-cell rules, auto-scale, ...): the rules are part of the product, chosen once
    on the shipped INT8 file; a second threshold choice for the FP32 file on the same small
    hold-out is noise, not quantization. The target's own choice is kept as `own_thresholds`."""
    from edgecell.tasks.cells import COUNTING_SETTINGS

    own = target.settings.get("own_thresholds", target.settings.get("thresholds"))  # shared before: keep the first
    for key in COUNTING_SETTINGS:
        if key in source.settings:
            target.settings[key] = json.loads(json.dumps(source.settings[key]))
        else:
            target.settings.pop(key, None)
    if own is not None and own != target.settings.get("thresholds"):
        target.settings["own_thresholds"] = own
    target.settings["thresholds_chosen_on"] = (f"{source.settings.get('thresholds_chosen_on', 'the source file')} "
                                               f"(the {source.precision} file's counting rules, shared)")


def share_settings(source_sidecar: Path, out: Path, stem: str = "cells") -> list[Path]:
    """`--share-settings`: write the counting rules of `source_sidecar` (the shipped INT8 file's)
    into the sidecar of every other precision exported in `out` (`<stem>_<precision>.json`)."""
    from edgecell.modelinfo import read_model_info, write_sidecar

    source = read_model_info(source_sidecar)
    written = []
    for sidecar in sorted(out.glob(f"{stem}_*.json")):
        target = read_model_info(sidecar)
        if target.precision == source.precision:
            continue
        share_counting_settings(source, target)
        written.append(write_sidecar(sidecar, target))
    return written


#: the float model's heatmap peaks the INT8 logit offset is measured at (score >= this)
OFFSET_MIN_SCORE = 0.2


def heatmap_shift(int8_path, fp32_path, image_paths, threads: int | None = None) -> list[np.ndarray]:
    """Per class, at each heatmap peak of the FP32 file scoring >= `OFFSET_MIN_SCORE`: the INT8 file's
    peak logit there (its maximum over the 3 x 3 neighbourhood, what its decoder would find) minus
    the FP32 logit. Images are used without labels."""
    import cv2

    from edgecell.images import decode_image
    from edgecell.model import load_model
    from edgecell.tasks import cells

    quantized, reference = load_model(int8_path, threads=threads), load_model(fp32_path, threads=threads)
    classes = len(cells.labels_of(quantized.info))
    kernel, floor = np.ones((3, 3), np.uint8), np.log(OFFSET_MIN_SCORE / (1 - OFFSET_MIN_SCORE))
    shifts = [[] for _ in range(classes)]
    for path in image_paths:
        image = decode_image(path)
        q, f = (cells.centernet_output(m.session.run(cells.preprocess(image, m.info)[0]), classes)
                for m in (quantized, reference))
        for k in range(classes):
            hf, hq = np.ascontiguousarray(f[..., k]), np.ascontiguousarray(q[..., k])
            peak = (hf >= cv2.dilate(hf, kernel)) & (hf >= floor)
            shifts[k].append(cv2.dilate(hq, kernel)[peak] - hf[peak])
    return [np.concatenate(v) if v else np.zeros(0, np.float32) for v in shifts]


def training_side_smears(data=None) -> list[Path]:
    """Every Training smear of cbc_bccd_cleaned (157 with TXL labels + 143 CBC-only), as image paths
    only: no labels, nothing from Testing."""
    from edgecell.calibration import dataset_dir

    return sorted((dataset_dir("cbc_bccd_cleaned", data) / "Training" / "Images").glob("*.jpg"))


def store_int8_offset(int8_path: Path, fp32_path: Path, data=None, threads: int | None = None) -> dict:
    """`--int8-offset`: the INT8 file's per-class heatmap bias against the float file of the same
    network (median of `heatmap_shift` on `training_side_smears`; the median, as a few peaks move
    far in either direction), stored negated in its sidecar (`int8_logit_offset`, read by
    `edgecell.tasks.cells.logit_offset`). Empirical bias correction: the network bytes are unchanged."""
    from edgecell.modelinfo import read_model_info, write_sidecar
    from edgecell.tasks import cells

    meta = read_model_info(int8_path)
    if meta.precision != "int8":
        raise SystemExit(f"{int8_path}: the logit offset is for INT8 files (this one is {meta.precision})")
    smears = training_side_smears(data)
    shifts = heatmap_shift(int8_path, fp32_path, smears, threads)
    labels = cells.labels_of(meta)
    offset = {c: round(-float(np.median(v)), 4) if len(v) else 0.0 for c, v in zip(labels, shifts)}
    meta.settings[cells.INT8_LOGIT_OFFSET] = offset
    meta.settings["int8_logit_offset_fitted_on"] = (
        f"{len(smears)} unlabelled cbc_bccd_cleaned Training smears against {Path(fp32_path).name}: minus the median "
        f"INT8 - FP32 logit at the FP32 heatmap peaks >= {OFFSET_MIN_SCORE} (INT8: 3 x 3 maximum), peaks "
        + ", ".join(f"{c} {len(v)}" for c, v in zip(labels, shifts)))
    write_sidecar(int8_path, meta)
    return {"offset": offset, "peaks": {c: len(v) for c, v in zip(labels, shifts)},
            "mean_shift": {c: round(float(v.mean()), 4) if len(v) else 0.0 for c, v in zip(labels, shifts)}}


def export_complete(args, src: Path, out: Path) -> dict:
    """Export the complete-label counter with the shared converter (a features output added),
    then per precision: thresholds on the TXL hold-out (Table 1 sweep for WBC,
    `threshold_across_scales` for RBC and platelets) and unfamiliar-smear statistics from the training
    smears, stored in each sidecar."""
    import keras

    from edgecell.calibration.cell_labels import load_chula_points, load_txl
    from edgecell.convert.quantize import export_model
    from edgecell.images import decode_image
    from edgecell.model import load_model
    from edgecell.modelinfo import read_model_info, write_sidecar
    from edgecell.tasks import cells

    info = read_model_info(src)
    cells.check_info(info)
    model = keras.models.load_model(src, compile=False)
    if args.weights:
        model.load_weights(args.weights)
    split = json.loads((src.parent / "split.json").read_text())
    txl = {a.stem: a for a in load_txl("Training", args.data)}
    chula = {p.stem: p for p in load_chula_points(args.data)}
    train_paths = [txl[s].image_path for s in split["txl_train"]] + [chula[s].image_path for s in split["chula_train"]]
    rng = np.random.default_rng(args.seed)
    n_txl = min(len(split["txl_train"]), round(0.6 * args.calibration))
    cal_paths = ([txl[s].image_path for s in rng.choice(split["txl_train"], n_txl, replace=False)] +
                 [chula[s].image_path for s in rng.choice(split["chula_train"], args.calibration - n_txl, replace=False)])
    cal = [cells.preprocess(decode_image(p), info)[0] for p in cal_paths]
    info.settings["features_output"] = "features"
    info.settings["features_layer"] = FEATURES_LAYER
    info.settings["wbc_rules"] = dict(WBC_RULES)  # thresholds below are chosen with both steps on
    info.settings["auto_scale"] = dict(AUTO_SCALE)
    info.settings["platelet_stain"] = dict(PLATELET_STAIN)
    print(f"calibration: {len(cal)} training images ({n_txl} TXL, {len(cal) - n_txl} Chula); exporting ...", flush=True)
    t0 = time.time()
    paths = export_model(with_features(model), info, cal, out, args.stem,
                         progress=lambda n: print(f"  wrote {n} ({time.time() - t0:.0f} s)", flush=True))
    hold_anns = [txl[s] for s in split["txl_holdout"]]
    val_points = [chula[s] for s in split["chula_val"]]
    hold_images = [decode_image(a.image_path) for a in hold_anns] + [decode_image(p.image_path) for p in val_points]
    hold = [cells.preprocess(img, info)[0] for img in hold_images]
    check_int8(paths, hold, out)
    txl_images = hold_images[: len(hold_anns)]
    # INT8 decodes with its heatmap bias against the float file removed, before its thresholds are chosen
    store_int8_offset(paths["tflite-int8"], paths["tflite-fp32"], args.data, args.threads)
    for precision in ("fp32", "int8"):
        path = paths[f"tflite-{precision}"]
        chosen, errors = choose_thresholds(path, hold_anns, txl_images, args.threads)
        loaded = load_model(path, threads=args.threads)
        feats = [cells.features_of(loaded.session.run(cells.preprocess(decode_image(p), loaded.info)[0]), loaded.info)
                 for p in train_paths]
        # quantile 100: unfamiliar = farther than every training smear (the 99.5th percentile flagged a
        # paler batch of the same lab's Testing smears, 4 of 60, and one shipped sample)
        stats = unfamiliar_stats(np.array(feats))
        meta = read_model_info(path)
        record_thresholds(meta, chosen, errors, split["txl_holdout"], precision)
        meta.settings["unfamiliar"] = stats
        write_sidecar(path, meta)
        print(f"  {precision}: thresholds {chosen}; unfamiliar threshold {stats['threshold']}", flush=True)
    # one product: every precision counts with the INT8 file's rules (the FP32 sweep is kept as a record)
    share_settings(paths["tflite-int8"].with_suffix(".json"), out, args.stem)
    return paths


def _tiny_yolo_setup(args, train):
    """The paper's Tiny-YOLOv2: k-means anchors on the training boxes, YOLOv2 loss."""
    from edgecell.calibration.voc import CELL_CLASSES
    from edgecell.convert.anchors import kmeans_anchors
    from edgecell.convert.models import build_tiny_yolo
    from edgecell.convert.yolo_loss import build_targets, make_loss
    from edgecell.modelinfo import ModelInfo
    from edgecell.tasks import cells

    in_w, in_h = args.input
    grid = (in_w // 32, in_h // 32)
    scale = min(in_w / 640, in_h / 480)
    wh = np.concatenate([(a.boxes[:, 2:] - a.boxes[:, :2]) for a in train]) * scale
    anchors, miou = kmeans_anchors(wh, 5, seed=args.seed)
    print(f"anchors (input px): {np.round(anchors, 1).tolist()}  mean IoU {miou:.3f}", flush=True)
    info = ModelInfo(task="cells", name="cells-tiny-yolov2", version="1", labels=list(CELL_CLASSES),
                     input_size=(in_w, in_h), mean=[0.0], std=[255.0], resize="letterbox", precision="fp32",
                     settings={"anchors": np.round(anchors, 3).tolist(), "thresholds": dict(cells.DEFAULT_THRESHOLDS),
                               "nms_iou": cells.DEFAULT_NMS_IOU, "platelet_iou": cells.DEFAULT_PLATELET_IOU,
                               "architecture": f"tiny-yolov2 width {args.width}", "anchor_iou": round(miou, 4)})
    model = build_tiny_yolo((in_w, in_h), len(CELL_CLASSES), 5, width=args.width)

    def targets(bs, ls):
        return build_targets(bs, ls, anchors, (in_w, in_h), grid)

    return info, model, targets, make_loss(anchors, (in_w, in_h), grid, len(CELL_CLASSES))


def _centernet_setup(args, keras):
    """edgecell's detector: ImageNet MobileNet V1 0.25 + FPN to stride 8 + CenterNet head, input
    scaled to [-1, 1] as the backbone was trained; INTER_LINEAR letterbox (cheap on the device)."""
    from edgecell.calibration.voc import CELL_CLASSES
    from edgecell.convert.centernet_loss import build_heat_targets, make_centernet_loss
    from edgecell.convert.models import build_centernet
    from edgecell.convert.products import find_weights
    from edgecell.modelinfo import ModelInfo
    from edgecell.tasks import cells

    in_w, in_h = args.input
    weights = find_weights(args.imagenet)
    info = ModelInfo(task="cells", name="cells-centernet-mobilenetv1", version="2", labels=list(CELL_CLASSES),
                     input_size=(in_w, in_h), mean=[127.5], std=[127.5], resize="letterbox", precision="fp32",
                     settings={"head": "centernet", "stride": cells.CENTERNET_STRIDE,
                               "offset_scale": cells.CENTERNET_OFFSET_SCALE, "size_scale": cells.CENTERNET_SIZE_SCALE,
                               "interpolation": "linear", "thresholds": dict(cells.DEFAULT_THRESHOLDS),
                               "nms_iou": cells.DEFAULT_NMS_IOU, "platelet_iou": cells.DEFAULT_PLATELET_IOU,
                               "architecture": "mobilenet-v1 0.25 (ImageNet) + FPN stride 8 + CenterNet head",
                               "backbone_weights": weights.name})
    model = build_centernet((in_w, in_h), len(CELL_CLASSES), weights=weights)

    def targets(bs, ls):
        return (build_heat_targets(bs, ls, len(CELL_CLASSES), (in_w, in_h)),)

    return info, model, targets, make_centernet_loss(len(CELL_CLASSES))


#: loss weights per training source (positive x3, negative x3, size; classes RBC, WBC, Platelets):
#: TXL boxes every cell; a fully labelled Chula field labels every red cell by a point (no size,
#: no WBC/platelet labels); a sparsely labelled one (morphology examples only) teaches positives only
WEIGHTS = {"txl": np.array([1, 1, 1, 1, 1, 1, 1], np.float32),
           "pseudo": np.array([1, 1, 1, 1, 1, 1, 1], np.float32),
           "chula-complete": np.array([1, 0, 0, 1, 0, 0, 0], np.float32),
           "chula-sparse": np.array([1, 0, 0, 0, 0, 0, 0], np.float32)}


def pseudo_labels(model_path, data=None) -> list[tuple]:
    """The CBC-only Training smears (no TXL labels; never trained on by a `--labels txl` model)
    labelled by a counter: its detections through the device pipeline at its stored thresholds, plus
    each CBC white-cell or platelet box that no detection of its class overlaps (IoU >= 0.3), as the
    counter misses more of those than it invents. (image, boxes, labels) per smear."""
    from edgecell.calibration import dataset_dir
    from edgecell.calibration.cell_labels import load_txl
    from edgecell.calibration.voc import CELL_CLASSES, load_split
    from edgecell.images import decode_image
    from edgecell.model import load_model
    from edgecell.pipeline import predict
    from edgecell.tasks.boxes import box_iou

    complete = {a.stem for a in load_txl("Training", data)}
    model = load_model(model_path)
    out = []
    for a in load_split(dataset_dir("cbc_bccd_cleaned", data), "Training"):
        if a.stem in complete:
            continue
        img = decode_image(a.image_path)
        r, _ = predict(model, img)
        boxes, labels = [r.boxes.astype(np.float32)], [r.classes.astype(np.int64)]
        for k in (CELL_CLASSES.index("WBC"), CELL_CLASSES.index("Platelets")):
            human, found = a.boxes[a.labels == k], r.boxes[r.classes == k]
            missed = human if len(found) == 0 else human[box_iou(human, found).max(1) < 0.3]
            boxes.append(missed.astype(np.float32)), labels.append(np.full(len(missed), k, np.int64))
        out.append((img, np.concatenate(boxes).reshape(-1, 4), np.concatenate(labels)))
    return out


def complete_data(args):
    """TXL Training (hold-out of args.holdout, fixed seed) and Chula's training split (its held-out
    split never touched; 20 fully labelled training fields picked by seed for checkpoint choice)."""
    from edgecell.calibration.cell_labels import (CHULA_CELL_DIAMETER, COMPLETE_COVERAGE, chula_split,
                                                  label_coverage, load_chula_points, load_txl, point_boxes)
    from edgecell.images import decode_image

    txl = load_txl("Training", args.data)
    rng = np.random.default_rng(args.seed)
    hold = set(sorted(txl[i].stem for i in rng.permutation(len(txl))[: args.holdout]))
    items = []
    platelets = np.array([1, 1, args.platelet_weight, 1, 1, 1, 1], np.float32)  # positive weight of class 2
    for a in txl:
        if a.stem not in hold:
            items += [(decode_image(a.image_path), a.boxes.copy(), a.labels.copy(), WEIGHTS["txl"] * platelets, "txl")] * args.txl_repeat
    if args.pseudo:
        items += [(img, b, lab, WEIGHTS["pseudo"] * platelets, "pseudo") for img, b, lab in pseudo_labels(args.pseudo, args.data)]
    chula_train, chula_held = chula_split(load_chula_points(args.data)) if args.chula > 0 else ([], [])
    chula_train = [chula_train[i] for i in sorted(rng.permutation(len(chula_train))[: round(args.chula * len(chula_train))])]
    coverage, chula_val, chula_used = {}, [], []
    for pa in chula_train:
        img = decode_image(pa.image_path)
        coverage[pa.stem] = round(label_coverage(pa, img), 3)
        complete = coverage[pa.stem] >= COMPLETE_COVERAGE
        if complete and len(chula_val) < 20 and rng.random() < 0.25:
            chula_val.append((pa, img))
            continue
        kind = "chula-complete" if complete else "chula-sparse"
        items.append((img, point_boxes(pa.points), np.zeros(len(pa.points), np.int64), WEIGHTS[kind], kind))
        chula_used.append(pa.stem)
    split = {"txl_train": sorted(a.stem for a in txl if a.stem not in hold), "txl_holdout": sorted(hold),
             "chula_train": chula_used, "chula_val": [pa.stem for pa, _ in chula_val],
             "chula_held_out": [pa.stem for pa in chula_held], "chula_coverage": coverage,
             "chula_cell_diameter": CHULA_CELL_DIAMETER, "complete_coverage": COMPLETE_COVERAGE,
             "cbc_only_training_smears": (f"pseudo-labelled by {Path(args.pseudo).name} (+ CBC WBC/platelet boxes it missed)"
                                          if args.pseudo else "left out (their RBC and platelet labels are incomplete)"),
             "platelet_weight": args.platelet_weight, "init": Path(args.init).name if args.init else None}
    return items, [a for a in txl if a.stem in hold], chula_val, split


def train_complete(args, tf, keras, out):
    """The shipped counter: complete labels (TXL) + a second lab (Chula points), lab-shift
    augmentation, optional crop training; checkpoint by mean(TXL hold-out mAP@0.5, Chula
    validation RBC counting accuracy at 0.5)."""
    from edgecell.calibration.voc import CELL_CLASSES
    from edgecell.convert.centernet_loss import build_heat_targets
    from edgecell.convert.models import build_centernet
    from edgecell.convert.products import find_weights
    from edgecell.evaluation.detection import counting_accuracy, map50
    from edgecell.modelinfo import write_sidecar
    from edgecell.tasks import cells

    items, txl_hold, chula_val, split = complete_data(args)
    (out / "split.json").write_text(json.dumps(split, indent=1))
    kinds = {k: sum(1 for it in items if it[4] == k) for k in WEIGHTS}
    print(f"data: {kinds} training items, {len(txl_hold)} TXL hold-out, {len(chula_val)} Chula validation, "
          f"{len(split['chula_held_out'])} Chula held out", flush=True)
    info, model, _, loss_fn = _centernet_setup(args, keras)
    in_w, in_h = args.input
    crop = args.crop or (in_w, in_h)
    train_model = model if crop == (in_w, in_h) else build_centernet(crop, len(CELL_CLASSES), weights=find_weights(args.imagenet))
    info.settings["training"] = {"labels": "txl+chula" if args.chula > 0 else "txl", "crop": list(crop)}

    def targets(bs, ls, ws=None):
        return (build_heat_targets(bs, ls, len(CELL_CLASSES), crop, weights_list=ws),)

    hold_x, hold_b, hold_l = [], [], []
    for a in txl_hold:
        from edgecell.images import decode_image

        x, ctx = cells.preprocess(decode_image(a.image_path), info)
        lb = ctx.letterbox
        hold_x.append(x[0]), hold_b.append(a.boxes * lb.scale + np.array([lb.pad_x, lb.pad_y] * 2, np.float32))
        hold_l.append(a.labels)
    chula_x = [cells.preprocess(img, info)[0][0] for _, img in chula_val]
    chula_gt = np.array([len(pa.points) for pa, _ in chula_val])
    @tf.function(reduce_retracing=True)
    def predict(x):
        return model(x, training=False)

    def detections(xs):
        preds = []
        for i in range(0, len(xs), 10):
            for pk in predict(np.stack(xs[i : i + 10])).numpy():
                b, c, s = cells.decode(pk[None], info, floor=0.01)
                keep = cells.nms_per_class(b, c, s)
                preds.append((b[keep], c[keep], s[keep]))
        return preds

    def validate():
        if train_model is not model:
            model.set_weights(train_model.get_weights())
        m = map50(detections(hold_x), list(zip(hold_b, hold_l)), CELL_CLASSES)
        est = np.array([int(((c == 0) & (s >= 0.5)).sum()) for _, c, s in detections(chula_x)]) if chula_x else None
        chula_acc = counting_accuracy(est.sum(), chula_gt.sum()) if chula_x else float("nan")
        txl_rbc = sum(int(((c == 0) & (s >= 0.5)).sum()) for _, c, s in detections(hold_x))
        txl_acc = counting_accuracy(txl_rbc, sum(int((lab == 0).sum()) for lab in hold_l))
        score = 0.5 * m["map"] + 0.5 * (chula_acc if chula_x else m["map"])
        line = (f"TXL hold-out mAP@0.5 {m['map']:.4f} (" + " ".join(f"{k} {v:.3f}" for k, v in m["ap"].items()) +
                f"), RBC acc@0.5 {txl_acc:.3f}; Chula val RBC acc@0.5 {chula_acc:.3f}")
        return score, {"val_map50": m["map"], "val_ap": m["ap"], "txl_rbc_acc": txl_acc, "chula_rbc_acc": chula_acc}, line

    batches = Batches(items, info, targets, args.batch, args.seed, args.mosaic, 0.1 if args.grey is None else args.grey,
                      strong=True, crop=None if crop == (in_w, in_h) else crop)
    if args.init:
        train_model.load_weights(args.init)
        print(f"fine-tune: starting from {args.init}", flush=True)
    fit = Fitter(tf, keras, train_model, loss_fn, args, batches)
    best, epoch, step = run_epochs(fit, model, args, out, validate)
    keras_path = out / "cells_centernet.keras"
    model.save(keras_path)
    info.metrics = {"selection_score": round(best, 4), "epochs": epoch, "steps": step,
                    "train_minutes": round((time.time() - fit.t0) / 60, 1)}
    write_sidecar(keras_path, info)
    print(f"done: {epoch} epochs, {step} steps, {(time.time() - fit.t0) / 60:.1f} min, best score {best:.4f}; "
          f"model {keras_path}", flush=True)


def main(argv=None):
    args = get_args(argv)
    if args.thresholds:
        print(json.dumps(store_thresholds(Path(args.thresholds), Path(args.out), args.data, args.threads)))
        return
    if args.int8_offset:
        if not args.float_reference:
            raise SystemExit("--int8-offset needs --float-reference FP32_MODEL (the float file of the same network)")
        print(json.dumps(store_int8_offset(Path(args.int8_offset), Path(args.float_reference), args.data, args.threads)))
        return
    if args.share_settings:
        for path in share_settings(Path(args.share_settings), Path(args.out), args.stem):
            print(f"wrote {path}")
        return
    if args.export:
        export(args)
        return
    from edgecell.convert.training import start_tensorflow

    tf, keras = start_tensorflow(threads=args.threads, seed=args.seed)

    from edgecell.calibration import dataset_dir
    from edgecell.calibration.voc import CELL_CLASSES, load_split, missing_class
    from edgecell.evaluation.detection import map50
    from edgecell.images import decode_image
    from edgecell.modelinfo import ModelInfo, write_sidecar
    from edgecell.tasks import cells

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.labels == "txl":
        return train_complete(args, tf, keras, out)
    data_dir = dataset_dir("cbc_bccd_cleaned", args.data)
    anns = load_split(data_dir, "Training")
    empty_rbc = set(missing_class(anns, "RBC"))
    usable = [a for a in anns if a.stem not in empty_rbc]
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(usable))
    hold = sorted(usable[i].stem for i in perm[: args.holdout])
    train = [a for a in usable if a.stem not in set(hold)]
    holdout = [a for a in usable if a.stem in set(hold)]
    split = {"train": [a.stem for a in train], "holdout": hold, "excluded_no_rbc_boxes": sorted(empty_rbc),
             "dropped_boxes": {a.stem: a.dropped for a in anns if a.dropped}}
    (out / "split.json").write_text(json.dumps(split, indent=1))
    print(f"data {data_dir}: {len(train)} train, {len(holdout)} hold-out, {len(empty_rbc)} excluded (no RBC boxes)", flush=True)

    in_w, in_h = args.input
    if args.arch == "centernet":
        info, model, targets, loss_fn = _centernet_setup(args, keras)
    else:
        info, model, targets, loss_fn = _tiny_yolo_setup(args, train)
    grey = args.grey if args.grey is not None else (0.1 if args.arch == "centernet" else 0.0)

    def load(a):
        return decode_image(a.image_path), a.boxes.copy(), a.labels.copy()

    train_data = [load(a) for a in train]
    hold_x, hold_b, hold_l, hold_ctx = [], [], [], []
    for a in holdout:
        img = decode_image(a.image_path)
        x, ctx = cells.preprocess(img, info)
        lb = ctx.letterbox
        hold_x.append(x[0]), hold_ctx.append(ctx)
        hold_b.append(a.boxes * lb.scale + np.array([lb.pad_x, lb.pad_y] * 2, np.float32)), hold_l.append(a.labels)
    hold_x = np.stack(hold_x)
    hold_t = targets(hold_b, hold_l)
    print(f"model: {model.count_params():,} parameters, output {tuple(model.output.shape[1:])}", flush=True)
    @tf.function(reduce_retracing=True)
    def predict(x):
        return model(x, training=False)

    def validate():
        preds, losses = [], []
        for i in range(0, len(hold_x), 10):
            p = predict(hold_x[i : i + 10])
            losses.append(float(loss_fn(p, *(t[i : i + 10] for t in hold_t))[0]) * len(p))
            for k, pk in enumerate(p.numpy()):
                b, c, s = cells.decode(pk[None], info, floor=0.01)
                keep = cells.nms_per_class(b, c, s)
                preds.append((b[keep], c[keep], s[keep]))
        m = map50(preds, list(zip(hold_b, hold_l)), CELL_CLASSES)
        vloss = sum(losses) / len(hold_x)
        line = f"val loss {vloss:.3f}  mAP@0.5 {m['map']:.4f}  AP " + " ".join(f"{k} {v:.3f}" for k, v in m["ap"].items())
        return m["map"], {"val_loss": vloss, "val_map50": m["map"], "val_ap": m["ap"]}, line

    batches = Batches(train_data, info, targets, args.batch, args.seed, args.mosaic, grey)
    fit = Fitter(tf, keras, model, loss_fn, args, batches)
    best_map, epoch, step = run_epochs(fit, model, args, out, validate)
    keras_path = out / f"cells_{args.arch.replace('-', '_')}.keras"
    model.save(keras_path)
    info.metrics = {"holdout_map50": round(best_map, 4), "epochs": epoch, "steps": step,
                    "train_minutes": round((time.time() - fit.t0) / 60, 1)}
    write_sidecar(keras_path, info)
    print(f"done: {epoch} epochs, {step} steps, {(time.time() - fit.t0) / 60:.1f} min, best hold-out mAP@0.5 {best_map:.4f}; "
          f"model {keras_path}", flush=True)


if __name__ == "__main__":
    main()
