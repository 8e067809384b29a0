"""Red-cell morphology on a smear (Qiu et al., "Multi-label detection and classification of red
blood cells"): find the red cells, cut a patch around each, say which cell types each patch holds
(one sigmoid head per type, multi-label: a patch of touching cells can hold an ovalocyte and a
stomatocyte), and flag the smear for a haematologist when abnormal cells are present.

Patches: every detected centre gets a square of `PATCH_CROP` image pixels (4 cell radii at Chula's
1000x, ~40 px cells) around it, cut from the field resized once by PATCH_SIZE / PATCH_CROP and padded
with grey; a patch holds its own cell and the touching neighbours whose centres fall inside it
("patches as they come", the paper's Model A). Training cuts its patches with this very function.

One run (`edgecell run rbc SMEAR`):
1. cell centres: a `cells`-task CenterNet beside the model (`settings["detector"]`, same format and
   backend as the morphology model), run through `edgecell.tasks.cells` as `edgecell run` would;
2. patches: `cut_patches`, normalised once, `patch_batch` patches per model call (the model's input
   is the patches stacked vertically, reshaped into a batch inside the graph: fixed shapes for
   every converter, one call per `patch_batch` cells);
3. per patch: a sigmoid probability per type (`labels`, multi-label: which types the patch holds)
   and a softmax over Chula's 13 classes for the patch's own cell (`settings["classes"]`: the per-type
   counts come from it, so a burr cell's neighbours are not counted as burr cells);
4. "abnormal present in this patch": gradient-boosted trees (trained with scikit-learn, exported as
   arrays, evaluated here in numpy) on the type probabilities; which types count as abnormal is
   `settings["abnormal_types"]`, stated in the sidecar;
5. the smear score (`smear_score`: the fraction of cells whose patch is abnormal, or the mean of the
   cells' abnormal probabilities, which moves smoothly with small shifts of the outputs) against
   `settings["smear_min_fraction"]`, with the reason (how many cells, which types); a score within
   `settings["smear_borderline"]` of the cut is reported `borderline` ("review"), not a coin toss.
A field with no red cells gives an empty list and no flag; a field that does not look like a
stained smear at this magnification is marked `uncertain` with the reason, and its cells are not
reported as findings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from edgecell.errors import ModelError
from edgecell.modelinfo import ModelInfo
from edgecell.tasks.base import Task, TaskResult, is_file_name
from edgecell.tasks.common import normalise, require_task, softmax

TASK = "rbc"
PATCH_CROP = 80  # image pixels around a centre (4 cell radii of a Chula field)
PATCH_SIZE = 64  # model input pixels
PAD_VALUE = 114  # the letterbox grey, outside the field
CELL_RADIUS = 20.0  # image pixels, a Chula red cell (default of `cell_radius`; measured: calibration.chula); the overlay's circles


def cut_patches(image: np.ndarray, centres: np.ndarray, *, crop: int = PATCH_CROP, size: int = PATCH_SIZE,
                margin: int = 0) -> np.ndarray:
    """N x (size + 2 margin) x (size + 2 margin) x 3 uint8 patches centred on `centres` (N x 2, x y in
    image pixels): the image is resized once by size / crop (INTER_AREA) and padded with grey, so a
    cell at the border gets a patch of the same size. `margin` > 0 leaves room for training jitter."""
    centres = np.asarray(centres, np.float32).reshape(-1, 2)
    side = size + 2 * margin
    if len(centres) == 0:
        return np.zeros((0, side, side, 3), np.uint8)
    scale = size / crop
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    pad = side // 2 + 1
    padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    x0 = np.rint(centres[:, 0] * scale).astype(np.int64) + pad - side // 2
    y0 = np.rint(centres[:, 1] * scale).astype(np.int64) + pad - side // 2
    x0 = np.clip(x0, 0, padded.shape[1] - side)
    y0 = np.clip(y0, 0, padded.shape[0] - side)
    # one slice copy per patch: 2-3x faster than one fancy-indexed gather of every pixel (~5 ms at 100 cells)
    out = np.empty((len(centres), side, side, padded.shape[2]), padded.dtype)
    for i, (x, y) in enumerate(zip(x0.tolist(), y0.tolist())):
        out[i] = padded[y : y + side, x : x + side]
    return out


def centres_in_patches(centres: np.ndarray, others: np.ndarray, crop: int = PATCH_CROP) -> np.ndarray:
    """N x M bool: which of `others` (M x 2) lie inside the patch of each centre (N x 2)."""
    a = np.asarray(centres, np.float32).reshape(-1, 1, 2)
    b = np.asarray(others, np.float32).reshape(1, -1, 2)
    return (np.abs(a - b) < crop / 2).all(-1)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, np.float32), -60, 60)))


# ----------------------------------------------------------------------------- gradient-boosted trees

def trees_decision(features: np.ndarray, trees: dict) -> np.ndarray:
    """The raw score of exported gradient-boosted trees (binary log-loss): init + rate * sum of the
    leaf values, for N x F features. `trees`: {"init", "learning_rate", "feature", "threshold",
    "left", "right", "value"}, the node arrays of all trees concatenated (child indices global,
    -1 at leaves), "roots" the first node of each tree, "depth" the deepest path."""
    # float32 first, as scikit-learn compares its float32 copy of X with float64 thresholds
    x = np.asarray(features, np.float32).astype(np.float64).reshape(len(features), -1)
    feature = np.asarray(trees["feature"], np.int64)
    threshold = np.asarray(trees["threshold"], np.float64)
    left, right = np.asarray(trees["left"], np.int64), np.asarray(trees["right"], np.int64)
    value = np.asarray(trees["value"], np.float64)
    node = np.broadcast_to(np.asarray(trees["roots"], np.int64), (len(x), len(trees["roots"]))).copy()
    rows = np.arange(len(x))[:, None]
    for _ in range(int(trees["depth"])):
        leaf = left[node] < 0
        go_left = x[rows, np.maximum(feature[node], 0)] <= threshold[node]
        node = np.where(leaf, node, np.where(go_left, left[node], right[node]))
    return float(trees["init"]) + float(trees["learning_rate"]) * value[node].sum(axis=1)


def trees_probability(features: np.ndarray, trees: dict) -> np.ndarray:
    return sigmoid(trees_decision(features, trees)).astype(np.float32)


# ----------------------------------------------------------------------------- is this a smear?

MAX_BACKGROUND_STD = 10.0  # a smear's background (brightest 40 % of pixels) is flat: Chula <= 8.4, BCCD <= 7.3
MIN_CELL_COVERAGE = 0.5  # found cells x cell area / stained area; Chula >= 0.74, product photos median 0.14
CHECK_SIZE = (160, 120)


@dataclass
class SmearCheck:
    """Whether the field looks like what the models were trained on: a flat bright background with
    stained cells, and the found cells explaining the stained area (see MAX_BACKGROUND_STD,
    MIN_CELL_COVERAGE; measured on Chula, BCCD, product photos and chest X-rays, RBC_MODEL_CARD.md)."""

    background_std: float
    stained_fraction: float
    coverage: float
    familiar: bool
    reason: str

    def to_dict(self) -> dict:
        return {"background_std": round(self.background_std, 2), "stained_fraction": round(self.stained_fraction, 4),
                "coverage": round(self.coverage, 3), "familiar": self.familiar}


def check_smear(image: np.ndarray, n_cells: int, radius: float, settings: dict | None = None) -> SmearCheck:
    """Background flatness and how much of the stained (darker) area the found cells account for."""
    settings = settings or {}
    max_std = float(settings.get("max_background_std", MAX_BACKGROUND_STD))
    min_cov = float(settings.get("min_cell_coverage", MIN_CELL_COVERAGE))
    small = cv2.resize(image, CHECK_SIZE, interpolation=cv2.INTER_AREA)
    v = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)[:, :, 2].astype(np.float32)
    background = v >= np.percentile(v, 60)
    std = float(v[background].std())
    stained = float((v < np.median(v[background]) - 25).mean())
    area = stained * image.shape[0] * image.shape[1]
    coverage = n_cells * np.pi * radius ** 2 / area if area >= np.pi * radius ** 2 else float("inf")
    if std > max_std:
        return SmearCheck(std, stained, coverage, False, f"not a smear field like the training data: the "
                          f"background varies (brightness std {std:.1f} > {max_std:g})")
    if coverage < min_cov:
        return SmearCheck(std, stained, coverage, False, f"not a smear field like the training data: the {n_cells} "
                          f"cell-like spots found explain {coverage:.0%} of the stained area (< {min_cov:.0%})")
    return SmearCheck(std, stained, coverage, True, "")


# ----------------------------------------------------------------------------- results

@dataclass
class RbcCell:
    """One detected red cell: centre in input-image pixels, what its patch holds."""

    x: float
    y: float
    score: float  # detector confidence
    types: dict[str, float]  # type -> probability that the patch holds a cell of that type
    present: list[str]  # the types whose probability reaches its threshold (`type_thresholds`)
    cell_type: str  # the most likely class of the cell itself
    cell_type_probability: float
    abnormal: float  # probability that the patch holds an abnormal cell (the trees)

    def to_dict(self) -> dict:
        return {"x": round(self.x, 1), "y": round(self.y, 1), "score": round(self.score, 4),
                "type": self.cell_type, "type_probability": round(self.cell_type_probability, 4),
                "abnormal": round(self.abnormal, 4), "types": {k: round(v, 4) for k, v in self.types.items()},
                "present": list(self.present)}


@dataclass
class RbcResult(TaskResult):
    """Cells, per-type counts, and the smear-level flag for a haematologist."""

    cells: list[RbcCell]
    counts: dict[str, int]  # cells per class of the cell itself
    abnormal: bool
    abnormal_score: float  # the smear score (`smear_score`): compared with `smear_min_fraction`
    reason: str
    abnormal_types: list[str]
    image_size: tuple[int, int] = (0, 0)
    uncertain: bool = False
    uncertain_reason: str = ""
    abnormal_threshold: float = 0.5
    check: SmearCheck | None = None
    borderline: bool = False  # the smear score is within `smear_borderline` of the cut: a person should look
    blood_counts: Any = None  # the cell counter's result on the same field (`--counts`), else None

    @property
    def total(self) -> int:
        return len(self.cells)

    def to_dict(self) -> dict:
        return {"task": TASK, "total": self.total, "counts": self.counts, "abnormal": self.abnormal,
                "abnormal_score": round(self.abnormal_score, 4), "borderline": self.borderline, "reason": self.reason,
                "abnormal_types": list(self.abnormal_types), "uncertain": self.uncertain,
                "uncertain_reason": self.uncertain_reason, "image_size": list(self.image_size),
                "smear_check": self.check.to_dict() if self.check else None,
                **({} if self.blood_counts is None else {"blood_counts": self.blood_counts.to_dict()}),
                "cells": [c.to_dict() for c in self.cells]}

    @property
    def needs_attention(self) -> bool:
        return self.abnormal or self.uncertain or self.borderline

    def csv_row(self) -> dict[str, Any]:
        """The flat row, plus the counter's per-class counts (`blood_counts_RBC`, ...) under `--counts`."""
        row = super().csv_row()
        if self.blood_counts is not None:
            row.update({f"blood_counts_{name}": n for name, n in self.blood_counts.counts.items()})
        return row

    @property
    def unfamiliar(self) -> bool:
        """The field is not a smear like the training ones (`check_smear`): the same contract as the
        other tasks' `unfamiliar`, so a one-image run exits 3 and the closing table marks it."""
        return self.uncertain

    @property
    def message(self) -> str:
        return f"not assessed as a blood smear: {self.uncertain_reason}" if self.uncertain else ""

    def verdict(self) -> str:
        """The smear-level answer in a few words, for the closing table (the reason is in the JSON)."""
        if self.uncertain:
            return "not assessed"
        if not self.cells:
            return "no red cells"
        types = ", ".join(t for t in self.abnormal_types if self.counts.get(t))
        flag = self.flag_word()
        return f"{flag} ({types})" if flag == "ABNORMAL" and types else flag

    def flag_word(self) -> str:
        """The smear flag in one word (summary line, closing table)."""
        return "BORDERLINE, review" if self.borderline else "ABNORMAL" if self.abnormal else "no flag"

    def class_counts(self) -> dict[str, int]:
        return dict(self.counts)

    def summary(self) -> str:
        counter = "" if self.blood_counts is None else f"; counter: {self.blood_counts.summary()}"
        if self.uncertain:
            return f"uncertain: {self.uncertain_reason}{counter}"
        return f"{self.total} cells; {self.flag_word()}: {self.reason}{counter}"


