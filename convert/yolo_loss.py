"""YOLOv2 loss (Redmon & Farhadi 2017) for the raw grid output of `build_tiny_yolo`.

Targets are built in numpy (`build_targets`): each ground-truth box goes to the grid cell that
holds its centre and to the free anchor with the best shape IoU. Loss terms, summed over the
grid and averaged over the batch:
  coordinates  (sigmoid(tx) - x)^2 + (tw - log(w / anchor_w))^2, weighted 2 - w*h/(W*H)
  objectness   binary cross-entropy; target 1 for responsible anchors, 0 for the others except
               those whose predicted box already overlaps a ground truth by IoU > ignore_iou
  class        softmax cross-entropy for responsible anchors
(YOLOv2 used squared errors for objectness and classes; cross-entropy trains faster and the
decoded score sigmoid(obj) * softmax(class) is the same quantity.)
"""

from __future__ import annotations

import numpy as np

Y_CHANNELS = 7  # tx, ty, tw, th, mask, class, coordinate weight


def build_targets(boxes_list: list[np.ndarray], labels_list: list[np.ndarray], anchors: np.ndarray,
                  input_size: tuple[int, int], grid: tuple[int, int], max_boxes: int = 96
                  ) -> tuple[np.ndarray, np.ndarray]:
    """boxes in model-input pixels (x1, y1, x2, y2). Returns y_true (B, Gh, Gw, A, 7) and
    gt (B, max_boxes, 4) padded with zeros."""
    anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
    gw, gh = grid
    in_w, in_h = input_size
    sx, sy = in_w / gw, in_h / gh
    na = len(anchors)
    y = np.zeros((len(boxes_list), gh, gw, na, Y_CHANNELS), np.float32)
    gt = np.zeros((len(boxes_list), max_boxes, 4), np.float32)
    for b, (boxes, labels) in enumerate(zip(boxes_list, labels_list)):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)[:max_boxes]
        gt[b, : len(boxes)] = boxes
        for (x1, y1, x2, y2), c in zip(boxes, labels):
            w, h = x2 - x1, y2 - y1
            if w <= 1 or h <= 1:
                continue
            cx, cy = (x1 + x2) / 2 / sx, (y1 + y2) / 2 / sy
            i, j = min(int(cx), gw - 1), min(int(cy), gh - 1)
            inter = np.minimum(w, anchors[:, 0]) * np.minimum(h, anchors[:, 1])
            ious = inter / (w * h + anchors[:, 0] * anchors[:, 1] - inter)
            for a in np.argsort(-ious):
                if y[b, j, i, a, 4] == 0:
                    break
            else:
                continue
            y[b, j, i, a] = (cx - i, cy - j, np.log(w / anchors[a, 0]), np.log(h / anchors[a, 1]), 1.0, c,
                             2.0 - (w * h) / (in_w * in_h))
    return y, gt


def make_loss(anchors: np.ndarray, input_size: tuple[int, int], grid: tuple[int, int], num_classes: int,
              ignore_iou: float = 0.6, l_coord: float = 1.0, l_obj: float = 1.0, l_noobj: float = 1.0,
              l_cls: float = 1.0):
    """A TF function loss(y_pred, y_true, gt) -> (total, parts dict)."""
    import tensorflow as tf

    anchors = np.asarray(anchors, np.float32).reshape(-1, 2)
    na = len(anchors)
    gw, gh = grid
    in_w, in_h = input_size
    stride = np.array([in_w / gw, in_h / gh], np.float32)
    gx, gy = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))
    offsets = tf.constant(np.stack([gx, gy], -1)[:, :, None, :])  # Gh, Gw, 1, 2
    anchors_t = tf.constant(anchors)

    def loss(y_pred, y_true, gt):
        p = tf.reshape(y_pred, (-1, gh, gw, na, 5 + num_classes))
        batch = tf.cast(tf.shape(p)[0], tf.float32)
        mask = y_true[..., 4]
        wscale = y_true[..., 6]
        txy = tf.sigmoid(p[..., 0:2])
        twh = p[..., 2:4]
        coord = mask * wscale * (tf.reduce_sum(tf.square(txy - y_true[..., 0:2]), -1)
                                 + tf.reduce_sum(tf.square(twh - y_true[..., 2:4]), -1))
        # predicted boxes in input pixels, for the ignore mask
        cxy = (txy + offsets) * stride
        wh = anchors_t * tf.exp(tf.clip_by_value(twh, -8.0, 6.0))
        pb = tf.concat([cxy - wh / 2, cxy + wh / 2], -1)
        pb = tf.reshape(pb, (-1, gh * gw * na, 1, 4))
        g = gt[:, None, :, :]
        lt = tf.maximum(pb[..., :2], g[..., :2])
        rb = tf.minimum(pb[..., 2:], g[..., 2:])
        inter = tf.reduce_prod(tf.maximum(rb - lt, 0.0), -1)
        area_p = tf.reduce_prod(pb[..., 2:] - pb[..., :2], -1)
        area_g = tf.reduce_prod(g[..., 2:] - g[..., :2], -1)
        iou = inter / tf.maximum(area_p + area_g - inter, 1e-6)
        best = tf.reshape(tf.reduce_max(iou, -1), (-1, gh, gw, na))
        ignore = tf.cast(best > ignore_iou, tf.float32)
        logit = p[..., 4]
        obj = mask * tf.nn.sigmoid_cross_entropy_with_logits(tf.ones_like(logit), logit)
        noobj = (1.0 - mask) * (1.0 - ignore) * tf.nn.sigmoid_cross_entropy_with_logits(tf.zeros_like(logit), logit)
        cls = mask * tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y_true[..., 5], tf.int32), p[..., 5:])
        parts = {
            "coord": l_coord * tf.reduce_sum(coord) / batch,
            "obj": l_obj * tf.reduce_sum(obj) / batch,
            "noobj": l_noobj * tf.reduce_sum(noobj) / batch,
            "cls": l_cls * tf.reduce_sum(cls) / batch,
        }
        return tf.add_n(list(parts.values())), parts

    return loss
