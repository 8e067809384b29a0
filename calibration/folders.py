"""Class-folder datasets: `DATASET/<split>/<class>/<image>` (clothing-dataset-small, and the X-ray
sets laid out the same way).

`list_split(dataset_dir, "train")` -> sorted list of `(path, label_index)`, with the class names
taken from the folder names (sorted, so the order is stable on every machine). `class_names`
gives that order; pass `classes=` to fix it (e.g. the order a shipped model predicts) and to
refuse a split with an unknown or missing class folder. `stratified_split` is the seeded
"validation split 0.2 of train" used for early stopping.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgecell.errors import EdgecellError
from edgecell.images import IMAGE_SUFFIXES

Sample = tuple[Path, int]


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def split_dir(dataset_dir: str | os.PathLike, split: str) -> Path:
    path = Path(dataset_dir) / split
    if not path.is_dir():
        have = sorted(p.name for p in Path(dataset_dir).iterdir() if p.is_dir()) if Path(dataset_dir).is_dir() else []
        raise EdgecellError(f"{path}: no such split folder; {Path(dataset_dir)} has "
                            f"{', '.join(have) or 'no sub-folders'}")
    return path


def class_names(dataset_dir: str | os.PathLike, split: str = "train") -> list[str]:
    """Class names = the sub-folder names of `split` that hold at least one image, sorted."""
    root = split_dir(dataset_dir, split)
    names = sorted(p.name for p in root.iterdir()
                   if p.is_dir() and not p.name.startswith(".") and any(_is_image(f) for f in p.iterdir()))
    if not names:
        raise EdgecellError(f"{root}: no class folders with images (expected {root}/<class>/<image>.jpg)")
    return names


def list_split(dataset_dir: str | os.PathLike, split: str,
               classes: Sequence[str] | None = None) -> list[Sample]:
    """All images of one split as `(path, label_index)`, sorted by class then file name.

    Several splits may be joined with "+" ("validation+test"). With `classes` given, the label
    index is the position in `classes`, and a class folder not in `classes` is an error (a model
    cannot be evaluated on a class it does not know); a class with no folder in this split is
    allowed (it simply has no samples).
    """
    if "+" in split:
        out: list[Sample] = []
        names = list(classes) if classes is not None else class_names(dataset_dir, split.split("+")[0])
        for part in split.split("+"):
            out.extend(list_split(dataset_dir, part, names))
        return sorted(out, key=lambda s: (s[1], str(s[0])))
    root = split_dir(dataset_dir, split)
    present = class_names(dataset_dir, split)
    names = list(classes) if classes is not None else present
    unknown = sorted(set(present) - set(names))
    if unknown:
        raise EdgecellError(f"{root}: class folder(s) {', '.join(unknown)} not among the model's classes "
                            f"({', '.join(names)})")
    samples = []
    for index, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            continue
        samples.extend((f, index) for f in sorted(folder.iterdir(), key=lambda p: p.name) if _is_image(f))
    return samples


def class_counts(samples: Iterable[Sample], classes: Sequence[str]) -> dict[str, int]:
    counts = Counter(label for _, label in samples)
    return {name: int(counts.get(i, 0)) for i, name in enumerate(classes)}


def stratified_split(samples: Sequence[Sample], fraction: float = 0.2,
                     seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """(fit, holdout): `fraction` of each class, chosen with a fixed seed, goes to holdout.

    Per class so that a small class (hat: 123 images) keeps its share; both lists stay sorted.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    fit: list[Sample] = []
    hold: list[Sample] = []
    labels = sorted({label for _, label in samples})
    for label in labels:
        members = [s for s in samples if s[1] == label]
        n_hold = int(round(len(members) * fraction))
        chosen = set(rng.permutation(len(members))[:n_hold].tolist())
        for i, s in enumerate(members):
            (hold if i in chosen else fit).append(s)
    key = lambda s: (s[1], str(s[0]))  # noqa: E731
    return sorted(fit, key=key), sorted(hold, key=key)


def per_class_sample(samples: Sequence[Sample], total: int, seed: int = 0) -> list[Sample]:
    """About `total` samples spread evenly over the classes (seeded): calibration sets."""
    labels = sorted({label for _, label in samples})
    if not labels:
        return []
    per = max(1, total // len(labels))
    rng = np.random.default_rng(seed)
    out: list[Sample] = []
    for label in labels:
        members = [s for s in samples if s[1] == label]
        idx = rng.permutation(len(members))[:per]
        out.extend(members[i] for i in sorted(idx.tolist()))
    return out


def folder_label_map(labels: Sequence[str], settings: dict, folder_to_label: dict[str, str] | None) -> dict[str, int]:
    """dataset folder name -> model output index."""
    index = {label: i for i, label in enumerate(labels)}
    if folder_to_label:
        mapping = folder_to_label
    elif settings.get("dataset_folders") and len(settings["dataset_folders"]) == len(labels):
        mapping = dict(zip(settings["dataset_folders"], labels))
    else:
        mapping = {label: label for label in labels}
    bad = {f: l for f, l in mapping.items() if l not in index}
    if bad:
        raise EdgecellError(f"folder->label map names labels the model does not have: {bad}; "
                            f"model labels: {', '.join(labels)}")
    return {folder: index[label] for folder, label in mapping.items()}
