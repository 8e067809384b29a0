"""Blood-cell counting (RBC, WBC, platelets) with a single-tensor detector: the paper's YOLOv2
(anchors, stride 32) or an anchor-free CenterNet head (stride 8); the sidecar's `head` says which.

Pipeline, one function each, shared by training, calibration, evaluation and the runtime:

    preprocess  letterbox to info.input_size, x = (pixel - mean) / std (default pixel / 255)
    decode      raw output -> boxes, classes, scores (numpy). "yolov2": N x H/32 x W/32 x A*(5+C);
                "centernet": N x H/s x W/s x (C + 4), a 3 x 3 local maximum on the class heatmap
                logits (cv2.dilate), offset and log size regressed at the peak
    postprocess per-class confidence thresholds, per-class NMS, platelet double-count removal
                (Alam & Islam 2019: nearest platelet by centre distance; drop when IoU > 0.10),
                counts per class
    annotate    circles (centre and radius from the box) coloured by class, counts in a corner
    infer       N x N overlapping tiles for smears much larger than the model input; detections
                are kept only in the tile whose core holds their centre, then merged by NMS, so a
                cell on a seam is counted once. Auto-scale (`auto_scale`): when the first pass's
                red cells are small in the model input (a lower magnification), the smear is
                counted again on 2 x 2 overlapping tiles, i.e. enlarged

Settings read from the model's sidecar (`info.settings`): `head` ("yolov2" when absent),
`anchors` (YOLOv2: A x 2, model-input pixels), `stride`, `offset_scale`, `size_scale` (CenterNet),
`interpolation` ("linear": one INTER_LINEAR resize straight into a reused canvas; absent: INTER_AREA
as the Tiny-YOLOv2 was trained), `thresholds` ({class: confidence}), `nms_iou`, `platelet_iou`,
`wbc_rules` ({"min_rbc_size", "max_inside"}: `plausible_wbc`), `auto_scale` ({"below_rbc_px",
"tiles", "overlap", "min_cells"}: `infer`), `platelet_stain` ({"min_relative_spread"}:
`stained_platelets`). A sidecar without the last three gets none of these steps.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edgecell.errors import ModelError
from edgecell.images import Letterbox, letterbox
from edgecell.modelinfo import ModelInfo
from edgecell.tasks.base import Task, TaskResult, check_label_count
from edgecell.tasks.boxes import box_iou, nms_per_class
from edgecell.tasks.common import normalise as normalise_pixels
from edgecell.tasks.familiarity import features_of, flag_unfamiliar, mahalanobis2  # noqa: F401 (the first and last re-exported)

TASK = "cells"
CLASSES = ("RBC", "WBC", "Platelets")
#: Paper defaults (Alam & Islam 2019, Table 1): chosen by minimum mean absolute count error.
DEFAULT_THRESHOLDS = {"RBC": 0.55, "WBC": 0.35, "Platelets": 0.25}
DEFAULT_NMS_IOU = 0.45
DEFAULT_PLATELET_IOU = 0.10
#: CenterNet head defaults (`edgecell.convert.models.centernet` builds with these; the sidecar stores them)
CENTERNET_STRIDE = 8
CENTERNET_OFFSET_SCALE = 8.0
CENTERNET_SIZE_SCALE = 4.0
HEADS = ("yolov2", "centernet")
#: the sidecar settings that turn the network's detections into counts: the product's counting
#: rules. One set serves every precision and format of a model (chosen once, on the shipped INT8
#: file), so that FP32 against INT8 measures quantization and nothing else
COUNTING_SETTINGS = ("thresholds", "nms_iou", "platelet_iou", "wbc_rules", "auto_scale", "platelet_stain")
#: circle colours (RGB) for the overlay
COLOURS = {"RBC": (220, 40, 40), "WBC": (40, 90, 230), "Platelets": (30, 170, 60)}


# --------------------------------------------------------------------------- model checks
def check_info(info: ModelInfo) -> None:
    """Refuse a model made for another task, with one line saying what was expected."""
    if info.task != TASK:
        raise ModelError(f"this model is a {info.task!r} model; the cells pipeline expects a 'cells' model "
                         f"(a detector with labels RBC, WBC, Platelets; see `edgecell info MODEL`)")
    head = head_of(info)
    if head not in HEADS:
        raise ModelError(f"cells model head {head!r} is not known to this edgecell; known heads: {', '.join(HEADS)}")
    if head == "yolov2" and not info.settings.get("anchors"):
        raise ModelError("cells model metadata has no 'anchors' setting; re-export it with edgecell.convert")


def head_of(info: ModelInfo) -> str:
    """The detector head named in the sidecar; models from before the CenterNet head are YOLOv2."""
    return str(info.settings.get("head", "yolov2"))


def counting_settings(info: ModelInfo) -> dict:
    """The model's counting rules (`COUNTING_SETTINGS` present in its sidecar): two files with the
    same rules count the same detections the same way."""
    return {k: info.settings[k] for k in COUNTING_SETTINGS if k in info.settings}


def labels_of(info: ModelInfo) -> list[str]:
    return list(info.labels) if info.labels else list(CLASSES)


def thresholds_of(info: ModelInfo, thresholds: Any = None) -> np.ndarray:
    """Per-class confidence thresholds: option (float, list or {name: value}) > model settings >
    paper defaults."""
    labels = labels_of(info)
    base = dict(DEFAULT_THRESHOLDS)
    base.update(info.settings.get("thresholds") or {})
    if thresholds is None:
        pass
    elif isinstance(thresholds, (int, float)):
        base = {c: float(thresholds) for c in labels}
    elif isinstance(thresholds, dict):
        unknown = set(thresholds) - set(labels)
        if unknown:
            raise ValueError(f"thresholds name unknown classes {sorted(unknown)}; classes are {labels}")
        base.update({k: float(v) for k, v in thresholds.items()})
    else:
        vals = list(thresholds)
        if len(vals) != len(labels):
            raise ValueError(f"expected {len(labels)} thresholds ({', '.join(labels)}), got {len(vals)}")
        base = dict(zip(labels, map(float, vals)))
    return np.array([base.get(c, 0.5) for c in labels], dtype=np.float32)


# --------------------------------------------------------------------------- pre-processing
@dataclass
class CellsContext:
    """What postprocess needs to map detections back to the image."""

    letterbox: Letterbox
    image_size: tuple[int, int]  # (width, height) of the original image
    image: np.ndarray | None = None  # kept for tiling; not serialised
    #: set by `infer` when it ran N x N tiles: their merged detections, already in image pixels
    tiled: "TiledDetections | None" = None
    #: set by `infer` when it decoded the one pass itself (auto-scale's size cue): boxes in
    #: model-input pixels, classes, scores, so postprocess does not decode twice
    decoded: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


@dataclass
class TiledDetections:
    """Detections merged from N x N tiles (image pixels): what `infer` hands `postprocess` for a
    tiled smear instead of one raw model output."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    tiles: int


