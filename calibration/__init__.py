"""Datasets for training, calibration and evaluation (training side).

Data is read where it lies, never copied into the repo: pass `--data DIR`, or set EDGECELL_DATA,
or keep the project's `shared/data` folder beside the checkout and work from the checkout (as CI does).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgecell.errors import EdgecellError
from edgecell.resources import source_checkout


#: what a data root holds, for the error message
_EXPECTED = "the folder that holds cbc_bccd_cleaned/, clothing_small_subset/, ..."


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """The folder holding the datasets (cbc_bccd_cleaned/, clothing_small_subset/, ...), as an
    absolute path (links and file lists made from it stay valid from any folder).

    Looked up in order: `explicit` (--data), $EDGECELL_DATA, `../shared/data` from the current
    folder, and `../shared/data` beside the source checkout edgecell is imported from (never
    beside site-packages). A folder given explicitly or by the variable must exist: a typo is an
    error, not a silent fall-back to another dataset."""
    for what, given in (("--data", explicit), ("EDGECELL_DATA", os.environ.get("EDGECELL_DATA"))):
        if given:
            path = Path(os.path.abspath(os.path.expanduser(given)))
            if not path.is_dir():
                raise EdgecellError(f"{what} {given}: no such folder ({path}); expected {_EXPECTED}")
            return path
    tried = ["--data (not given)", "$EDGECELL_DATA (not set)"]
    candidates = [Path.cwd().parent / "shared" / "data"]
    checkout = source_checkout()
    if checkout is not None:
        candidates.append(checkout.parent / "shared" / "data")
    for path in candidates:
        path = Path(os.path.normpath(path))
        if path.is_dir():
            return path
        tried.append(str(path))
    raise EdgecellError(f"dataset folder not found; tried {', '.join(dict.fromkeys(tried))}; pass --data DIR "
                        f"or set EDGECELL_DATA to {_EXPECTED}")


def dataset_dir(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """`data_root()/name`, or `explicit` itself if it already is that dataset folder (absolute)."""
    if explicit and (Path(explicit).name == name) and Path(explicit).is_dir():
        return Path(os.path.abspath(os.path.expanduser(explicit)))
    path = data_root(explicit) / name
    if not path.is_dir():
        raise EdgecellError(f"dataset {name!r} not found under {path.parent}; pass --data DIR")
    return path
