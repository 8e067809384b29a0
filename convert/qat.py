"""Quantization-aware fine-tuning (QAT) for ReLU6 chain models (MobileNet V1) without
tensorflow-model-optimization, which does not support Keras 3.

Why: full-integer INT8 of the products MobileNet V1 lost 2 points of top-1 on every backend
with the same 8-bit grid (the loss is the model's, not one backend's). QAT lets the trained
layers learn around the rounding the INT8 file will do:

1. Fold every BatchNorm (inference statistics) into the conv before it - what every INT8
   converter does anyway - so the weights trained are the weights quantized.
2. Fine-tune a copy in which every conv kernel is fake-quantized per output channel,
   symmetric, 8 bits, range [-127, 127] x max|w| / 127 (TFLite's, ONNX Runtime's and NNCF's
   per-channel weight grid), and every ReLU6 output is fake-quantized on 256 steps of 6/255
   (the int8 grid all three calibrators give a ReLU6 that saturates at 6, as every one of this
   model's does). Straight-through gradients (round's gradient taken as 1).
3. Write a plain Keras model (Conv2D/DepthwiseConv2D with bias, ReLU(6), same layer names),
   kernels snapped to their int8 grid, which the shared converter exports as usual.

The paper's frozen boundary is kept by default: only the layers from `trainable_from`
(conv_dw_12 = the last 2 blocks) and the head are fine-tuned; the frozen layers' rounding is
simulated in the forward pass so the trained layers can compensate for it.

`--weight-levels 64` trains for ONNX Runtime's 7-bit `reduce_range` grid instead (the converter's
default for x86 CPUs without VNNI, which cost the 8-bit QAT model 2-5 points); one model per grid.

    python -m edgecell.convert.qat --model OUT_V1/products_v1.keras --out OUT_QAT --epochs 15 --lr 1e-5
    python -m edgecell.convert.products --arch v1 --out OUT_QAT --skip-train --nofix-variants
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgecell.errors import EdgecellError, script_main

WEIGHT_LEVELS = 127  # symmetric narrow-range int8 weights: [-127, 127]
RELU6_STEP = 6.0 / 255.0  # int8 grid of a [0, 6] activation (zero point -128)


@dataclasses.dataclass
class QatSettings:
    """Fine-tuning settings; recorded in OUT/products_v1_train.json."""

    epochs: int = 15
    lr: float = 1e-5
    batch: int = 32
    minutes: float = 10.0
    patience: int = 6
    trainable_from: str = "conv_dw_12"
    seed: int = 1234
    augment: bool = True
    distil: float = 0.0  # weight of KL(float model || QAT model) in the loss (0 = labels only)
    temperature: float = 1.0
    weight_levels: int = WEIGHT_LEVELS  # 127 = 8-bit grid; 64 = ORT's 7-bit reduce_range grid (AVX2 files)


def quantize_kernel_np(kernel: np.ndarray, depthwise: bool, levels: int = WEIGHT_LEVELS) -> np.ndarray:
    """Per-channel symmetric int8 rounding of a conv kernel (numpy): what the converters will do.
    `levels` 64 is ONNX Runtime's 7-bit `reduce_range` grid ([-64, 64] x max|w| / 64)."""
    axes = (0, 1, 3) if depthwise else (0, 1, 2)
    scale = np.max(np.abs(kernel), axis=axes, keepdims=True) / levels
    scale = np.where(scale == 0, 1.0, scale)
    return (np.clip(np.round(kernel / scale), -levels, levels) * scale).astype(np.float32)