def as_rgb(image: np.ndarray) -> np.ndarray:
    """H x W, H x W x 1 or H x W x 3/4 uint8 -> H x W x 3 uint8 (greyscale smears work)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return image


_canvases = threading.local()


def _reused_canvas(size: tuple[int, int], channels: int) -> np.ndarray:
    """A per-thread input canvas for `letterbox(..., canvas=)`: no allocation per frame. Callers
    consume it (normalise makes a new array) before the next call in the same thread."""
    width, height = size
    key = (height, width, channels)
    by_key = getattr(_canvases, "by_key", None)
    if by_key is None:
        by_key = _canvases.by_key = {}
    if key not in by_key:
        by_key[key] = np.empty(key, np.uint8)
    return by_key[key]


def normalise(canvas: np.ndarray, info: ModelInfo) -> np.ndarray:
    """uint8 H x W x C canvas -> 1 x H x W x C (or NCHW) model input, by the shared normalisation
    (float, or the int8 lookup table of a full-integer model); a new array, so the reused canvas
    may be overwritten afterwards."""
    x = normalise_pixels(canvas, info)[None]
    if info.layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def preprocess(image: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, CellsContext]:
    """RGB (or grey) uint8 image -> (float32 1 x H x W x 3 letterboxed input, context).

    The ONE pre-processing of the cells model: training, calibration, evaluation and the
    runtime all call this function."""
    image = as_rgb(image)
    if info.channels == 1:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        image = grey[:, :, None]
    size = tuple(info.input_size)
    if info.settings.get("interpolation") == "linear":  # one INTER_LINEAR resize into a reused canvas:
        # ~0.5 ms instead of ~3 ms (INTER_AREA + copy) for a 640x480 smear
        canvas, lb = letterbox(image, size, interpolation=cv2.INTER_LINEAR,
                               canvas=_reused_canvas(size, image.shape[2]))
    else:
        canvas, lb = letterbox(image, size)
    if canvas.ndim == 2:
        canvas = canvas[:, :, None]
    h, w = image.shape[:2]
    return normalise(canvas, info), CellsContext(lb, (w, h), image)


# --------------------------------------------------------------------------- decoding
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def grid_output(outputs: dict[str, np.ndarray] | np.ndarray, num_anchors: int, num_classes: int) -> np.ndarray:
    """The raw output as Gh x Gw x A x (5 + C) float32 (accepts NHWC or NCHW, batch 1)."""
    out = next(iter(outputs.values())) if isinstance(outputs, dict) else outputs
    out = np.asarray(out, dtype=np.float32)
    depth = num_anchors * (5 + num_classes)
    if out.ndim == 4:
        out = out[0]
    if out.ndim != 3:
        raise ModelError(f"cells model output has shape {out.shape}; expected 1 x H x W x {depth}")
    if out.shape[-1] != depth and out.shape[0] == depth:
        out = out.transpose(1, 2, 0)
    if out.shape[-1] != depth:
        raise ModelError(f"cells model output has {out.shape[-1]} channels; expected {num_anchors} anchors x "
                         f"(5 + {num_classes} classes) = {depth}")
    return out.reshape(out.shape[0], out.shape[1], num_anchors, 5 + num_classes)


def _empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)


def decode(outputs: dict[str, np.ndarray] | np.ndarray, info: ModelInfo, floor: float = 0.005
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw output -> boxes (N x 4, x1 y1 x2 y2 in model-input pixels), class indices, scores
    >= floor, with the decoder of the model's head."""
    if head_of(info) == "centernet":
        return decode_centernet(outputs, info, floor)
    return decode_yolov2(outputs, info, floor)


