"""Chula RBC-12 smears (`chula_rbc12/`, read its SOURCE.md): 640x480 fields at 1000x, each red cell
labelled by its centre point with one of 13 classes (12 morphology types + uncategorised).

Quirks handled here, once, for every user (morphology training, the cell counter, evaluation):
- some `.jpg` files hold PNG data: images are decoded by content (`edgecell.images.decode_image`);
- a label file may be empty although its image is full of cells (53.txt, 56.txt in this copy):
  such images are *unlabelled*, not "no cells", and are left out of every split (`Smear.labelled`);
- most label files label only SOME of the cells (SOURCE.md says "not every RBC is labelled"; measured:
  in the median field the labels are ~30 % of the red cells a detector finds, in 5 % of the fields
  2-3 labels among ~100 cells). Labelled centres are real cells (good positives, fine for recall and
  for morphology), but an unlabelled place is NOT background: a detector trained on every field learns
  to score real cells low. `Smear.complete` marks the 120 fields (80 train / 17 val / 23 test) whose
  labels are at least 70 % of the centres a first detector found (`COMPLETE_STEMS`, measured once with
  the first-round rbc centre detector, score >= 0.12, trained on all train fields); train detectors
  and measure detection precision on those;
- label lines are `x y class_id` in image pixels (integers; 0 <= x < 640, 0 <= y < 480).

Split (by image, never by cell; cells of one smear stay together): each image goes to a split by a
salted SHA-256 of its file stem, `split_of(stem)`. This is deterministic across machines and library
versions, does not depend on which other images are present (images kept aside by the project, or
added later, fall into a split without moving any existing image), and is the one split every
model trained on Chula uses: about 70 % train, 10 % val, 20 % held-out test.

`python -m edgecell.calibration.chula [--data DIR]` prints images and cells per class and split.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgecell.calibration import dataset_dir
from edgecell.errors import EdgecellError
from edgecell.tasks.rbc import CELL_RADIUS

DATASET = "chula_rbc12"
# Class id -> name, in the upstream order (SOURCE.md). "burr" is the echinocyte.
CLASS_NAMES = ("normal", "macrocyte", "microcyte", "spherocyte", "target", "stomatocyte", "ovalocyte",
               "teardrop", "burr", "schistocyte", "uncategorised", "hypochromia", "elliptocyte")
UNCATEGORISED = CLASS_NAMES.index("uncategorised")
SPLITS = ("train", "val", "test")
SPLIT_SALT = "edgecell-chula-rbc12-split-v1"
SPLIT_FRACTIONS = {"test": 0.20, "val": 0.10}  # the rest is train
# A red cell's radius in these fields: the scale bar printed on some images reads 20 um over about
# 104 px (5.2 px/um) and a normal red cell is 7-8 um across (36-42 px); the median distance between
# neighbouring labelled centres is 43 px. Used for "a detection within one cell radius" and for patches.
CELL_RADIUS_PX = CELL_RADIUS  # the runtime's value (edgecell.tasks.rbc): the datasets sit above the runtime
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Fields whose labels cover >= 70 % of the cells (see the module docstring for how this was measured).
COMPLETE_STEMS = frozenset("""
1 2 3 4 6 7 8 9 11 12 13 14 16 17 19 21 22 26 27 28 29 31 32 33 34 36 37 38 39 41 42 43 44 48 64 81
82 83 94 96 97 98 99 101 102 103 106 141 198 199 222 232 233 238 239 241 242 244 246 247 248 251 252
253 254 256 257 258 259 261 262 263 264 266 267 268 271 272 274 276 277 278 279 281 282 283 284 297
298 301 302 303 304 306 307 308 309 311 312 313 314 316 317 319 322 323 326 327 328 329 331 333 373
386 387 388 389 727 733 734
""".split())


@dataclass
class Smear:
    """One labelled smear field: its image file and the labelled cell centres."""

    stem: str  # file stem, e.g. "101"; the split is a function of it
    path: Path  # the image file (decode by content: some .jpg are PNG)
    points: np.ndarray  # N x 2 float32 (x, y) in image pixels
    classes: np.ndarray  # N int64 class ids, indices into CLASS_NAMES

    @property
    def split(self) -> str:
        return split_of(self.stem)

    @property
    def complete(self) -> bool:
        """Labels cover (nearly) every cell of the field: usable as detection ground truth."""
        return self.stem in COMPLETE_STEMS

    @property
    def labelled(self) -> bool:
        """False for an empty label file (an unlabelled field, not an empty one)."""
        return len(self.classes) > 0

    def load(self) -> np.ndarray:
        """The field as H x W x 3 uint8 RGB."""
        from edgecell.images import decode_image

        return decode_image(self.path)


def split_of(stem: str) -> str:
    """"train", "val" or "test" for an image, from a salted SHA-256 of its file stem alone."""
    digest = hashlib.sha256(f"{SPLIT_SALT}:{stem}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    if u < SPLIT_FRACTIONS["test"]:
        return "test"
    if u < SPLIT_FRACTIONS["test"] + SPLIT_FRACTIONS["val"]:
        return "val"
    return "train"


def parse_labels(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """`x y class_id` lines -> (N x 2 float32 points, N int64 class ids). Empty file -> N = 0."""
    path = Path(path)
    points, classes = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise EdgecellError(f"{path}:{n}: expected 'x y class_id', got {line.strip()!r}")
        try:
            x, y, cls = float(parts[0]), float(parts[1]), int(float(parts[2]))
        except ValueError:
            raise EdgecellError(f"{path}:{n}: not numbers: {line.strip()!r}") from None
        if not 0 <= cls < len(CLASS_NAMES):
            raise EdgecellError(f"{path}:{n}: class {cls} out of range 0..{len(CLASS_NAMES) - 1}")
        points.append((x, y))
        classes.append(cls)
    return np.asarray(points, np.float32).reshape(-1, 2), np.asarray(classes, np.int64)


def _stem_key(stem: str) -> tuple:
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def list_smears(data: str | os.PathLike | None = None, split: str | Iterable[str] | None = None,
                *, include_unlabelled: bool = False) -> list[Smear]:
    """Every smear with a label file, in numeric file order; `split` ("train", "val", "test", or
    several) keeps those splits. Unlabelled fields (empty label file) are left out unless asked for."""
    root = dataset_dir(DATASET, data)
    wanted = None if split is None else ({split} if isinstance(split, str) else set(split))
    if wanted is not None and not wanted <= set(SPLITS):
        raise EdgecellError(f"unknown split {sorted(wanted - set(SPLITS))}; expected {', '.join(SPLITS)}")
    images = {p.stem: p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    smears = []
    for label_file in sorted((root / "labels").glob("*.txt"), key=lambda p: _stem_key(p.stem)):
        if label_file.stem not in images:
            raise EdgecellError(f"{label_file}: no image {label_file.stem}.jpg beside it in {root / 'images'}")
        points, classes = parse_labels(label_file)
        smear = Smear(label_file.stem, images[label_file.stem], points, classes)
        if (smear.labelled or include_unlabelled) and (wanted is None or smear.split in wanted):
            smears.append(smear)
    return smears


def class_counts(smears: Sequence[Smear]) -> dict[str, int]:
    """Cells per class name over the given smears (every class listed, zeros included)."""
    counts = np.zeros(len(CLASS_NAMES), np.int64)
    for s in smears:
        counts += np.bincount(s.classes, minlength=len(CLASS_NAMES))
    return dict(zip(CLASS_NAMES, counts.tolist()))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Chula RBC-12: images and cells per class in each split.")
    parser.add_argument("--data", help="folder holding chula_rbc12/ (default: EDGECELL_DATA or ../shared/data)")
    args = parser.parse_args(argv)
    every = list_smears(args.data, include_unlabelled=True)
    unlabelled = [s.stem for s in every if not s.labelled]
    print(f"{len(every)} label files; unlabelled (left out): {', '.join(unlabelled) or 'none'}")
    rows = {sp: [s for s in every if s.labelled and s.split == sp] for sp in SPLITS}
    print(f"{'class':14s}" + "".join(f"{sp:>8s}" for sp in SPLITS))
    print(f"{'images':14s}" + "".join(f"{len(rows[sp]):8d}" for sp in SPLITS))
    print(f"{'  complete':14s}" + "".join(f"{sum(s.complete for s in rows[sp]):8d}" for sp in SPLITS))
    counts = {sp: class_counts(rows[sp]) for sp in SPLITS}
    for name in CLASS_NAMES:
        print(f"{name:14s}" + "".join(f"{counts[sp][name]:8d}" for sp in SPLITS))


if __name__ == "__main__":
    main()