# ----------------------------------------------------------------------------- pipeline

@dataclass
class RbcContext:
    image: np.ndarray
    image_size: tuple[int, int]
    stage_ms: dict[str, float] = field(default_factory=dict)


def check_info(info: ModelInfo) -> None:
    require_task(info, TASK)
    missing = [k for k in ("detector", "classes", "abnormal_trees") if k not in info.settings]
    if missing:
        raise ModelError(f"rbc model {info.name or '?'}: sidecar settings lack {', '.join(missing)}; "
                         "re-export it with edgecell.convert.train_rbc")


def cell_radius(info: ModelInfo) -> float:
    """A red cell's radius in image pixels: `settings["cell_radius_px"]`, else a Chula cell's."""
    return float(info.settings.get("cell_radius_px", CELL_RADIUS))


def type_thresholds(info: ModelInfo) -> np.ndarray:
    """Per type (in `info.labels` order) the probability from which its patch is said to hold it:
    `settings["type_thresholds"]` (chosen on the val patches at export for exact match), else 0.5."""
    chosen = info.settings.get("type_thresholds") or {}
    return np.array([float(chosen.get(name, 0.5)) for name in info.labels], np.float32)


def patch_batch(info: ModelInfo) -> int:
    return int(info.settings.get("patch_batch", 1))


