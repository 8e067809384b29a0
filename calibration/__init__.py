"""Datasets for training, calibration and evaluation (training side).

Data is read where it lies, never copied into the repo: pass `--data DIR`, or set EDGECELL_DATA,
or keep the project's `shared/data` folder beside the checkout (as in CI).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgecell.errors import EdgecellError


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The folder holding the datasets (cbc_bccd_cleaned/, clothing_small_subset/, ...)."""
    candidates = [explicit, os.environ.get("EDGECELL_DATA")]
    repo = Path(__file__).resolve().parent.parent
    candidates.append(repo.parent / "shared" / "data")
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    raise EdgecellError("dataset folder not found; pass --data DIR or set EDGECELL_DATA to the folder "
                        "that holds cbc_bccd_cleaned/, clothing_small_subset/, ...")


def dataset_dir(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """`data_root()/name`, or `explicit` itself if it already is that dataset folder."""
    if explicit and (Path(explicit).name == name) and Path(explicit).is_dir():
        return Path(explicit)
    path = data_root(explicit) / name
    if not path.is_dir():
        raise EdgecellError(f"dataset {name!r} not found under {path.parent}; pass --data DIR")
    return path
