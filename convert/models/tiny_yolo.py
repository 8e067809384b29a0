"""Tiny-YOLOv2 in Keras, as used by Alam & Islam (2019) for blood cells.

Nine convolutions: eight 3x3 conv + batch norm + LeakyReLU(0.1) (16, 32, 64, 128, 256, 512,
1024, 1024 filters times `width`) with five 2x2 stride-2 max pools and one 2x2 stride-1 max
pool, then a 1x1 convolution with bias to num_anchors * (5 + num_classes) filters (5 x 8 = 40
for 3 classes). The output is the raw convolution, N x H/32 x W/32 x 40; decoding (sigmoid,
exp, anchors) happens in `edgecell.tasks.cells`, so every backend sees the same plain graph.
"""

from __future__ import annotations

import keras
from keras import layers

BASE_FILTERS = (16, 32, 64, 128, 256, 512, 1024, 1024)


def build_tiny_yolo(input_size: tuple[int, int] = (416, 320), num_classes: int = 3, num_anchors: int = 5,
                    width: float = 1.0, name: str = "tiny_yolov2") -> keras.Model:
    """input_size is (width, height), both multiples of 32. Batch 1 fixed shape is set at export."""
    w, h = input_size
    if w % 32 or h % 32:
        raise ValueError(f"input size {w}x{h}: both sides must be multiples of 32")
    inputs = keras.Input((h, w, 3), name="image")
    x = inputs
    for i, f in enumerate(BASE_FILTERS):
        f = max(8, int(round(f * width)))
        x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = layers.BatchNormalization(momentum=0.97, epsilon=1e-3, name=f"bn{i + 1}")(x)
        x = layers.LeakyReLU(negative_slope=0.1, name=f"leaky{i + 1}")(x)
        if i < 5:
            x = layers.MaxPooling2D(2, 2, name=f"pool{i + 1}")(x)
        elif i == 5:
            x = layers.MaxPooling2D(2, 1, padding="same", name=f"pool{i + 1}")(x)
    out = layers.Conv2D(num_anchors * (5 + num_classes), 1, padding="same", name="conv9",
                        bias_initializer="zeros")(x)
    return keras.Model(inputs, out, name=name)
