"""The data a utility gate is trained and evaluated on: the labels CSV of degraded copies
(`edgecell.convert.gate_labels` writes it), the folder its image paths are relative to, and the
unlabelled degraded copies of a task model's own split. Dataset helpers live here, below both the
training scripts and the evaluation, so that neither imports the other."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

DATASET = "clothing_small_subset"


def read_labels(path: str | os.PathLike) -> list[dict]:
    """Rows of a labels CSV; `label` becomes 1 / 0 / None, numbers become floats/ints."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            r["label"] = int(r["label"]) if r.get("label", "") != "" else None
            r["truth"] = int(r["truth"])
            r["seed"] = int(r["seed"])
            rows.append(r)
    return rows


def gate_data_dir(task: str, dataset: str = DATASET, data: str | os.PathLike | None = None) -> Path:
    """The folder a labels CSV's `image` paths are relative to: the data root for X-ray (its
    images come from two datasets), else the dataset folder."""
    from edgecell.calibration import data_root, dataset_dir

    return data_root(data) if task == "xray" else dataset_dir(dataset, data)


def list_samples(task: str, base: Path, splits: str, labels: Sequence[str], settings: dict,
                 split_list: str | os.PathLike | None = None) -> list[tuple[Path, int]]:
    """(image path, ground-truth index) of the images to label, per task model kind.

    products/classify: the dataset's split folders (`splits`, "+"-joined). xray: the seeded split
    of `edgecell.calibration.xray` (read from `split_list`, else rebuilt, ~1 min), `splits` naming
    its parts ("train": never the held-out images the X-ray model card reports)."""
    if task == "xray":
        from edgecell.calibration import xray

        if split_list:
            items = xray.read_list(split_list, base)
        else:
            items, _, _ = xray.build(base, seed=0)
        wanted = set(splits.split("+"))
        return [(it.path, list(labels).index(it.label)) for it in sorted(items, key=lambda i: i.rel)
                if it.split in wanted]
    from edgecell.calibration.folders import list_split
    from edgecell.calibration.folders import folder_label_map

    fmap = folder_label_map(labels, settings, None)
    return list_split(base, splits, sorted(fmap, key=fmap.get))


def degraded_rows(task: str, base: Path, splits: str, labels: Sequence[str], settings: dict, *,
                  split_list: str | os.PathLike | None = None, specs: Sequence[str] | None = None,
                  limit: int = 0, seed: int = 0) -> list[dict]:
    """Unlabelled rows (image, truth, degradation, seed, label None) of every degraded copy of a
    split's images: to measure a task model's accuracy with and without a gate on images it was
    never trained on (X-ray: its 601 held-out images) without labelling them. `limit`: a seeded
    sample of that many images."""
    from edgecell.calibration import degrade

    samples = list_samples(task, base, splits, labels, settings, split_list)
    if limit:
        rng = np.random.default_rng(seed)
        samples = [samples[i] for i in sorted(rng.permutation(len(samples))[:limit].tolist())]
    rows = []
    for path, truth in samples:
        key = path.relative_to(base).as_posix()
        for spec in specs or degrade.default_specs():
            rows.append({"image": key, "folder": path.parent.name, "truth": int(truth), "degradation": spec,
                         "seed": degrade.sample_seed(key, spec, seed), "label": None})
    return rows
