"""Chest X-ray triage (V-BreathNet): Normal / COVID-19 / viral pneumonia, image-quality flags with a
plain "retake the image" message, and a Grad-CAM heatmap computed on the device without TensorFlow.

How Grad-CAM works here
-----------------------
The exported model has two outputs: the class scores and the last convolutional feature map A
(8 x 8 x 64: the last block's batch-norm output, before its 2x2 max-pool). Everything after A is
small and fixed: max-pool -> flatten (1,024) -> dense 512 (ReLU) -> batch norm -> dense 3 (the
logits) -> softmax. The runtime redoes that head in numpy from its weights and takes the gradient
of the class logit y_c by hand:

    p = maxpool(A), z = W1 p + b1, g = relu(z) * s + t   (batch norm folded: s, t)
    y = W2 g + b2
    dy_c/dp = W1 (relu'(z) * s * W2[:, c])

The max-pool sends each window's gradient to one position, so the Grad-CAM channel weights
alpha_k = mean over the 8x8 map of dy_c/dA_k = (sum over the 4x4 map of dy_c/dp_k) / 64 do not
depend on which position wins (no ties to resolve), and the map is relu(sum_k alpha_k A_k): the
same numbers as tf.GradientTape on the Keras model (tests check it).

The head weights live in a small .npz beside the model (`settings["gradcam_head"]`, 2.1 MB of
float32, 99 % of it W1): exact, loaded with numpy alone in a few ms, one file for the FP32 and
INT8 models of every format. The sidecar JSON would need ~10 MB of text for the same numbers, and
reading them back out of each format's graph (TFLite flatbuffer, OpenVINO IR, ONNX initializers,
quantized differently in each) would need three parsers. For an INT8 model the feature map comes
from the INT8 model and the gradient from the float head; the figure in XRAY_MODEL_CARD.md says how
close that stays to FP32.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgecell.errors import ModelError
from edgecell.images import resize
from edgecell.modelinfo import ModelInfo
from edgecell.quality import Quality, check_quality, chest_crop, to_grey
from edgecell.tasks.base import Task, TaskResult, check_label_count
from edgecell.tasks.common import require_task, softmax, to_input_tensor

HEAD_KEYS = ("w1", "b1", "bn_scale", "bn_shift", "w2", "b2")
GAP_HEAD_KEYS = ("w", "b")


# ----------------------------------------------------------------------------- Grad-CAM in numpy

def load_head(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The head weights (see module docstring); clear error if the file is missing. Two kinds:
    V-BreathNet's dense head (HEAD_KEYS), and `gap_dense` (global average pool + one dense layer:
    `w`, `b`) which may carry the unfamiliar-film statistics (`maha_means`, `maha_precision`) and
    the upright check (`rot_w`, `rot_b`)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: Grad-CAM head weights not found; it ships beside the X-ray model "
                         "(re-export with edgecell.convert.train_xray), or run with gradcam=False")
    with np.load(path) as data:
        kind = str(data["kind"]) if "kind" in data else "vbreathnet"
        wanted = GAP_HEAD_KEYS if kind == "gap_dense" else HEAD_KEYS
        missing = [k for k in wanted if k not in data]
        if missing:
            raise ModelError(f"{path}: not a Grad-CAM head file (missing {', '.join(missing)})")
        head = {k: np.asarray(data[k], np.float32) for k in data.files if k != "kind"}
        head["kind"] = kind  # type: ignore[assignment]
        return head


_HEADS: dict[str, dict[str, np.ndarray]] = {}


def head_for(model_path: str | os.PathLike, info: ModelInfo) -> dict[str, np.ndarray] | None:
    """Head weights named by the sidecar, beside `model_path` (cached); None if the model names none."""
    name = info.settings.get("gradcam_head")
    if not name:
        return None
    path = str(Path(model_path).parent / name)
    if path not in _HEADS:
        _HEADS[path] = load_head(path)
    return _HEADS[path]


def maxpool2(a: np.ndarray) -> np.ndarray:
    """2x2 max-pool of an H x W x C map (H, W even; odd edges dropped as Keras 'valid' does)."""
    h, w, c = a.shape
    a = a[: h - h % 2, : w - w % 2]
    return a.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))


def head_logits(features: np.ndarray, head: dict[str, np.ndarray]) -> np.ndarray:
    """Logits recomputed from the feature map (a consistency check against the model's scores)."""
    if head.get("kind") == "gap_dense":
        return np.asarray(features, np.float32).mean(axis=(0, 1)) @ head["w"] + head["b"]
    p = maxpool2(features).reshape(-1)
    z = _vecmat(p, head["w1"]) + head["b1"]
    g = np.maximum(z, 0) * head["bn_scale"] + head["bn_shift"]
    return g @ head["w2"] + head["b2"]


def _vecmat(v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """v @ m without BLAS: numpy's einsum loop is single-threaded, and at this size (1024 x 512)
    BLAS's thread start-up costs more than the arithmetic (measured 3-48 ms with OpenBLAS on a busy
    2-core machine against 1-2 ms here)."""
    return np.einsum("i,ij->j", v, m)


def gradcam_map(features: np.ndarray, head: dict[str, np.ndarray], class_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of `class_index` from the last conv feature map (H x W x C, float) and the head.
    Returns (heatmap H x W in [0, 1] (all zero if no positive evidence), channel weights alpha)."""
    a = np.asarray(features, np.float32)
    if a.ndim == 4:
        a = a[0]
    h, w, c = a.shape
    if head.get("kind") == "gap_dense":  # y_c = w[:, c] . mean(A): dy_c/dA_k = w[k, c] / (h w) everywhere
        alpha = head["w"][:, class_index] / float(h * w)
        return _normalised_cam(a, alpha), alpha
    p = maxpool2(a)
    z = _vecmat(p.reshape(-1), head["w1"]) + head["b1"]
    dz = (z > 0).astype(np.float32) * head["bn_scale"] * head["w2"][:, class_index]
    dp = np.einsum("ij,j->i", head["w1"], dz).reshape(p.shape)  # dy_c / dp
    alpha = dp.sum(axis=(0, 1)) / float(h * w)  # = mean over the 8x8 map of dy_c / dA
    return _normalised_cam(a, alpha), alpha


def _normalised_cam(a: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """relu(sum_k alpha_k A_k), scaled to a peak of 1 (all zero if no positive evidence)."""
    cam = np.maximum(np.tensordot(a, alpha, axes=([2], [0])), 0)
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).astype(np.float32)


# ----------------------------------------------------------------------------- film preparation

#: Defaults of the film preparation (`settings["film_prep"]` of the sidecar overrides them).
#: `resize`: "exact" (the bit-exact bilinear of `edgecell.images.resize`, the same bytes on every
#: CPU) or "area" (OpenCV INTER_AREA, what models trained before the key existed used: a sidecar
#: whose `film_prep` lacks the key is read as "area", see `preprocess`).
FILM_PREP = {"harmonise": 224, "clahe_clip": 2.0, "clahe_tiles": 4, "margin": 0.06, "resize": "exact"}


def _film_resize(grey: np.ndarray, size: int, how: str) -> np.ndarray:
    """`grey` to size x size by the preparation's resize (`FILM_PREP["resize"]`)."""
    if how == "exact":
        return resize(grey, (size, size))
    h, w = grey.shape[:2]
    return cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA if h > size or w > size else cv2.INTER_LINEAR)


def film_grey(image: np.ndarray, prep: dict | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """First half of the film preparation, the same in training and on the device: grey, uniform
    borders trimmed (`chest_crop`), resized to `harmonise` px square (every source at one
    sharpness), then CLAHE (local histogram equalisation: films from different scanners and
    processing chains come to one contrast). Returns (grey uint8 square, crop box in the input)."""
    p = {**FILM_PREP, **(prep or {})}
    grey = to_grey(image)
    grey, box = chest_crop(grey)
    grey = _film_resize(grey, int(p["harmonise"]), p["resize"])
    if p["clahe_clip"]:
        tiles = int(p["clahe_tiles"])
        grey = cv2.createCLAHE(clipLimit=float(p["clahe_clip"]), tileGridSize=(tiles, tiles)).apply(grey)
    return grey, box


def film_crop(grey: np.ndarray, size: int, prep: dict | None = None) -> np.ndarray:
    """Second half: a `margin` share cut from every side (where burnt-in text, markers and
    collimator edges sit, not the lungs), then resized to the model's `size`; RGB (grey x 3)."""
    p = {**FILM_PREP, **(prep or {})}
    h, w = grey.shape[:2]
    my, mx = int(round(h * p["margin"])), int(round(w * p["margin"]))
    inner = grey[my:h - my, mx:w - mx] if h - 2 * my > 8 and w - 2 * mx > 8 else grey
    small = resize(inner, (size, size)) if p["resize"] == "exact" else \
        cv2.resize(inner, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_GRAY2RGB)


def film_pixels(image: np.ndarray, size: int, prep: dict | None = None) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The whole film preparation (`film_grey` then `film_crop`): RGB size x size and the crop box
    of the input the model saw (for the overlay)."""
    grey, box = film_grey(image, prep)
    x0, y0, x1, y1 = box
    p = {**FILM_PREP, **(prep or {})}
    mx, my = int(round((x1 - x0) * p["margin"])), int(round((y1 - y0) * p["margin"]))
    return film_crop(grey, size, prep), (x0 + mx, y0 + my, x1 - mx, y1 - my)


def film_prep_of(info: ModelInfo) -> dict | None:
    """The film preparation a model was trained with (`settings["film_prep"]`), None for models
    without one; a sidecar written before the `resize` key existed was trained with INTER_AREA."""
    prep = info.settings.get("film_prep")
    return None if prep is None else {"resize": "area", **prep}


# ----------------------------------------------------------------------------- unfamiliar films

def class_distances(pooled: np.ndarray, stats: dict[str, np.ndarray]) -> np.ndarray:
    """Squared Mahalanobis distance of a film's pooled features to each class mean of the training
    films, under their shared within-class covariance (`maha_means` C x K, `maha_precision` K x K
    in the head file)."""
    d = np.asarray(pooled, np.float32).reshape(1, -1) - stats["maha_means"]
    return np.einsum("ck,kl,cl->c", d, stats["maha_precision"], d)


def unfamiliar_score(pooled: np.ndarray, stats: dict[str, np.ndarray]) -> float:
    """Distance (`class_distances`) to the nearest class mean. Large = the film lies far from
    anything the model was trained on."""
    return float(class_distances(pooled, stats).min())


def distances_per_class(distances: np.ndarray, stats: dict[str, np.ndarray], n_classes: int) -> np.ndarray | None:
    """One distance per class: the nearest of that class's means. A commissioned model's head adds
    the site's class means (`maha_classes` says each row's class); None if the rows cannot be
    matched to the classes."""
    classes = stats.get("maha_classes")
    if classes is None:
        return distances if distances.size == n_classes else None
    classes = np.asarray(classes).astype(int)
    if not all((classes == c).any() for c in range(n_classes)):
        return None
    return np.array([distances[classes == c].min() for c in range(n_classes)])


def disagreement_score(distances: np.ndarray, answer: int) -> tuple[float, int]:
    """A second opinion from the same features: distance to the answered class's mean minus the
    distance to the nearest other class's mean (positive: the features lie nearer another class
    than the one the network answered), and that other class. On sources held out from training
    the network's wrong answers are mostly confident; this score is what tells them apart (the
    within-class covariance discounts the directions in which one class's sources differ; see
    XRAY_MODEL_CARD.md)."""
    others = np.where(np.arange(distances.size) == answer, np.inf, distances)
    other = int(np.argmin(others))
    return float(distances[answer] - others[other]), other


# ----------------------------------------------------------------------------- result

UNFAMILIAR_MESSAGE = ("Unfamiliar film: unlike the films this model learnt from (another hospital, scanner, "
                      "view or not a chest X-ray?); do not trust the answer, have it read by a person.")
DISAGREEMENT_MESSAGE = ("Uncertain answer: by its overall appearance this film resembles the training films of "
                        "{other} more than those of {label}; have it read by a person.")
LOW_CONFIDENCE_MESSAGE = "Uncertain answer: confidence {confidence:.2f} is below {floor:.2f}; have it read by a person."
ROTATED_MESSAGE = "The film does not look upright (turned by about {degrees} degrees?): rotate it and run again."

@dataclass
class XrayResult(TaskResult):
    label: str
    index: int
    confidence: float
    probabilities: dict[str, float]
    quality: Quality | None = None
    uncertain: bool = False
    heatmap: np.ndarray | None = None  # H x W (feature-map grid) in [0, 1], for `gradcam_class`
    gradcam_class: str | None = None
    gradcam_ms: float | None = None
    crop: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) in the input image, if cropped
    notes: list[str] = field(default_factory=list)
    unfamiliar: bool = False  # the film lies far from the training films (score above the threshold)
    unfamiliar_score: float | None = None  # None: the model carries no statistics for the check
    rotation: int | None = None  # degrees clockwise the film seems turned by (0 = upright); None: not checked
    disagreement_score: float | None = None  # `disagreement_score`; None: the model carries no statistics
    disagrees: bool = False  # the score is above the sidecar's `disagreement_threshold`
    nearest_other: str | None = None  # the class the features lie nearest to, after the answer
    confidence_floor: float = 0.0  # `min_confidence` the answer was held to

    @property
    def retake(self) -> bool:
        return self.quality is not None and not self.quality.ok

    @property
    def upright(self) -> bool:
        return not self.rotation

    @property
    def message(self) -> str:
        """Plain words for a person: what is wrong with this answer and what to do, or ""."""
        parts = [self.quality.message()] if self.retake else []
        if self.rotation:
            parts.append(ROTATED_MESSAGE.format(degrees=self.rotation))
        if self.unfamiliar:
            parts.append(UNFAMILIAR_MESSAGE)
        elif self.disagrees:
            parts.append(DISAGREEMENT_MESSAGE.format(other=self.nearest_other, label=self.label))
        elif self.confidence < self.confidence_floor:
            parts.append(LOW_CONFIDENCE_MESSAGE.format(confidence=self.confidence, floor=self.confidence_floor))
        return " ".join(parts)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {
            "label": self.label, "index": self.index, "confidence": round(self.confidence, 5),
            "probabilities": {k: round(v, 5) for k, v in self.probabilities.items()},
            "uncertain": self.uncertain, "retake": self.retake, "message": self.message,
            "unfamiliar": self.unfamiliar,
            "unfamiliar_score": None if self.unfamiliar_score is None else round(self.unfamiliar_score, 2),
            "disagrees": self.disagrees,
            "disagreement_score": None if self.disagreement_score is None else round(self.disagreement_score, 2),
            "upright": None if self.rotation is None else self.upright,
            "quality": self.quality.to_dict() if self.quality is not None else None,
        }
        if self.heatmap is not None:
            hm = self.heatmap
            y, x = np.unravel_index(int(np.argmax(hm)), hm.shape)
            out["gradcam"] = {"class": self.gradcam_class, "grid": list(hm.shape),
                              "peak_xy": [round((x + 0.5) / hm.shape[1], 3), round((y + 0.5) / hm.shape[0], 3)],
                              "heatmap": np.round(hm.astype(np.float64), 3).tolist(),
                              "ms": None if self.gradcam_ms is None else round(self.gradcam_ms, 3)}
        if self.crop is not None:
            out["crop"] = list(self.crop)
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    @property
    def needs_attention(self) -> bool:
        return self.uncertain or self.retake

    def summary(self) -> str:
        text = f"{self.label} {self.confidence:.2f}"
        if self.uncertain:
            text += " (uncertain: check by hand)"
        if self.message:
            text += f" | {self.message}"
        return text


# ----------------------------------------------------------------------------- task functions

@dataclass
class XrayContext:
    quality: Quality
    crop: tuple[int, int, int, int] | None = None
    head: dict[str, np.ndarray] | None = None
    head_error: str | None = None
    model_path: Path | None = None


def preprocess(image: np.ndarray, info: ModelInfo, *, crop: bool | None = None, **_) -> tuple[np.ndarray, XrayContext]:
    """Quality checks on the image as received; then the film preparation the model was trained
    with (`settings["film_prep"]`: `film_pixels`), or for older models an optional chest crop
    (option `crop`, default `settings["chest_crop"]`, off); then the shared model-input preparation."""
    require_task(info, "xray")
    thresholds = dict(info.settings.get("quality") or {})
    quality = check_quality(image, **thresholds)
    box = None
    prep = film_prep_of(info)
    if prep is not None:
        pixels, box = film_pixels(image, int(info.input_size[0]), prep)
        tensor, _ = to_input_tensor(pixels, info)
        return tensor, XrayContext(quality, box)
    if crop if crop is not None else info.settings.get("chest_crop", False):
        image, box = chest_crop(image)
    tensor, _ = to_input_tensor(image, info)
    return tensor, XrayContext(quality, box)


def split_outputs(outputs: dict[str, np.ndarray], info: ModelInfo) -> tuple[np.ndarray, np.ndarray | None]:
    """(class scores (C,), feature map H x W x K or None) from a model's outputs: by the names in
    the sidecar where the format keeps them (ONNX, OpenVINO), else by shape (TFLite names its
    outputs StatefulPartitionedCall:n)."""
    n = len(info.labels) or 3
    scores = outputs.get(info.settings.get("probs_output", ""), outputs.get("scores"))
    features = outputs.get(info.settings.get("features_output", ""), outputs.get("features"))
    for v in outputs.values():
        if scores is None and v.size == n:
            scores = v
        elif features is None and v.ndim >= 3:
            features = v
    if scores is None:
        raise ModelError(f"model outputs {[(k, v.shape) for k, v in outputs.items()]} hold no {n} class scores")
    scores = scores.reshape(-1).astype(np.float32)
    if scores.min() < -1e-3 or abs(float(scores.sum()) - 1.0) > 0.02:
        scores = softmax(scores)
    if features is not None:
        features = features[0] if features.ndim == 4 else features
    return scores, features


def infer(session, tensor: np.ndarray, info: ModelInfo, *, context: XrayContext | None = None,
          **_) -> dict[str, np.ndarray]:
    """One model call: class scores and the feature map; loads the head beside the model file
    (into `context`, which postprocess reads)."""
    outputs = session.run(tensor)
    scores, features = split_outputs(outputs, info)
    path = getattr(session, "path", None)
    if isinstance(context, XrayContext) and path is not None:
        context.model_path = Path(path)
        try:
            context.head = head_for(path, info)
        except ModelError as exc:
            context.head, context.head_error = None, str(exc)
    out = {"scores": scores}
    if features is not None:
        out["features"] = features
    return out


def postprocess(outputs: dict[str, np.ndarray], context: XrayContext | None, info: ModelInfo, *,
                gradcam: bool = True, gradcam_class: int | str | None = None, head_path: str | None = None,
                min_confidence: float | None = None, **_) -> XrayResult:
    """Class, probabilities, quality flags and (unless gradcam=False) the Grad-CAM heatmap of the
    predicted class (or `gradcam_class`, an index or a label)."""
    scores, features = split_outputs(outputs, info)
    head = load_head(head_path) if head_path else (context.head if isinstance(context, XrayContext) else None)
    pooled = None if features is None else pooled_features(features, info, head)
    if pooled is not None and head is not None and head.get("kind") == "gap_dense" and "feature_correction" in info.settings:
        scores = softmax(pooled @ head["w"] + head["b"])  # the answer from the corrected features
    labels = info.labels or [str(i) for i in range(scores.size)]
    best = int(np.argmax(scores))
    threshold = min_confidence if min_confidence is not None else info.settings.get("min_confidence", 0.0)
    result = XrayResult(label=labels[best], index=best, confidence=float(scores[best]),
                        probabilities={labels[i]: float(scores[i]) for i in range(scores.size)},
                        quality=context.quality if isinstance(context, XrayContext) else None,
                        crop=context.crop if isinstance(context, XrayContext) else None,
                        confidence_floor=float(threshold or 0.0))
    if pooled is not None and head is not None:
        check_familiar(result, pooled, head, info)
    result.uncertain = bool(scores[best] < result.confidence_floor or result.unfamiliar or result.disagrees
                            or result.retake or not result.upright)
    if not gradcam:
        return result
    if features is None:
        result.notes.append("no Grad-CAM: the model has no feature-map output")
    elif head is None:
        why = context.head_error if isinstance(context, XrayContext) and context.head_error else \
            "head weights not found (pass head_path=...)"
        result.notes.append("no Grad-CAM: " + why)
    else:
        c = labels.index(gradcam_class) if isinstance(gradcam_class, str) else best if gradcam_class is None else int(gradcam_class)
        t0 = time.perf_counter()
        result.heatmap, _ = gradcam_map(features, head, c)
        result.gradcam_ms = (time.perf_counter() - t0) * 1e3
        result.gradcam_class = labels[c]
    return result


def pooled_features(features: np.ndarray, info: ModelInfo, head: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The feature map averaged to one vector per film; for an INT8 file whose sidecar carries a
    `feature_correction`, mapped onto the FP32 model's features: per channel ({"scale": [K],
    "offset": [K]}), or, with {"kind": "linear"}, by the [K+1, K] matrix `correction_matrix` of
    the head file (features, then the intercept row).

    Why: INT8 rounding moves the pooled features of every film a little in the same direction
    (measured: the COVID-minus-Normal logit +0.6 on average, training films and new sources
    alike); films of a new hospital sit near the decision boundary, so the FP32 and INT8 files
    answered 4-10 % of them differently. The exporter fits the map on training films (empirical
    bias correction); the answer, the flags and the statistics they are compared with then see
    FP32-like features. The per-channel map left the held-out sites' near-ties tilted toward
    COVID (INT8 - FP32 +1.2 to +1.7 points); the linear map (ridge, across channels) also undoes
    the part of the rounding that one channel leaks into another."""
    pooled = np.asarray(features, np.float32).reshape(-1, features.shape[-1]).mean(axis=0)
    fix = info.settings.get("feature_correction")
    if fix and fix.get("kind") == "linear":
        if head is None or "correction_matrix" not in head:
            raise ModelError(f"{info.name}: its sidecar asks for the linear feature correction, but the head file "
                             "has no correction_matrix (ship the head file exported with the model)")
        matrix = np.asarray(head["correction_matrix"], np.float32)
        pooled = pooled @ matrix[:-1] + matrix[-1]
    elif fix:
        pooled = pooled * np.asarray(fix["scale"], np.float32) + np.asarray(fix["offset"], np.float32)
    return pooled