def preprocess(image: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, RbcContext]:
    """The field itself (the work happens in `infer`: detection, then patches)."""
    from edgecell.tasks.cells import as_rgb

    check_info(info)
    image = as_rgb(image)
    return image, RbcContext(image, (image.shape[1], image.shape[0]))


#: models loaded beside an rbc model (its detector, the counter), see `model_beside`
_BESIDE: dict[tuple, Any] = {}


def detector_for(session, info: ModelInfo):
    """The centre detector named by the sidecar (`<detector>_<precision>`), beside the model file, in
    the same format (its suffix) and on the same backend, else its .tflite; cached per path and backend."""
    return model_beside(session, info, str(info.settings["detector"]), "cell detector")


#: the shipped cell counter (`cells` task) an rbc run asks for with `blood_counts` (`edgecell run rbc --counts`)
COUNTER = "cells"


def counter_for(session, info: ModelInfo):
    """The shipped cell counter (`cells_<precision>`) beside the rbc model, loaded as `detector_for`
    loads the detector: RBC / WBC / platelet counts of the same decoded field, in the same run."""
    return model_beside(session, info, COUNTER, "cell counter (for --counts)")


def model_beside(session, info: ModelInfo, name: str, what: str):
    """`<name>_<precision>` beside the model file, same format and backend, else its .tflite on LiteRT;
    cached per model file, name, backend and threads, so a run's later images touch no file."""
    from edgecell.model import load_model

    key = (str(session.path), name, info.precision, session.backend, session.threads)
    if key in _BESIDE:
        return _BESIDE[key]
    base = Path(session.path).parent / f"{name}_{info.precision}"
    path = base.with_suffix(Path(session.path).suffix)
    if not path.is_file():
        path = base.with_suffix(".tflite")
    if not path.is_file():
        raise ModelError(f"{path}: the rbc model's {what} is missing; it ships beside "
                         f"{Path(session.path).name}")
    backend = "litert" if path.suffix == ".tflite" and not str(session.path).endswith(".tflite") else session.backend
    _BESIDE[key] = load_model(path, backend, threads=session.threads)
    return _BESIDE[key]


