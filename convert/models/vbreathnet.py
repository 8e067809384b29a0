"""V-BreathNet (Nagullas et al., "A Deep Look Into - Automated Lung X-Ray Abnormality Detection
System"): a small CNN for Normal / COVID-19 / viral pneumonia chest X-rays, 792,291 parameters.

The paper gives the block pattern (conv -> batch norm -> max-pool -> dropout), dense 512, softmax 3
and the parameter count, not the filters. The configuration here reproduces the count exactly
(derived from it, see shared/seeds/README.md): six blocks of 3x3 conv (bias, ReLU, "same" padding)
+ batch norm + 2x2 max-pool + dropout with 128, 64, 32, 64, 128, 64 filters on a 256x256x3 input,
flatten of the 4x4x64 map (1,024 values), dense 512 (ReLU) + batch norm + dropout, dense 3 +
softmax.

For Grad-CAM on the device, `build_vbreathnet(..., with_features=True)` (the exported model) has
two outputs: the class scores and the last convolutional feature map (8x8x64, the last block's
batch-norm output, before its max-pool). The runtime computes the Grad-CAM weights in numpy from
that map and the dense head's weights (`head_weights`), see `edgecell.tasks.xray`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

FILTERS = (128, 64, 32, 64, 128, 64)
INPUT_SIZE = 256
PAPER_PARAMETERS = 792_291
LABELS = ("COVID-19", "Normal", "Viral Pneumonia")

# layer names the runtime and the tests rely on
FEATURE_LAYER = "block6_bn"  # last conv feature map (8x8x64 at 256 input)
DENSE_LAYER = "dense512"
DENSE_BN_LAYER = "dense512_bn"
LOGITS_LAYER = "logits"
SCORES_LAYER = "scores"


def build_vbreathnet(input_size: int = INPUT_SIZE, channels: int = 3, classes: int = 3, *,
                     filters: Sequence[int] = FILTERS, dense: int = 512, conv_dropout: float = 0.1,
                     dense_dropout: float = 0.4, with_features: bool = False, name: str = "vbreathnet"):
    """The Keras model. Output "scores" (softmax); with `with_features`, also "features" (the last
    conv feature map), as [scores, features]."""
    import keras
    from keras import layers

    inp = keras.Input((input_size, input_size, channels), name="image")
    x = inp
    feature = None
    for i, f in enumerate(filters, start=1):
        x = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"block{i}_conv")(x)
        x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        feature = x
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
        x = layers.Dropout(conv_dropout, name=f"block{i}_drop")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense, activation="relu", name=DENSE_LAYER)(x)
    x = layers.BatchNormalization(name=DENSE_BN_LAYER)(x)
    x = layers.Dropout(dense_dropout, name="dense512_drop")(x)
    logits = layers.Dense(classes, name=LOGITS_LAYER)(x)
    scores = layers.Activation("softmax", name=SCORES_LAYER)(logits)
    outputs = [scores, feature] if with_features else scores
    return keras.Model(inp, outputs, name=name)


def feature_layer(model) -> str:
    """Name of the last conv block's batch norm (FEATURE_LAYER for the paper's six blocks)."""
    names = [l.name for l in model.layers if l.name.startswith("block") and l.name.endswith("_bn")]
    return names[-1]


def with_feature_output(model):
    """The same trained layers as a two-output model [scores, last conv feature map] (shares the
    weights; nothing is copied). Used for export and for TensorFlow Grad-CAM."""
    import keras

    return keras.Model(model.inputs, [model.get_layer(SCORES_LAYER).output, model.get_layer(feature_layer(model)).output],
                       name=model.name + "_cam")


def with_logits_output(model):
    """[logits, last conv feature map]: the reference for Grad-CAM with tf.GradientTape."""
    import keras

    return keras.Model(model.inputs, [model.get_layer(LOGITS_LAYER).output, model.get_layer(feature_layer(model)).output],
                       name=model.name + "_logits")


def head_weights(model) -> dict[str, np.ndarray]:
    """The dense head after the feature map as plain float32 arrays (what the device needs for
    Grad-CAM in numpy): pool size, dense 512 (w1, b1), its batch norm folded to scale/shift
    (y = h * bn_scale + bn_shift), dense 3 (w2, b2)."""
    d1 = model.get_layer(DENSE_LAYER)
    bn = model.get_layer(DENSE_BN_LAYER)
    d2 = model.get_layer(LOGITS_LAYER)
    w1, b1 = (np.asarray(w, np.float32) for w in d1.get_weights())
    gamma, beta, mean, var = (np.asarray(w, np.float32) for w in bn.get_weights())
    scale = gamma / np.sqrt(var + np.float32(bn.epsilon))
    w2, b2 = (np.asarray(w, np.float32) for w in d2.get_weights())
    return {"w1": w1, "b1": b1, "bn_scale": scale.astype(np.float32),
            "bn_shift": (beta - mean * scale).astype(np.float32), "w2": w2, "b2": b2,
            "pool": np.asarray(2, np.int32)}
