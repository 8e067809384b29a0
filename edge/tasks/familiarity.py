"""The unfamiliar-image check shared by every task whose model has a pooled-feature output (cells,
products): the squared Mahalanobis distance of an image's pooled features to the training images'
mean, against a threshold chosen on the training side. Why: a model answers every image with one
of its classes; a blood smear given to the product classifier would otherwise be a confident "hat".
The statistics live in the sidecar (`settings["unfamiliar"]`: "mean" (K,), or one mean per class
(C x K: the distance to the nearest, Lee et al. 2018), "precision" (K x K), "threshold", and an
optional "transform" ("sqrt") applied to the features first; made by
`edgecell.convert.unfamiliar.unfamiliar_stats`). The two arrays may instead sit in a .npz beside
the sidecar, named by `settings["unfamiliar_arrays"]` (as the X-ray head's `xray_head.npz`; a bundle
carries it as a companion file): the product classifier's 256 x 256 precision made its sidecar 2.1 MB
of JSON, about 30 ms of parsing at every cold start, where the .npz loads in about 2 ms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecell.errors import ModelError
from edgecell.modelinfo import ModelInfo

#: the statistics' arrays, which `settings["unfamiliar_arrays"]` may move out of the sidecar
ARRAY_KEYS = ("mean", "precision")


def features_of(outputs: dict[str, np.ndarray] | np.ndarray, info: ModelInfo) -> np.ndarray | None:
    """The pooled feature vector (K,) of a model with a features output (by the name in
    `settings["features_output"]`, else the one flat output), or None."""
    if not isinstance(outputs, dict):
        return None
    name = info.settings.get("features_output")
    vec = outputs.get(name) if name else None
    if vec is None:
        flat = [v for k, v in outputs.items() if not k.startswith("__") and np.ndim(v) == 2]
        vec = flat[0] if len(flat) == 1 else None
    return None if vec is None else np.asarray(vec, np.float32).reshape(-1)


def mahalanobis2(features: np.ndarray, stats: dict) -> float:
    """Squared Mahalanobis distance of pooled features to the training images' mean (`stats`:
    "mean" (K,) or per-class means (C x K: the nearest counts), "precision" (K x K), from the
    training side's `unfamiliar_stats`). One C x K by K x K product (no factorisation at load:
    a first Cholesky call costs numpy ~0.1-0.2 s, which a cold start would pay)."""
    means, precision = _stats_arrays(stats)
    d = np.atleast_2d(np.asarray(features, np.float64) - means)
    return float(((d @ precision) * d).sum(axis=-1).min())


_stats_cache: dict[int, tuple[dict, np.ndarray, np.ndarray]] = {}


def _stats_arrays(stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """The sidecar's lists as arrays, converted once per statistics dict (not per frame), or the
    arrays `load_arrays` read from the .npz for it."""
    hit = _stats_cache.get(id(stats))
    if hit is None or hit[0] is not stats:
        if not all(k in stats for k in ARRAY_KEYS):
            raise ModelError("unfamiliar-image statistics without their arrays: the sidecar names them in a "
                             "file (settings.unfamiliar_arrays) that only load_model reads")
        hit = _stats_cache[id(stats)] = (stats, np.asarray(stats["mean"], np.float64),
                                         np.asarray(stats["precision"], np.float64))
    return hit[1], hit[2]


def load_arrays(info: ModelInfo, folder: str | Path) -> None:
    """At model load: the statistics' arrays from the .npz the sidecar names
    (`settings["unfamiliar_arrays"]`, in the model's folder), as float64, the numbers the sidecar's
    JSON lists would give. Nothing to do for statistics kept in the sidecar; a named file that is
    missing or incomplete refuses the model (its unfamiliar flag would otherwise be silently off)."""
    stats, name = info.settings.get("unfamiliar"), info.settings.get("unfamiliar_arrays")
    if not stats or not name:
        return
    path = Path(folder) / str(name)
    if not path.is_file():
        raise ModelError(f"{path}: the unfamiliar-image statistics named by the model's sidecar are missing; "
                         "the file ships beside the model (copy it with the model)")
    with np.load(path) as data:
        missing = [k for k in ARRAY_KEYS if k not in data.files]
        if missing:
            raise ModelError(f"{path}: not an unfamiliar-statistics file (missing {', '.join(missing)})")
        _stats_cache[id(stats)] = (stats, data["mean"].astype(np.float64), data["precision"].astype(np.float64))


#: element-wise maps of the pooled features before the distance (`stats["transform"]`): the square
#: root makes the skewed, non-negative ReLU activations closer to Gaussian, which the distance assumes
TRANSFORMS = {"sqrt": lambda x: np.sqrt(np.maximum(x, 0.0))}


def transformed(features: np.ndarray, stats: dict) -> np.ndarray:
    name = stats.get("transform")
    return TRANSFORMS[name](features) if name else features


def unfamiliar_score(outputs: dict[str, np.ndarray], info: ModelInfo) -> tuple[float, float] | None:
    """(score, threshold) of this image, or None when the model carries no statistics or no
    features output (then nothing can be said, and the result leaves its score None)."""
    stats = info.settings.get("unfamiliar")
    feats = features_of(outputs, info) if stats else None
    if feats is None:
        return None
    return mahalanobis2(transformed(feats, stats), stats), float(stats["threshold"])


def flag_unfamiliar(result, outputs: dict[str, np.ndarray], info: ModelInfo, message: str) -> bool:
    """Set `result.unfamiliar_score`, `result.unfamiliar` and, when unfamiliar, `result.message`
    (`message` formatted with the score and threshold) from `unfamiliar_score`; True when the image
    is unfamiliar. A model without statistics or features output leaves the result as it is."""
    scored = unfamiliar_score(outputs, info)
    if scored is None:
        return False
    result.unfamiliar_score, threshold = scored
    result.unfamiliar = result.unfamiliar_score > threshold
    if result.unfamiliar:
        result.message = message.format(score=result.unfamiliar_score, threshold=threshold)
    return result.unfamiliar
