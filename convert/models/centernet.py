"""A small anchor-free blood-cell detector: MobileNet V1 (alpha 0.25, ImageNet) + FPN to stride 8
+ a CenterNet head (Zhou et al. 2019, "Objects as Points").

Why this design: on a 2-core CPU the paper's Tiny-YOLOv2 trains slowly from scratch and predicts on a
stride-32 grid, too coarse for ~25 px platelets. A pre-trained MobileNet V1 0.25 costs ~0.1 GMAC at
416 x 320, a top-down merge of strides 32/16/8 gives one 52 x 40 output grid, and a centre heatmap
needs no anchors and no NMS tuning to place a small box well.

Output: ONE raw tensor N x H/8 x W/8 x (C + 4), channels
    0..C-1   centre heatmap logits per class (sigmoid in numpy)
    C, C+1   sub-cell centre offset x, y, scaled by OFFSET_SCALE (target = SCALE * frac)
    C+2, C+3 box size log(w / stride), log(h / stride), scaled by SIZE_SCALE
The regression targets are scaled up so that, in a single per-tensor INT8 output whose range is set
by the heatmap logits (about -12..+6), their quantization step is a small fraction of a pixel.
Only conv, depthwise conv, batch norm (folded at export), ReLU6, add and nearest upsampling: every
INT8 path (LiteRT full-integer, OpenVINO NNCF, ONNX QDQ) handles them.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from edgecell.tasks.cells import CENTERNET_OFFSET_SCALE as OFFSET_SCALE
from edgecell.tasks.cells import CENTERNET_SIZE_SCALE as SIZE_SCALE
from edgecell.tasks.cells import CENTERNET_STRIDE as STRIDE
HEAT_PRIOR = 0.05  # initial heatmap probability (CenterNet's bias trick, -log((1-p)/p))


def _sep(x, filters: int, name: str):
    """Depthwise 3x3 + pointwise 1x1, each with batch norm and ReLU6 (a MobileNet block)."""
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(name=f"{name}_pw_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_pw_relu")(x)


def _lateral(x, filters: int, name: str):
    x = layers.Conv2D(filters, 1, use_bias=False, name=name)(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu")(x)


def build_centernet(input_size: tuple[int, int] = (416, 320), num_classes: int = 3, alpha: float = 0.25,
                    width: int = 64, weights: str | None = None, name: str = "cells_centernet") -> keras.Model:
    """input_size is (width, height), multiples of 32. `weights`: the Keras ImageNet MobileNet V1 h5
    of the same alpha (include_top=False), or None for random initialisation."""
    w, h = input_size
    if w % 32 or h % 32:
        raise ValueError(f"input size {w}x{h}: both sides must be multiples of 32")
    base = keras.applications.MobileNet(input_shape=(h, w, 3), alpha=alpha, include_top=False, weights=None)
    if weights:
        base.load_weights(str(weights))
    c3 = base.get_layer("conv_pw_5_relu").output  # stride 8
    c4 = base.get_layer("conv_pw_11_relu").output  # stride 16
    c5 = base.get_layer("conv_pw_13_relu").output  # stride 32
    p5 = _lateral(c5, width, "lat5")
    p4 = layers.Add(name="add4")([layers.UpSampling2D(2, interpolation="nearest", name="up5")(p5),
                                  _lateral(c4, width, "lat4")])
    p4 = _sep(p4, width, "fpn4")
    p3 = layers.Add(name="add3")([layers.UpSampling2D(2, interpolation="nearest", name="up4")(p4),
                                  _lateral(c3, width, "lat3")])
    x = _sep(p3, width, "fpn3")
    x = _sep(x, width, "head1")
    x = _sep(x, width, "head2")
    out = layers.Conv2D(num_classes + 4, 1, name="head_out")(x)
    model = keras.Model(base.input, out, name=name)
    bias = np.zeros(num_classes + 4, np.float32)
    bias[:num_classes] = -np.log((1 - HEAT_PRIOR) / HEAT_PRIOR)
    bias[num_classes + 2 :] = SIZE_SCALE * np.log(40.0 / STRIDE)  # a typical cell, ~40 px
    bias[num_classes : num_classes + 2] = OFFSET_SCALE * 0.5
    layer = model.get_layer("head_out")
    layer.set_weights([layer.get_weights()[0] * 0.1, bias])
    return model