def centernet_output(outputs: dict[str, np.ndarray] | np.ndarray, num_classes: int) -> np.ndarray:
    """The raw CenterNet output as H x W x (C + 4) float32 (accepts NHWC or NCHW, batch 1). A model
    may have a second output (the pooled "features" of the unfamiliar-smear score): the map is
    the output with a spatial grid."""
    if isinstance(outputs, dict):
        maps = [v for v in outputs.values() if np.ndim(v) >= 3]
        out = maps[0] if maps else next(iter(outputs.values()))
    else:
        out = outputs
    out = np.asarray(out, dtype=np.float32)
    depth = num_classes + 4
    if out.ndim == 4:
        out = out[0]
    if out.ndim == 3 and out.shape[-1] != depth and out.shape[0] == depth:
        out = out.transpose(1, 2, 0)
    if out.ndim != 3 or out.shape[-1] != depth:
        raise ModelError(f"cells CenterNet output has shape {out.shape}; expected 1 x H x W x {depth} "
                         f"({num_classes} class heatmaps + offset x, y + size w, h)")
    return np.ascontiguousarray(out)


#: sidecar setting of an INT8 file: {class: logit} added to its heatmap before decoding
INT8_LOGIT_OFFSET = "int8_logit_offset"


def logit_offset(info: ModelInfo) -> np.ndarray | None:
    """The per-class heatmap logit offset of an INT8 file's sidecar (`int8_logit_offset`, classes
    not named get 0), or None where it has none (FP32 files, older INT8 files).

    Why: INT8 rounding lowers the platelet heatmap of the shipped counter by about 0.1 logit at the
    float model's peaks (a bias, the same on training smears of both subsets), so with one set of
    counting rules the INT8 file counted fewer platelets than the same network in float. The
    exporter measures the shift against the float model on unlabelled training smears
    (`edgecell.convert.train_cells --int8-offset`) and stores its negative here: the network bytes
    stay as they are, and every file sharing the sidecar (the .tflite and its OpenVINO / ONNX
    siblings) decodes FP32-like scores."""
    fix = info.settings.get(INT8_LOGIT_OFFSET)
    if not fix:
        return None
    labels = labels_of(info)
    unknown = set(fix) - set(labels)
    if unknown:
        raise ModelError(f"{info.name}: {INT8_LOGIT_OFFSET} names unknown classes {sorted(unknown)}; classes are {labels}")
    return np.array([float(fix.get(c, 0.0)) for c in labels], np.float32)