def _layers(keras, levels: int = WEIGHT_LEVELS):
    """The two QAT layer classes (built on demand: keras is a heavy import)."""
    ops = keras.ops

    def fake_quant_kernel(kernel, depthwise: bool):
        axes = (0, 1, 3) if depthwise else (0, 1, 2)
        scale = ops.max(ops.abs(kernel), axis=axes, keepdims=True) / levels
        scale = ops.maximum(ops.stop_gradient(scale), 1e-12)
        q = ops.clip(ops.round(kernel / scale), -levels, levels) * scale
        return kernel + ops.stop_gradient(q - kernel)  # straight-through

    class QuantConv(keras.layers.Layer):
        """Conv2D or DepthwiseConv2D with bias (BN folded), kernel fake-quantized per channel."""

        def __init__(self, kind: str, kernel_shape, strides, padding: str, **kw):
            super().__init__(**kw)
            self.kind, self.kernel_shape, self.strides, self.padding = kind, tuple(kernel_shape), strides, padding

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=self.kernel_shape, name="kernel")
            channels = self.kernel_shape[2] * self.kernel_shape[3] if self.kind == "depthwise" else self.kernel_shape[3]
            self.bias = self.add_weight(shape=(channels,), name="bias", initializer="zeros")

        def call(self, x):
            k = fake_quant_kernel(self.kernel, self.kind == "depthwise")
            if self.kind == "depthwise":
                y = ops.depthwise_conv(x, k, strides=self.strides, padding=self.padding)
            else:
                y = ops.conv(x, k, strides=self.strides, padding=self.padding)
            return y + self.bias

    class QuantReLU6(keras.layers.Layer):
        """ReLU6, output rounded to the int8 grid of [0, 6] (straight-through gradient)."""

        def call(self, x):
            y = ops.clip(x, 0.0, 6.0)
            return y + ops.stop_gradient(ops.round(y / RELU6_STEP) * RELU6_STEP - y)

    return QuantConv, QuantReLU6


def fold_chain(model, *, fake_quant: bool, trainable_from: str = "", name: str | None = None,
               weight_levels: int = WEIGHT_LEVELS):
    """Rebuild a chain model (each layer feeds the next: MobileNet V1 + head) with every
    Conv/DepthwiseConv + BatchNormalization pair folded into one conv with bias.

    fake_quant=True gives the QAT model (QuantConv, QuantReLU6); False the plain Keras model
    to export. Layer names are kept (a folded conv keeps the conv's name). Layers before
    `trainable_from` are frozen ('' = all trainable)."""
    import keras

    QuantConv, QuantReLU6 = _layers(keras, weight_levels)
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    for prev, layer in zip([None] + layers[:-1], layers):
        src = layer.input if prev is None else prev.output
        if layer.input is not src and prev is not None:
            raise EdgecellError(f"{model.name}: not a chain model at layer {layer.name} (QAT folds chains only)")
    first = model.layers[0]
    inp = keras.Input(model.input_shape[1:], name=first.name if isinstance(first, keras.layers.InputLayer) else "image")
    x = inp
    frozen = bool(trainable_from)
    i = 0
    while i < len(layers):
        layer = layers[i]
        if trainable_from and layer.name == trainable_from:
            frozen = False
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        is_conv = isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
        if is_conv:
            depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
            kernel = np.asarray(layer.kernel.numpy(), np.float32)
            bias = np.asarray(layer.bias.numpy(), np.float32) if layer.use_bias else np.zeros(
                kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[3], np.float32)
            step = 1
            if isinstance(nxt, keras.layers.BatchNormalization):
                gamma, beta, mean, var = (np.asarray(w, np.float32) for w in nxt.get_weights())
                mult = gamma / np.sqrt(var + nxt.epsilon)
                if depthwise:  # kernel (kh, kw, in, depth_multiplier); channel = in * dm
                    kernel = kernel * mult.reshape(1, 1, kernel.shape[2], kernel.shape[3])
                else:
                    kernel = kernel * mult
                bias = (bias - mean) * mult + beta
                step = 2
            if fake_quant:
                new = QuantConv("depthwise" if depthwise else "conv", kernel.shape, layer.strides,
                                layer.padding, name=layer.name)
            elif depthwise:
                new = keras.layers.DepthwiseConv2D(layer.kernel_size, strides=layer.strides, padding=layer.padding,
                                                   depth_multiplier=layer.depth_multiplier, use_bias=True,
                                                   name=layer.name)
            else:
                new = keras.layers.Conv2D(layer.filters, layer.kernel_size, strides=layer.strides,
                                          padding=layer.padding, use_bias=True, name=layer.name)
            x = new(x)
            new.set_weights([kernel, bias])
            i += step
        elif isinstance(layer, keras.layers.ReLU) and fake_quant:
            if layer.max_value != 6.0 or layer.negative_slope or layer.threshold:
                raise EdgecellError(f"{layer.name}: QAT handles ReLU6 only")
            new = QuantReLU6(name=layer.name)
            x = new(x)
            i += 1
        elif isinstance(layer, keras.layers.BatchNormalization):
            raise EdgecellError(f"{layer.name}: a BatchNormalization not after a conv cannot be folded")
        else:
            new = layer.__class__.from_config(layer.get_config())
            x = new(x)
            if layer.get_weights():
                new.set_weights(layer.get_weights())
            i += 1
        new.trainable = not frozen
    return keras.Model(inp, x, name=name or model.name)