def patch_inputs(patches: np.ndarray, info: ModelInfo) -> Iterator[np.ndarray]:
    """The model inputs for `patches`: `patch_batch` patches per model call, the last call padded."""
    size, batch = int(info.input_size[0]), patch_batch(info)
    for i in range(0, len(patches), batch):
        chunk = patches[i : i + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.full((batch - len(chunk), *chunk.shape[1:]), PAD_VALUE, np.uint8)])
        yield normalise(chunk.reshape(batch * size, size, 3), info)[None]


def context_features(features: np.ndarray) -> np.ndarray:
    """Per patch of one field: its pooled features and their difference from the field's mean
    feature (N x 2F): what the context head reads (a microcyte is small for its own smear)."""
    features = np.asarray(features, np.float32)
    return np.hstack([features, features - features.mean(0, keepdims=True)]) if len(features) else \
        np.zeros((0, 2 * features.shape[-1]), np.float32)


def head_logits(features: np.ndarray, info: ModelInfo) -> np.ndarray:
    """N x (types + classes) logits of one field's patches from their pooled features: the float
    heads of `settings["patch_head"]`, then for the types listed in its `context` the second stage
    (per-type logistic on `context_features`, fitted on the train patches by train_rbc export)."""
    head = info.settings["patch_head"]
    weights = _matrix(head, "weights")
    logits = np.asarray(features, np.float32) @ weights + _matrix(head, "bias")
    context = head.get("context") or {}
    if context.get("types") and len(logits):
        x = (context_features(features) - _matrix(context, "mean")) / _matrix(context, "std")
        cols = [list(info.labels).index(t) for t in context["types"]]
        logits[:, cols] = x @ _matrix(context, "weights") + _matrix(context, "bias")
    return logits