def check_familiar(result: XrayResult, pooled: np.ndarray, head: dict[str, np.ndarray], info: ModelInfo) -> None:
    """The unfamiliar-film flag, the features' second opinion and the upright check from the pooled
    features (`pooled_features`), where the head file carries their statistics (`maha_*`, `rot_*`) and the sidecar
    their thresholds (`unfamiliar_threshold`; `disagreement_threshold`; `upright_min_probability`:
    a turn is reported when the rotation classifier gives a non-zero turn at least this
    probability)."""
    if "maha_means" in head and "maha_precision" in head:
        distances = class_distances(pooled, head)
        result.unfamiliar_score = float(distances.min())
        limit = info.settings.get("unfamiliar_threshold")
        result.unfamiliar = limit is not None and result.unfamiliar_score > float(limit)
        per_class = distances_per_class(distances, head, len(result.probabilities))
        if per_class is not None and per_class.size > 1:
            result.disagreement_score, other = disagreement_score(per_class, result.index)
            result.nearest_other = list(result.probabilities)[other]
            limit = info.settings.get("disagreement_threshold")
            result.disagrees = limit is not None and result.disagreement_score > float(limit)
    if "rot_w" in head and "rot_b" in head:
        p = softmax(pooled @ head["rot_w"] + head["rot_b"])
        k = int(np.argmax(p))
        result.rotation = 90 * k if k and p[k] >= float(info.settings.get("upright_min_probability", 0.5)) else 0


