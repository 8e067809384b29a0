"""CenterNet targets and loss (Zhou et al. 2019) for `build_centernet`'s single output tensor.

Targets (numpy, built in the data thread): per class a Gaussian heatmap peaking at 1 in the cell
holding each box centre (elliptical, sigma = 0.54 * box side / 6 as in TTFNet, so a long box gets a
long peak); at that cell the sub-cell offset and log(size / stride) of the box.
Loss: the penalty-reduced pixel focal loss (alpha 2, beta 4) on the heatmap + L1 on offset and
log size at centre cells, all normalised by the number of objects.
"""

from __future__ import annotations

import numpy as np

from edgecell.tasks.cells import CENTERNET_OFFSET_SCALE as OFFSET_SCALE
from edgecell.tasks.cells import CENTERNET_SIZE_SCALE as SIZE_SCALE
from edgecell.tasks.cells import CENTERNET_STRIDE as STRIDE

SIGMA_FACTOR = 0.54 / 6


def build_heat_targets(boxes_list: list[np.ndarray], labels_list: list[np.ndarray], num_classes: int,
                       input_size: tuple[int, int], stride: int = STRIDE,
                       weights_list: list[np.ndarray] | None = None) -> np.ndarray:
    """boxes in model-input pixels (x1, y1, x2, y2). Returns y (B, H/s, W/s, C + 5): heatmap C,
    offset x/y and log size w/h (scaled like the model output), centre mask.

    `weights_list` (one per image, 2C + 1 values: positive weight per class, negative weight per
    class, size weight) appends those 2C + 1 channels, constant over the image: a class whose
    labels an image lacks gets weight 0 (its cells are neither taught as cells nor as background),
    a class labelled only in part keeps its positives and drops its negatives, and point-only
    labels (no true box size) drop the size loss."""
    in_w, in_h = input_size
    gw, gh = in_w // stride, in_h // stride
    c = num_classes
    extra = 0 if weights_list is None else 2 * c + 1
    y = np.zeros((len(boxes_list), gh, gw, c + 5 + extra), np.float32)
    if weights_list is not None:
        y[..., c + 5 :] = np.asarray(weights_list, np.float32)[:, None, None, :]
    ys, xs = np.arange(gh, dtype=np.float32)[:, None], np.arange(gw, dtype=np.float32)[None, :]
    for b, (boxes, labels) in enumerate(zip(boxes_list, labels_list)):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        # small boxes last, so where two centres share a cell the small one keeps its size target
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        for (x1, y1, x2, y2), k in zip(boxes[order], np.asarray(labels)[order]):
            w, h = x2 - x1, y2 - y1
            if w <= 1 or h <= 1:
                continue
            cx, cy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
            ix, iy = int(np.clip(cx, 0, gw - 1)), int(np.clip(cy, 0, gh - 1))
            sx, sy = max(SIGMA_FACTOR * w / stride, 0.35), max(SIGMA_FACTOR * h / stride, 0.35)
            g = np.exp(-((xs - ix) ** 2) / (2 * sx * sx) - ((ys - iy) ** 2) / (2 * sy * sy))
            np.maximum(y[b, :, :, k], g, out=y[b, :, :, k])
            y[b, iy, ix, k] = 1.0
            y[b, iy, ix, c : c + 5] = (OFFSET_SCALE * (cx - ix), OFFSET_SCALE * (cy - iy),
                                       SIZE_SCALE * np.log(w / stride), SIZE_SCALE * np.log(h / stride), 1.0)
    return y


def make_centernet_loss(num_classes: int):
    """loss(pred, y) -> (total, {"heat", "offset", "size"}), TensorFlow."""
    import tensorflow as tf

    c = num_classes

    def loss(pred, y):
        logits = tf.cast(pred[..., :c], tf.float32)
        heat = y[..., :c]
        pos = tf.cast(tf.equal(heat, 1.0), tf.float32)
        if y.shape[-1] > c + 5:  # per-image weights (build_heat_targets' weights_list)
            pos_w, neg_w, size_w = y[..., c + 5 : 2 * c + 5], y[..., 2 * c + 5 : 3 * c + 5], y[..., 3 * c + 5 :]
        else:
            pos_w = neg_w = size_w = 1.0
        p = tf.sigmoid(logits)
        log_p, log_1mp = tf.math.log_sigmoid(logits), tf.math.log_sigmoid(-logits)
        pos_loss = -tf.reduce_sum(pos_w * pos * tf.square(1 - p) * log_p)
        neg_loss = -tf.reduce_sum(neg_w * (1 - pos) * tf.pow(1 - heat, 4) * tf.square(p) * log_1mp)
        mask = y[..., c + 4 : c + 5]
        n = tf.maximum(tf.reduce_sum(mask), 1.0)
        off = tf.reduce_sum(mask * tf.abs(pred[..., c : c + 2] - y[..., c : c + 2])) / OFFSET_SCALE
        size = tf.reduce_sum(size_w * mask * tf.abs(pred[..., c + 2 : c + 4] - y[..., c + 2 : c + 4])) / SIZE_SCALE
        parts = {"heat": (pos_loss + neg_loss) / n, "offset": off / n, "size": size / n}
        return parts["heat"] + parts["offset"] + parts["size"], parts

    return loss