_MATRICES: dict[tuple[int, str], tuple[dict, np.ndarray]] = {}


def _matrix(owner: dict, key: str) -> np.ndarray:
    """owner[key] as float32, converted once per sidecar dict."""
    cached = _MATRICES.get((id(owner), key))
    if cached is None or cached[0] is not owner:
        cached = _MATRICES[(id(owner), key)] = (owner, np.asarray(owner[key], np.float32))
    return cached[1]


def patch_outputs(session, patches: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, np.ndarray | None]:
    """(logits output N x (types + classes), pooled features N x F or None when the file has no
    features output or the sidecar no `patch_head`), batched as `patch_inputs` cuts them."""
    n, n_out = len(patches), len(info.labels) + len(info.settings["classes"])
    dim = int((info.settings.get("patch_head") or {}).get("features", -1))
    logits, features = [], []
    for x in patch_inputs(patches, info):
        arrays = [np.asarray(v, np.float32) for v in session.run(x).values()]
        logits.append(next((a for a in arrays if a.shape[-1] == n_out), arrays[0]).reshape(-1, n_out))
        features += [a.reshape(-1, dim) for a in arrays if a.shape[-1] == dim][:1]
    if not logits:
        return np.zeros((0, n_out), np.float32), None
    return np.concatenate(logits)[:n], np.concatenate(features)[:n] if len(features) == len(logits) else None


def classify_patches(session, patches: np.ndarray, info: ModelInfo) -> np.ndarray:
    """N x (types + classes) logits of one field's patches: the float heads on the pooled features
    where the model has them (`head_logits`; INT8: the features are quantized ~10x finer than the
    one int8 logits tensor, whose step is ~0.2 logit), else the model's logits output."""
    logits, features = patch_outputs(session, patches, info)
    return head_logits(features, info) if features is not None else logits


def find_centres(session, image: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, np.ndarray]:
    """Red-cell centres (N x 2, input-image pixels) and their scores, from the sidecar's detector."""
    from edgecell.pipeline import predict

    found, _ = predict(detector_for(session, info), image)
    rbc = found.classes == found.labels.index("RBC") if "RBC" in found.labels else np.ones(len(found.classes), bool)
    boxes, scores = found.boxes[rbc], found.scores[rbc]
    return (boxes[:, :2] + boxes[:, 2:]) / 2, scores


def model_input(session, image: np.ndarray, info: ModelInfo) -> np.ndarray:
    """The first patch batch of `image` (a padded batch where no cell is found): what one bare call
    of the patch model sees, for the benchmarks."""
    from edgecell.tasks.cells import as_rgb

    image = as_rgb(image)
    centres, _ = find_centres(session, image, info)
    crop, size = int(info.settings.get("patch_crop", PATCH_CROP)), int(info.input_size[0])
    patches = cut_patches(image, centres, crop=crop, size=size)
    if not len(patches):
        patches = np.full((1, size, size, 3), PAD_VALUE, np.uint8)
    return next(patch_inputs(patches, info))


def infer(session, tensor: np.ndarray, info: ModelInfo, *, context: RbcContext | None = None,
          blood_counts: bool = False, **_: Any) -> dict:
    """Detect centres, cut a patch around each, classify the patches (batched); with `blood_counts`
    also run the shipped cell counter on the same decoded field (one run: counts and morphology)."""
    check_info(info)
    image = tensor if context is None else context.image
    t0 = time.perf_counter()
    centres, scores = find_centres(session, image, info)
    t1 = time.perf_counter()
    crop = int(info.settings.get("patch_crop", PATCH_CROP))
    patches = cut_patches(image, centres, crop=crop, size=int(info.input_size[0]))
    logits = classify_patches(session, patches, info)
    t2 = time.perf_counter()
    if context is not None:
        context.stage_ms = {"detect_ms": (t1 - t0) * 1e3, "patches_ms": (t2 - t1) * 1e3}
    outputs = {"centres": centres.astype(np.float32), "scores": scores.astype(np.float32), "logits": logits}
    if blood_counts:
        from edgecell.pipeline import predict

        outputs["blood_counts"] = predict(counter_for(session, info), image)[0]
    return outputs