def decode_centernet(outputs: dict[str, np.ndarray] | np.ndarray, info: ModelInfo, floor: float = 0.005
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CenterNet decode: a cell is a detection when its heatmap logit is the maximum of its 3 x 3
    neighbourhood (cv2.dilate; logits, as sigmoid is monotonic) and sigmoid(logit) >= floor; the box
    centre is (cell + offset) * stride, its size stride * exp(log size). Plateaus (equal INT8
    neighbours) give duplicate peaks with near-identical boxes: per-class NMS removes them. An INT8
    file's `int8_logit_offset` (`logit_offset`) is added to its heatmap first."""
    labels = labels_of(info)
    c = len(labels)
    out = centernet_output(outputs, c)
    s = info.settings
    stride = float(s.get("stride", CENTERNET_STRIDE))
    off_s, size_s = float(s.get("offset_scale", CENTERNET_OFFSET_SCALE)), float(s.get("size_scale", CENTERNET_SIZE_SCALE))
    heat = np.ascontiguousarray(out[..., :c])
    shift = logit_offset(info)
    if shift is not None:
        heat = heat + shift
    kernel = np.ones((3, 3), np.uint8)
    if c <= 4:
        peak = cv2.dilate(heat, kernel).reshape(heat.shape)
    else:
        peak = np.stack([cv2.dilate(heat[..., k], kernel) for k in range(c)], -1)
    floor = min(max(float(floor), 1e-6), 1 - 1e-6)
    cand = (heat >= peak) & (heat >= np.float32(math.log(floor / (1 - floor))))
    flat = np.flatnonzero(cand)  # on the flat array: ~5x faster than a 3-D np.nonzero
    if flat.size == 0:
        return _empty()
    cell, cls = np.divmod(flat, c)
    gy, gx = np.divmod(cell, heat.shape[1])
    score = _sigmoid(heat[gy, gx, cls])
    reg = out[gy, gx, c:]
    cx = (gx + reg[:, 0] / off_s) * stride
    cy = (gy + reg[:, 1] / off_s) * stride
    bw = stride * np.exp(np.clip(reg[:, 2] / size_s, -4, 6))
    bh = stride * np.exp(np.clip(reg[:, 3] / size_s, -4, 6))
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
    return boxes, cls.astype(np.int64), score.astype(np.float32)


def decode_yolov2(outputs: dict[str, np.ndarray] | np.ndarray, info: ModelInfo, floor: float = 0.005
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLOv2 decode in numpy. Returns boxes (N x 4, x1 y1 x2 y2 in model-input pixels), class
    indices, scores = sigmoid(objectness) * softmax(class), keeping scores >= floor."""
    anchors = np.asarray(info.settings["anchors"], dtype=np.float32).reshape(-1, 2)
    labels = labels_of(info)
    g = grid_output(outputs, len(anchors), len(labels))
    gh, gw = g.shape[:2]
    in_w, in_h = info.input_size
    sx, sy = in_w / gw, in_h / gh
    obj = _sigmoid(g[..., 4])
    cand = obj >= floor  # score = obj * max prob <= obj: only these can pass the floor
    if not cand.any():
        return _empty()
    gy, gx, ga = np.nonzero(cand)
    t = g[gy, gx, ga]
    logits = t[:, 5:] - t[:, 5:].max(-1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(-1, keepdims=True)
    cls = probs.argmax(-1)
    score = obj[gy, gx, ga] * probs.max(-1)
    keep = score >= floor
    if not keep.any():
        return _empty()
    gy, gx, ga, t, cls, score = gy[keep], gx[keep], ga[keep], t[keep], cls[keep], score[keep]
    cx = (gx + _sigmoid(t[:, 0])) * sx
    cy = (gy + _sigmoid(t[:, 1])) * sy
    bw = anchors[ga, 0] * np.exp(np.clip(t[:, 2], -8, 6))
    bh = anchors[ga, 1] * np.exp(np.clip(t[:, 3], -8, 6))
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
    return boxes, cls.astype(np.int64), score.astype(np.float32)


# --------------------------------------------------------------------------- platelets
def platelet_dedupe(boxes: np.ndarray, scores: np.ndarray, iou: float = DEFAULT_PLATELET_IOU) -> np.ndarray:
    """The paper's platelet double-count removal: going from the highest score down, find the
    nearest already-kept platelet by centre distance (1-NN) and drop this one if their IoU is
    above `iou` (0.10). Returns the indices kept."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    kept: list[int] = []
    for i in order:
        if kept:
            d = np.sum((centres[kept] - centres[i]) ** 2, axis=1)
            j = kept[int(np.argmin(d))]
            if box_iou(boxes[i : i + 1], boxes[j : j + 1])[0, 0] > iou:
                continue
        kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)


# --------------------------------------------------------------------------- white cells
def box_sides(boxes: np.ndarray) -> np.ndarray:
    """Square root of each box's area: one size per box, whatever its aspect."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.sqrt(np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0))


def median(values: np.ndarray) -> float:
    """np.median for the few dozen values of one smear, without its overhead (~10x faster)."""
    s = np.sort(np.asarray(values, np.float32).ravel())
    n = s.size
    return float(s[n // 2]) if n % 2 else float(0.5 * (s[n // 2 - 1] + s[n // 2]))


def touches_frame(boxes: np.ndarray, image_size: tuple[int, int], margin: float = 2.0) -> np.ndarray:
    """Boxes within `margin` pixels of the image border (cells cut by the frame)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    w, h = image_size
    return (b[:, 0] <= margin) | (b[:, 1] <= margin) | (b[:, 2] >= w - margin) | (b[:, 3] >= h - margin)


#: red cells (whole ones) needed before their median size is used as the smear's scale
MIN_SCALE_CELLS = 5


def plausible_wbc(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, idx: np.ndarray, labels,
                  image_size: tuple[int, int], min_rbc_size: float, max_inside: float,
                  reference: np.ndarray) -> np.ndarray:
    """`idx` (highest score first) without white-cell detections that cannot be a white cell:
    a whole (not frame-cut) one smaller than `min_rbc_size` x the median whole red cell of the same
    smear (a white cell is larger than a red one; the size is relative, so any magnification), and
    one with more than `max_inside` of its area inside a higher-scoring white cell (a second box on
    one cell's nucleus lobes). On the 157 TXL Training smears every labelled whole white cell is
    >= 1.11 x the median red cell and two white cells overlap by <= 0.26 of the smaller one.
    The red cells measured and the white cells compared with are those above `reference` (the
    model's own thresholds), so a call with lower thresholds (evaluation sweeps) drops the same
    white cells as the default call."""
    if "WBC" not in labels or "RBC" not in labels or idx.size == 0:
        return idx
    wbc, rbc = labels.index("WBC"), labels.index("RBC")
    w = idx[classes[idx] == wbc]
    if w.size == 0:
        return idx
    drop = set()
    red = idx[(classes[idx] == rbc) & (scores[idx] >= reference[rbc])]
    red = red[~touches_frame(boxes[red], image_size)]
    if red.size >= MIN_SCALE_CELLS:
        small = (box_sides(boxes[w]) < min_rbc_size * median(box_sides(boxes[red]))) & ~touches_frame(boxes[w], image_size)
        drop.update(w[small].tolist())
    b = boxes[w]
    area = np.maximum(box_sides(b) ** 2, 1e-6)
    counted = scores[w] >= reference[wbc]
    for k in range(1, w.size):  # w is in score order: compare each with the higher-scoring ones kept
        ahead = [j for j in range(k) if counted[j] and int(w[j]) not in drop]
        if not ahead:
            continue
        iw = np.clip(np.minimum(b[ahead, 2], b[k, 2]) - np.maximum(b[ahead, 0], b[k, 0]), 0, None)
        ih = np.clip(np.minimum(b[ahead, 3], b[k, 3]) - np.maximum(b[ahead, 1], b[k, 1]), 0, None)
        if float((iw * ih).max()) > max_inside * area[k]:
            drop.add(int(w[k]))
    return idx if not drop else np.asarray([i for i in idx if int(i) not in drop], dtype=np.int64)


# --------------------------------------------------------------------------- unstained platelets
#: a smear whose darkest pixels absorb red, green and blue this evenly or more is grey (no stain
#: colour to compare): `stained_platelets` leaves its platelets alone
GREY_SMEAR_SPREAD = 0.1


def _plus_one(pixels: np.ndarray) -> np.ndarray:
    """N x 3 float32 pixels + 1, so that a black pixel has a finite optical density."""
    return np.asarray(pixels, np.float32).reshape(-1, 3) + 1


def background_light(image: np.ndarray, px: np.ndarray | None = None) -> np.ndarray:
    """Per-channel light through the empty slide: the median of the brightest 10 % of the pixels
    (every 8th row and column; `px`: those already as `_plus_one`), + 1 as `_plus_one`."""
    px = _plus_one(image[::8, ::8]) if px is None else px
    total = px[:, 0] + px[:, 1] + px[:, 2]  # not .sum(1): ~5x slower over an axis of 3
    k = int(0.9 * (total.size - 1))
    return np.median(px[total >= np.partition(total, k)[k]], 0)


def stain_spread(pixels: np.ndarray, light: np.ndarray, darkest: float = 0.25, plus_one: bool = False) -> float:
    """How selectively the darkest `darkest` share of `pixels` absorbs: their mean optical densities
    -log(I / light) per channel, (max - min) / mean. A stained cell absorbs some colours more than
    others (a Romanowsky-stained platelet: green); dust on the optics or an out-of-focus speck dims
    every channel alike (~0). Dividing by the empty slide's light cancels white balance and
    per-channel gain. `plus_one`: `pixels` are already `_plus_one`."""
    od = -np.log(np.clip((pixels if plus_one else _plus_one(pixels)) / light, 1e-3, 1.0))
    total = od[:, 0] + od[:, 1] + od[:, 2]
    k = min(int((1 - darkest) * (total.size - 1)), total.size - 1)
    core = od[total >= np.partition(total, k)[k]].mean(0)
    return float((core.max() - core.min()) / max(float(core.mean()), 1e-6))


def stained_platelets(image: np.ndarray | None, boxes: np.ndarray, classes: np.ndarray, idx: np.ndarray, labels,
                      min_relative_spread: float) -> np.ndarray:
    """`idx` without the platelet detections that are not stained: the darkest quarter of the box's
    inner half absorbs red, green and blue alike (`stain_spread` below `min_relative_spread` x the
    smear's own, that of its darkest 10 % of pixels: red and white cells). The dust spot that BCCD's
    camera shows near (555, 78) in many smears is such a detection. A grey smear (its own spread
    below GREY_SMEAR_SPREAD) keeps every platelet: there is no colour to judge by."""
    if image is None or "Platelets" not in labels or idx.size == 0 or np.ndim(image) != 3 or image.shape[2] < 3:
        return idx
    p = idx[classes[idx] == list(labels).index("Platelets")]
    if p.size == 0:
        return idx
    image = image[..., :3]
    px = _plus_one(image[::8, ::8])
    light = background_light(image, px)
    smear = stain_spread(px, light, darkest=0.10, plus_one=True)
    if smear < GREY_SMEAR_SPREAD:
        return idx
    h, w = image.shape[:2]
    drop = set()
    for i in p.tolist():
        x0, y0, x1, y1 = boxes[i]
        cx, cy, qw, qh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4, (y1 - y0) / 4
        core = image[int(max(cy - qh, 0)):int(min(cy + qh, h - 1)) + 1, int(max(cx - qw, 0)):int(min(cx + qw, w - 1)) + 1]
        if core.size and stain_spread(core, light) < min_relative_spread * smear:
            drop.add(i)
    return idx if not drop else np.asarray([i for i in idx if int(i) not in drop], dtype=np.int64)


# --------------------------------------------------------------------------- result
@dataclass
class CellsResult(TaskResult):
    """Detections in image pixels and counts per class."""

    boxes: np.ndarray  # N x 4 float32, x1 y1 x2 y2
    classes: np.ndarray  # N int
    scores: np.ndarray  # N float32
    labels: list[str] = field(default_factory=lambda: list(CLASSES))
    image_size: tuple[int, int] = (0, 0)
    tiles: int = 1
    #: the image lies far from the training smears (pooled-feature Mahalanobis score above the
    #: model's threshold): counts are not to be trusted
    unfamiliar: bool = False
    unfamiliar_score: float | None = None  # None: the model carries no statistics for the check
    message: str = ""

    @property
    def counts(self) -> dict[str, int]:
        return count_cells(self.classes, self.labels)

    def class_counts(self) -> dict[str, int]:
        return self.counts

    def summary(self) -> str:
        counts = ", ".join(f"{name} {n}" for name, n in self.counts.items())
        return f"{counts} (UNFAMILIAR: {self.message})" if self.unfamiliar else counts

    @property
    def needs_attention(self) -> bool:
        return self.unfamiliar

    def to_dict(self) -> dict:
        return {
            "task": TASK,
            "counts": self.counts,
            "total": int(len(self.classes)),
            "image_size": list(self.image_size),
            "tiles": self.tiles,
            "unfamiliar": self.unfamiliar,
            "unfamiliar_score": None if self.unfamiliar_score is None else round(self.unfamiliar_score, 2),
            "message": self.message,
            "detections": [
                {"label": self.labels[int(c)], "score": round(float(s), 4),
                 "box": [round(float(v), 1) for v in b]}
                for b, c, s in zip(self.boxes, self.classes, self.scores)
            ],
        }


def count_cells(classes: np.ndarray, labels: list[str] | tuple[str, ...] = CLASSES) -> dict[str, int]:
    classes = np.asarray(classes)
    return {name: int((classes == i).sum()) for i, name in enumerate(labels)}


def select(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, thresholds: np.ndarray,
           nms_iou: float = DEFAULT_NMS_IOU, platelet_iou: float = DEFAULT_PLATELET_IOU,
           labels: list[str] | tuple[str, ...] = CLASSES, wbc_rules: dict | None = None,
           image_size: tuple[int, int] | None = None, reference: np.ndarray | None = None) -> np.ndarray:
    """Indices kept after per-class thresholds, per-class NMS, platelet de-duplication and (with
    `wbc_rules` and `image_size`) `plausible_wbc`, whose `reference` thresholds default to
    `thresholds`."""
    idx = np.nonzero(scores >= thresholds[classes])[0] if len(scores) else np.zeros(0, np.int64)
    if idx.size == 0:
        return idx
    idx = idx[nms_per_class(boxes[idx], classes[idx], scores[idx], nms_iou)]
    if "Platelets" in labels and platelet_iou is not None and platelet_iou < 1:
        p = labels.index("Platelets")
        pl = idx[classes[idx] == p]
        if pl.size > 1:
            drop = set(pl.tolist()) - set(pl[platelet_dedupe(boxes[pl], scores[pl], platelet_iou)].tolist())
            idx = np.asarray([i for i in idx if i not in drop], dtype=np.int64)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    if wbc_rules and image_size is not None:
        idx = plausible_wbc(boxes, classes, scores, idx, list(labels), image_size, float(wbc_rules["min_rbc_size"]),
                            float(wbc_rules["max_inside"]), thresholds if reference is None else reference)
    return idx


def _to_image(boxes: np.ndarray, ctx: CellsContext) -> np.ndarray:
    out = ctx.letterbox.to_image(boxes) if len(boxes) else boxes.reshape(0, 4).astype(np.float32)
    w, h = ctx.image_size
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    return out


def postprocess(outputs: dict[str, np.ndarray], context: CellsContext, info: ModelInfo,
                thresholds: Any = None, nms_iou: float | None = None, platelet_iou: float | None = None,
                **_: Any) -> CellsResult:
    """Raw model outputs -> CellsResult in image pixels. `thresholds`: a float, a list in label
    order, or {label: value}; default the model's stored thresholds, else the paper's."""
    check_info(info)
    labels = labels_of(info)
    thr = thresholds_of(info, thresholds)
    nms_iou = float(info.settings.get("nms_iou", DEFAULT_NMS_IOU) if nms_iou is None else nms_iou)
    platelet_iou = float(info.settings.get("platelet_iou", DEFAULT_PLATELET_IOU) if platelet_iou is None else platelet_iou)
    if context.tiled is not None:  # infer() ran tiles: merged detections, already in image pixels
        tiled = context.tiled
        boxes, classes, scores, tiles = tiled.boxes, tiled.classes.astype(np.int64), tiled.scores, tiled.tiles
    else:
        boxes, classes, scores = context.decoded or decode(outputs, info, floor=float(thr.min()))
        boxes = _to_image(boxes, context)
        tiles = 1
    keep = select(boxes, classes, scores, thr, nms_iou, platelet_iou, labels, info.settings.get("wbc_rules"),
                  tuple(context.image_size), thresholds_of(info))
    stain = info.settings.get("platelet_stain")
    if stain:
        keep = stained_platelets(context.image, boxes, classes, keep, labels, float(stain["min_relative_spread"]))
    result = CellsResult(boxes[keep], classes[keep], scores[keep], labels, tuple(context.image_size), tiles)
    check_familiar(result, outputs, info)
    return result


UNFAMILIAR_MESSAGE = ("unfamiliar image: it does not look like the blood smears this model was trained on "
                      "(score {score:.0f} > {threshold:.0f}); the counts are not to be trusted")


def check_familiar(result: CellsResult, outputs: dict[str, np.ndarray], info: ModelInfo) -> None:
    """Set `result.unfamiliar` from the model's pooled-feature output and the training smears'
    statistics in its sidecar (`settings["unfamiliar"]`: mean, precision, threshold). A model
    without them (the Tiny-YOLOv2 reproduction) leaves the score None. For a tiled smear the
    features are those of the last tile."""
    flag_unfamiliar(result, outputs, info, UNFAMILIAR_MESSAGE)


# --------------------------------------------------------------------------- tiling
def auto_tiles(image_size: tuple[int, int], input_size: tuple[int, int]) -> int:
    """1 unless the image is at least twice the model input on both sides; then about one tile
    per 1.6 x input, at most 4 x 4."""
    ratio = min(image_size[0] / input_size[0], image_size[1] / input_size[1])
    return 1 if ratio < 2 else int(min(4, math.ceil(ratio / 1.6)))


def tile_grid(image_size: tuple[int, int], n: int, overlap: float = 0.2) -> list[tuple[int, int, int, int, tuple[float, float, float, float]]]:
    """N x N tiles covering the image with `overlap` (fraction of a tile) between neighbours.
    Each entry: (x0, y0, x1, y1, core) where core = (cx0, cy0, cx1, cy1) is the part of the
    image this tile is responsible for (cores partition the image at the overlap midlines)."""
    w, h = image_size

    def spans(length: int) -> list[tuple[int, int, float, float]]:
        if n == 1:
            return [(0, length, 0.0, float(length))]
        size = int(math.ceil(length / (n - (n - 1) * overlap)))
        starts = [round(i * (length - size) / (n - 1)) for i in range(n)]
        out = []
        for i, s in enumerate(starts):
            lo = 0.0 if i == 0 else (s + starts[i - 1] + size) / 2  # midline of the overlap
            hi = float(length) if i == n - 1 else (starts[i + 1] + s + size) / 2
            out.append((s, s + size, lo, hi))
        return out

    tiles = []
    for y0, y1, cy0, cy1 in spans(h):
        for x0, x1, cx0, cx1 in spans(w):
            tiles.append((x0, y0, x1, y1, (cx0, cy0, cx1, cy1)))
    return tiles


def merge_tiles(per_tile: list[tuple[np.ndarray, np.ndarray, np.ndarray]], tiles: list, nms_iou: float = DEFAULT_NMS_IOU
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge detections (already in image pixels) from overlapping tiles so a cell is counted
    once: keep a detection only from the tile whose core holds its centre, then per-class NMS
    across tiles for cells split right on a core border."""
    bs, cs, ss = [], [], []
    for (boxes, classes, scores), tile in zip(per_tile, tiles):
        if len(boxes) == 0:
            continue
        cx0, cy0, cx1, cy1 = tile[4]
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        m = (cx >= cx0) & (cx < cx1) & (cy >= cy0) & (cy < cy1)
        bs.append(boxes[m]), cs.append(classes[m]), ss.append(scores[m])
    if not bs:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32)
    boxes, classes, scores = np.concatenate(bs), np.concatenate(cs), np.concatenate(ss)
    keep = nms_per_class(boxes, classes, scores, nms_iou)
    return boxes[keep], classes[keep], scores[keep]


def run_tiles(session, context: CellsContext, info: ModelInfo, n: int, overlap: float, thr: np.ndarray) -> dict:
    """The smear on N x N overlapping tiles, merged into `context.tiled`; the last tile's outputs."""
    grid = tile_grid(context.image_size, n, overlap)
    per_tile = []
    outputs: dict = {}
    for x0, y0, x1, y1, _core in grid:
        crop = context.image[y0:y1, x0:x1]
        t, ctx = preprocess(crop, info)
        outputs = session.run(t)
        boxes, classes, scores = decode(outputs, info, floor=float(thr.min()))
        boxes = _to_image(boxes, ctx)
        boxes[:, [0, 2]] += x0
        boxes[:, [1, 3]] += y0
        per_tile.append((boxes, classes, scores))
    boxes, classes, scores = merge_tiles(per_tile, grid, float(info.settings.get("nms_iou", DEFAULT_NMS_IOU)))
    context.tiled = TiledDetections(boxes, classes, scores, n)
    return outputs


def red_cell_size(detections: tuple[np.ndarray, np.ndarray, np.ndarray], info: ModelInfo,
                  min_cells: int = MIN_SCALE_CELLS) -> float | None:
    """Median size (square root of box area) of the red cells among one pass's decoded detections
    above the model's own RBC threshold (whatever the call's thresholds: the scale of a smear does
    not depend on them); None when fewer than `min_cells` (no reliable scale)."""
    labels = labels_of(info)
    if "RBC" not in labels:
        return None
    rbc = labels.index("RBC")
    boxes, classes, scores = detections
    red = boxes[(classes == rbc) & (scores >= thresholds_of(info)[rbc])]
    return median(box_sides(red)) if len(red) >= min_cells else None


def infer(session, tensor: np.ndarray, info: ModelInfo, context: CellsContext | None = None,
          tiles: int | str | None = "auto", overlap: float = 0.2, thresholds: Any = None, **_: Any) -> dict:
    """Run the model once, or on N x N overlapping tiles when the smear is much larger than the
    model input (`tiles="auto"`, or an int N; pass `context` from preprocess for tiling). A tiled
    run leaves its merged detections in `context.tiled` (and returns the last tile's outputs).

    Auto-scale (`tiles="auto"` and the sidecar's `auto_scale`): when one pass finds red cells
    smaller than `below_rbc_px` in the model input (median), the smear was taken at a lower
    magnification than the model counts well at; it is counted again on `tiles` x `tiles` tiles
    (`overlap`), each enlarged to the model input. The first pass's outputs are returned (its
    pooled features judge the whole smear for the unfamiliar flag)."""
    check_info(info)
    if context is None or context.image is None:
        return session.run(tensor)
    n = auto_tiles(context.image_size, tuple(info.input_size)) if tiles in ("auto", None) else int(tiles)
    thr = thresholds_of(info, thresholds)
    if n > 1:
        return run_tiles(session, context, info, n, overlap, thr)
    outputs = session.run(tensor)
    auto = info.settings.get("auto_scale")
    if auto and tiles in ("auto", None):
        context.decoded = decode(outputs, info, floor=float(thr.min()))  # postprocess reuses it
        size = red_cell_size(context.decoded, info, int(auto.get("min_cells", MIN_SCALE_CELLS)))
        if size is not None and size < float(auto["below_rbc_px"]):
            run_tiles(session, context, info, int(auto["tiles"]), float(auto["overlap"]), thr)
    return outputs


# --------------------------------------------------------------------------- overlay
def annotate(image: np.ndarray, result: CellsResult) -> np.ndarray:
    """Circles (centre and radius from each box) coloured by class, counts in the top-left."""
    out = as_rgb(image).copy()
    scale = max(out.shape[:2]) / 640.0
    thick = max(1, round(2 * scale))
    for b, c in zip(result.boxes, result.classes):
        name = result.labels[int(c)]
        centre = (int(round((b[0] + b[2]) / 2)), int(round((b[1] + b[3]) / 2)))
        radius = max(2, int(round(((b[2] - b[0]) + (b[3] - b[1])) / 4)))
        cv2.circle(out, centre, radius, COLOURS.get(name, (255, 200, 0)), thick, cv2.LINE_AA)
    y = int(22 * scale)
    for name, n in result.counts.items():
        text = f"{name}: {n}"
        cv2.putText(out, text, (int(8 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(out, text, (int(8 * scale), y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, COLOURS.get(name, (255, 255, 255)), thick, cv2.LINE_AA)
        y += int(24 * scale)
    return out


class CellsTask(Task):
    """Blood-cell counting: the module's functions behind the task contract."""

    name = TASK
    samples = "bccd"

    def check(self, info: ModelInfo, session) -> None:
        check_info(info)
        shape = list(session.outputs[0].shape) if session.outputs else []
        depth = None
        if len(shape) == 4:
            last = int(shape[-1]) if int(shape[-1]) > 0 else None
            extra = 4 if head_of(info) == "centernet" else None
            if extra is not None and last is not None:
                depth = last - extra
            elif last is not None:
                anchors = len(info.settings.get("anchors") or [])
                depth = last // anchors - 5 if anchors and last % anchors == 0 else None
        check_label_count(info, session, depth, "classes")

    def preprocess(self, image: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, CellsContext]:
        check_info(info)
        return preprocess(image, info)

    def infer(self, session, tensor: np.ndarray, info: ModelInfo, *, context: Any = None, **options: Any) -> dict:
        return infer(session, tensor, info, context=context, **options)

    def postprocess(self, outputs: dict, context: Any, info: ModelInfo, **options: Any) -> CellsResult:
        return postprocess(outputs, context, info, **options)

    def annotate(self, image: np.ndarray, result: CellsResult) -> np.ndarray:
        return annotate(image, result)

    def evaluate(self, model_paths, data, out, *, split, backend) -> dict:
        from edgecell.calibration import dataset_dir
        from edgecell.evaluation.detection import evaluate_cells

        report = evaluate_cells(model_paths, dataset_dir("cbc_bccd_cleaned", data), out, backend=backend,
                                split=split or "Testing")
        if (split or "Testing") == "Testing":  # the complete labels (TXL) and the second lab, beside CBC's
            from edgecell.evaluation.cell_counts import add_complete_labels

            add_complete_labels(report, model_paths, data, out, backend=backend)
        return report