def copy_weights(src, dst, *, snap: bool = True, levels: int = WEIGHT_LEVELS) -> None:
    """QAT model -> plain folded model (same layer names); conv kernels snapped to their int8
    grid so that every converter's per-channel quantizer reproduces them exactly."""
    import keras

    for layer in dst.layers:
        if not layer.weights:
            continue
        weights = [np.asarray(w) for w in src.get_layer(layer.name).get_weights()]
        if snap and isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            weights[0] = quantize_kernel_np(weights[0], isinstance(layer, keras.layers.DepthwiseConv2D), levels)
        layer.set_weights(weights)


def qat_pair(float_model, settings: QatSettings):
    """(QAT model to fine-tune, plain folded model to export) of a trained float chain model;
    shared by the products model (`finetune`) and the utility gates (`train_gate --qat-from`).
    After fitting, `copy_weights(qat, plain, levels=settings.weight_levels)` gives the export."""
    qat = fold_chain(float_model, fake_quant=True, trainable_from=settings.trainable_from,
                     name=f"{float_model.name}_qat", weight_levels=settings.weight_levels)
    return qat, fold_chain(float_model, fake_quant=False)


def finetune(model_path: Path, out: Path, settings: QatSettings, *, data: str | None = None,
             threads: int = 1, val_split: float = 0.2) -> dict:
    """QAT fine-tuning of a trained products V1 model; writes OUT/products_v1.keras (plain,
    folded, snapped) and OUT/products_v1_train.json so `products --skip-train` exports it."""
    from edgecell.calibration import dataset_dir
    from edgecell.calibration.folders import list_split, stratified_split
    from edgecell.convert import products as P
    from edgecell.convert.training import start_tensorflow

    tf, keras = start_tensorflow(threads=threads, seed=settings.seed)
    out.mkdir(parents=True, exist_ok=True)
    float_model = keras.models.load_model(model_path, compile=False)
    size = int(float_model.input_shape[1])
    info = P.model_info("v1", size)
    samples = list_split(dataset_dir(P.DATASET, data), "train", P.FOLDERS)
    fit, hold = stratified_split(samples, val_split, seed=settings.seed)
    x_fit, y_fit = P.load_tensors(fit, info)
    x_hold, y_hold = P.load_tensors(hold, info)
    n = len(P.LABELS)
    y_hold1 = keras.utils.to_categorical(y_hold, n)

    qat, plain = qat_pair(float_model, settings)
    float_acc = float(np.mean(np.argmax(float_model.predict(x_hold, verbose=0, batch_size=64), 1) == y_hold))
    fold_acc = float(np.mean(np.argmax(plain.predict(x_hold, verbose=0, batch_size=64), 1) == y_hold))
    before = float(np.mean(np.argmax(qat.predict(x_hold, verbose=0, batch_size=64), 1) == y_hold))
    print(f"holdout: float {float_acc:.4f}, folded {fold_acc:.4f}, fake-quant before QAT {before:.4f}", flush=True)

    opt = keras.optimizers.Adam(settings.lr)
    train_model = qat
    if settings.distil:  # self-distillation: the quantized model learns to agree with its float self
        train_model = P.distillation_model(keras, qat, float_model)
        train_model.compile(optimizer=opt, loss=P.make_distillation_loss(n, settings.distil, settings.temperature),
                            metrics=[P.make_student_accuracy(n)])
    else:
        qat.compile(optimizer=opt, loss="categorical_crossentropy", metrics=["accuracy"])
    ds = P.train_dataset(tf, x_fit, y_fit, settings.batch, settings.seed, n, augment=settings.augment)
    callbacks, _, _ = P._callbacks(keras, settings.minutes, settings.patience, out / "products_v1_qat_history.csv")
    t0 = time.perf_counter()
    history = train_model.fit(ds, validation_data=(x_hold, y_hold1), epochs=settings.epochs,
                              callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
    minutes = (time.perf_counter() - t0) / 60
    after = float(np.mean(np.argmax(qat.predict(x_hold, verbose=0, batch_size=64), 1) == y_hold))
    copy_weights(qat, plain, snap=True, levels=settings.weight_levels)
    plain_acc = float(np.mean(np.argmax(plain.predict(x_hold, verbose=0, batch_size=64), 1) == y_hold))
    print(f"QAT {len(history.history['loss'])} epochs in {minutes:.1f} min: fake-quant holdout {after:.4f}; "
          f"exported float model (snapped kernels) {plain_acc:.4f}", flush=True)
    keras_path = out / "products_v1.keras"
    tmp_model = out / ".products_v1.tmp.keras"
    plain.save(tmp_model)
    tmp_model.replace(keras_path)
    summary = {"arch": "v1", "model": plain.name, "how": f"QAT fine-tuning of {model_path} (BN folded, per-channel "
               f"int8 weights and ReLU6 [0,6] int8 activations fake-quantized, straight-through)",
               "qat": dataclasses.asdict(settings), "source_holdout_accuracy": round(float_acc, 4),
               "fake_quant_holdout_before": round(before, 4), "fake_quant_holdout_after": round(after, 4),
               "holdout_accuracy": round(plain_acc, 4), "holdout_n": len(hold), "fit_n": len(fit), "size": size,
               "epochs_run": len(history.history["loss"]),
               "best_epoch": int(np.argmax(history.history["val_accuracy"])) + 1,
               "train_minutes": round(minutes, 2), "keras_path": str(keras_path),
               "command": " ".join([Path(sys.executable).name, "-m", "edgecell.convert.qat"] + sys.argv[1:])}
    tmp = out / ".products_v1_train.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(out / "products_v1_train.json")
    return summary


@script_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgecell.convert.qat", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="trained products V1 .keras (float)")
    p.add_argument("--out", required=True, help="output folder (outside the repo)")
    p.add_argument("--data", help="datasets folder (else $EDGECELL_DATA, ../shared/data)")
    d = QatSettings()
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--minutes", type=float, default=d.minutes)
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--trainable-from", default=d.trainable_from, help="first fine-tuned layer ('' = all)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--distil", type=float, default=d.distil, help="weight of KL(float || QAT) (0 = labels only)")
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--weight-levels", type=int, default=d.weight_levels,
                   help="127: int8 weight grid; 64: the 7-bit grid of ORT reduce_range (AVX2 without VNNI)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    settings = QatSettings(epochs=a.epochs, lr=a.lr, batch=a.batch, minutes=a.minutes, patience=a.patience,
                           trainable_from=a.trainable_from, seed=a.seed, augment=not a.no_augment,
                           distil=a.distil, temperature=a.temperature, weight_levels=a.weight_levels)
    if not Path(a.model).is_file():
        raise EdgecellError(f"{a.model}: no such model file")
    finetune(Path(a.model), Path(a.out), settings, data=a.data, threads=a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