def postprocess(outputs: dict[str, np.ndarray], context: RbcContext | None, info: ModelInfo,
                **_: Any) -> RbcResult:
    """Per-cell types, counts, the trees' abnormal probability per patch and the smear flag."""
    check_info(info)
    names, classes = list(info.labels), list(info.settings["classes"])
    abnormal_types = list(info.settings.get("abnormal_types", []))
    logits = np.asarray(outputs["logits"], np.float32).reshape(len(outputs["centres"]), len(names) + len(classes))
    probs = sigmoid(logits[:, : len(names)])
    own = softmax(logits[:, len(names) :]) if len(logits) else np.zeros((0, len(classes)), np.float32)
    abnormal = trees_probability(probs, info.settings["abnormal_trees"]) if len(probs) else np.zeros(0, np.float32)
    threshold = float(info.settings.get("abnormal_threshold", 0.5))
    image_size = context.image_size if context is not None else (0, 0)
    counts = {name: 0 for name in classes}
    check = None
    if context is not None:
        check = check_smear(context.image, len(outputs["centres"]), cell_radius(info), info.settings.get("smear_check"))
        if not check.familiar:  # say so; report no cells rather than invented ones
            return RbcResult([], counts, False, 0.0, f"not assessed: {check.reason}", abnormal_types,
                             tuple(image_size), True, check.reason, check=check,
                             blood_counts=outputs.get("blood_counts"))
    present = probs >= type_thresholds(info)
    cells = [RbcCell(float(c[0]), float(c[1]), float(s), dict(zip(names, map(float, p))),
                     [n for n, yes in zip(names, here) if yes], classes[int(o.argmax())], float(o.max()), float(a))
             for c, s, p, here, o, a in zip(outputs["centres"], outputs["scores"], probs, present, own, abnormal)]
    for c in cells:
        counts[c.cell_type] += 1
    flagged = abnormal >= threshold
    score = smear_score(abnormal, info)
    min_fraction = float(info.settings.get("smear_min_fraction", 0.1))
    is_abnormal = bool(len(cells) and score >= min_fraction)
    borderline = bool(len(cells) and abs(score - min_fraction) < float(info.settings.get("smear_borderline", 0.0)))
    seen = {t: counts[t] for t in abnormal_types if counts.get(t)}
    if not cells:
        reason = "no red cells found"
    else:
        listed = ", ".join(f"{t} {n}" for t, n in sorted(seen.items(), key=lambda kv: -kv[1])) or "none by type"
        what = ("mean abnormal probability" if info.settings.get("smear_score") == "mean_probability"
                else "share of cells in abnormal patches")
        reason = (f"{int(flagged.sum())} of {len(cells)} cells in abnormal patches; {what} {score:.1%} "
                  f"({'>=' if is_abnormal else '<'} {min_fraction:.1%}"
                  + (f", within {float(info.settings['smear_borderline']):.1%} of it: borderline" if borderline else "")
                  + f"); abnormal types: {listed}")
    return RbcResult(cells, counts, is_abnormal, score, reason, abnormal_types, tuple(image_size),
                     abnormal_threshold=threshold, check=check, borderline=borderline,
                     blood_counts=outputs.get("blood_counts"))


def smear_score(abnormal: np.ndarray, info: ModelInfo) -> float:
    """The smear's abnormal score from its cells' abnormal probabilities: `settings["smear_score"]`
    "mean_probability" (their mean: a small shift of every output moves it a little, never a whole
    cell's worth), else the fraction of cells at or above `abnormal_threshold` (the first rule)."""
    abnormal = np.asarray(abnormal, np.float64)
    if not len(abnormal):
        return 0.0
    if info.settings.get("smear_score") != "mean_probability":
        abnormal = abnormal >= float(info.settings.get("abnormal_threshold", 0.5))
    return float(abnormal.mean()) + smear_offset(info)


#: sidecar setting of an INT8 file: added to its smear score (see `smear_offset`)
INT8_SMEAR_OFFSET = "int8_smear_offset"