def heatmap_image(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Heatmap grid -> RGB colour image of (width, height), smooth (bicubic, clipped)."""
    hm = cv2.resize(heatmap.astype(np.float32), size, interpolation=cv2.INTER_CUBIC)
    hm = np.clip(hm, 0, 1)
    colour = cv2.applyColorMap((hm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(colour, cv2.COLOR_BGR2RGB), hm


def annotate(image: np.ndarray, result: XrayResult, *, alpha: float = 0.45) -> np.ndarray:
    """The X-ray with the Grad-CAM heatmap blended in (where the model looked), the class and its
    probability on top, and the retake message in red when a quality check failed."""
    out = image.copy()
    if out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)
    h, w = out.shape[:2]
    if result.heatmap is not None and h > 1 and w > 1:
        x0, y0, x1, y1 = result.crop if result.crop else (0, 0, w, h)
        region = out[y0:y1, x0:x1]
        colour, hm = heatmap_image(result.heatmap, (region.shape[1], region.shape[0]))
        weight = (alpha * hm)[..., None]  # cold areas keep the X-ray, hot areas take the colour
        out[y0:y1, x0:x1] = np.clip(region * (1 - weight) + colour * weight, 0, 255).astype(np.uint8)
    scale = max(0.45, w / 900)
    bar = int(30 * scale) + 4
    lines = [f"{result.label} {result.confidence:.2f}" + (" (uncertain)" if result.uncertain else "")
             + (f"  Grad-CAM: {result.gradcam_class}" if result.gradcam_class else "")]
    if result.retake:
        lines.append(result.message)
    if out.shape[0] >= bar * len(lines) and w >= 32:
        cv2.rectangle(out, (0, 0), (w, bar * len(lines)), (0, 0, 0), -1)
        for i, text in enumerate(lines):
            colour = (255, 60, 60) if i > 0 else (0, 200, 0)
            cv2.putText(out, text, (4, int(bar * (i + 1) - 8 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.6 * scale, colour, max(1, int(1.5 * scale)), cv2.LINE_AA)
    return out


class XrayTask(Task):
    """Chest X-ray triage with quality flags and Grad-CAM."""

    name = "xray"

    def check(self, info: ModelInfo, session) -> None:
        vectors = [o for o in session.outputs if len(o.shape) == 2 and int(o.shape[-1]) > 0]
        if len(vectors) == 1:  # the class scores (the other output is the feature map)
            check_label_count(info, session, int(vectors[0].shape[-1]), "class scores")

    def preprocess(self, image: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, XrayContext]:
        return preprocess(image, info)

    def infer(self, session, tensor: np.ndarray, info: ModelInfo, *, context: Any = None, **options: Any) -> dict:
        return infer(session, tensor, info, context=context, **options)

    def postprocess(self, outputs: dict, context, info: ModelInfo, **options) -> XrayResult:
        return postprocess(outputs, context, info, **options)

    def annotate(self, image: np.ndarray, result: XrayResult) -> np.ndarray:
        return annotate(image, result)

    def evaluate(self, model_paths, data, out, *, split, backend) -> dict:
        from edgecell.calibration import xray as xray_data
        from edgecell.evaluation.classification import evaluate_classifier

        # the held-out split is rebuilt from the data and the seed the model card names (0)
        items, _, _ = xray_data.build(data, seed=0)
        return evaluate_classifier(model_paths, xray_data.heldout_folder(items, out), out, split="test",
                                   backend=backend)