def smear_offset(info: ModelInfo) -> float:
    """The INT8 file's smear-score correction (`int8_smear_offset`; 0 for FP32 files and files
    without it).

    Why: the INT8 patch model raises a field's mean abnormal probability by about 0.014 against the
    same network in float (a bias, not only noise: the backbone's INT8 error is correlated within a
    field), so with one cut the INT8 file flagged more fields than its float twin. The exporter
    measures the shift against the float model on unlabelled training fields
    (`edgecell.convert.train_rbc int8-offset`) and stores its negative here: the network bytes stay
    as they are, and every file sharing the sidecar (the .tflite and its OpenVINO / ONNX siblings)
    gives FP32-like scores. Only INT8 files carry it; an FP32 file's value is ignored."""
    if info.precision != "int8":
        return 0.0
    return float(info.settings.get(INT8_SMEAR_OFFSET, 0.0))


# ----------------------------------------------------------------------------- overlay

NORMAL_COLOUR = (60, 170, 60)
ABNORMAL_COLOUR = (220, 30, 30)


def annotate(image: np.ndarray, result: RbcResult) -> np.ndarray:
    """A circle per cell (green; red with its type when its patch is abnormal), the flag on top."""
    from edgecell.tasks.cells import as_rgb

    out = as_rgb(image).copy()
    scale = max(out.shape[:2]) / 640.0
    thick = max(1, round(scale))
    radius = max(3, int(round(CELL_RADIUS * scale * 0.9)))
    for c in result.cells:
        bad = c.abnormal >= result.abnormal_threshold
        centre = (int(round(c.x)), int(round(c.y)))
        cv2.circle(out, centre, radius, ABNORMAL_COLOUR if bad else NORMAL_COLOUR, thick + bad, cv2.LINE_AA)
        if bad:
            label = c.cell_type if c.cell_type in result.abnormal_types else max(
                (t for t in result.abnormal_types if t in c.types), key=lambda t: c.types[t], default="abnormal")
            cv2.putText(out, label, (centre[0] - radius, centre[1] - radius - 2), cv2.FONT_HERSHEY_SIMPLEX,
                        0.4 * scale, ABNORMAL_COLOUR, thick, cv2.LINE_AA)
    banner = result.summary()
    cv2.rectangle(out, (0, 0), (out.shape[1], int(24 * scale)), (0, 0, 0), -1)
    cv2.putText(out, banner[:110], (6, int(17 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale,
                ABNORMAL_COLOUR if result.abnormal else (255, 255, 255), thick, cv2.LINE_AA)
    return out


class RbcTask(Task):
    """Red-cell morphology: the module's functions behind the task contract."""

    name = TASK
    samples = "chula"

    def companion_files(self, sidecar: Path, meta: dict[str, Any]) -> list[Path]:
        """Also the centre detector `detector_for` loads (`<detector>_<precision>` in every format
        shipped beside the model, with its sidecar): without it an rbc bundle cannot run at all."""
        out = super().companion_files(sidecar, meta)
        detector = (meta.get("settings") or {}).get("detector")
        for name in (detector, COUNTER):  # the counter too: `--counts` must work in an offline bundle
            if is_file_name(name):
                stem = f"{name}_{meta.get('precision', 'int8')}"
                out += sorted(p for p in sidecar.parent.glob(f"{stem}.*") if p.is_file() and p not in out)
        return out

    def preprocess(self, image: np.ndarray, info: ModelInfo) -> tuple[np.ndarray, RbcContext]:
        return preprocess(image, info)

    def infer(self, session, tensor: np.ndarray, info: ModelInfo, *, context: Any = None, **options: Any) -> dict:
        return infer(session, tensor, info, context=context, **options)

    def model_input(self, session, image: np.ndarray, info: ModelInfo) -> np.ndarray:
        return model_input(session, image, info)

    def postprocess(self, outputs: dict, context: Any, info: ModelInfo, **options: Any) -> RbcResult:
        return postprocess(outputs, context, info, **options)

    def annotate(self, image: np.ndarray, result: RbcResult) -> np.ndarray:
        return annotate(image, result)

    def evaluate(self, model_paths, data, out, *, split, backend) -> dict:
        from edgecell.calibration import dataset_dir
        from edgecell.evaluation.rbc import evaluate_rbc

        return evaluate_rbc(model_paths, dataset_dir("chula_rbc12", data), out, backend=backend, split=split or "test")

