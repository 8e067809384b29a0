"""Blood-cell detection data beyond the CBC/BCCD labels: complete boxes (TXL-PBC) and a second
lab's centre points (Chula RBC-12), for training and evaluating the cells counter.

* `load_txl(data, split)`: TXL-PBC's re-annotation of the BCCD smears (`txl_bccd_relabel/`), every
  cell boxed, including overlapping and edge-cut ones (an edge-cut cell is boxed by its visible part;
  the smallest such boxes are ~24 px of a ~100 px cell). Returned as `voc.Annotation`s in the
  cells model's class order (RBC, WBC, Platelets; TXL's own order is WBC, RBC, Platelets), with the
  images of `cbc_bccd_cleaned/` (pixel-identical, see its SOURCE.md). 157 Training + 60 Testing.
* `load_chula_points(data)`: Chula RBC-12 (`chula_rbc12/`): a centre point on every labelled red
  cell (13 morphology classes, all red cells), 640x480 at 1000x, another stain and camera.
* `chula_split(stems)`: the fixed split of Chula images into train and held-out, by image (the
  cells of one image stay together). Deterministic from the file stem alone (SHA-256), so it does
  not depend on which files are present or their order: an image is held out when the first byte
  of sha256("chula-rbc12:" + stem) is below 0.2 x 256 (about 1 in 5).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecell.calibration import dataset_dir
from edgecell.calibration.voc import CELL_CLASSES, Annotation
from edgecell.calibration.yolo_txt import parse_yolo_txt
from edgecell.errors import EdgecellError

#: TXL-PBC class index -> index in CELL_CLASSES (TXL: 0 WBC, 1 RBC, 2 Platelets)
TXL_TO_CELLS = np.array([CELL_CLASSES.index("WBC"), CELL_CLASSES.index("RBC"), CELL_CLASSES.index("Platelets")])
#: share of Chula images held out of training (by image)
CHULA_HOLDOUT_FRACTION = 0.2
_SPLIT_SALT = "chula-rbc12:"


def load_txl(split: str, data: str | Path | None = None) -> list[Annotation]:
    """TXL complete labels of `split` ("Training": 157 smears, "Testing": 60), sorted by stem."""
    txl = dataset_dir("txl_bccd_relabel", data)
    cbc = dataset_dir("cbc_bccd_cleaned", data if data is None or Path(data).name != "txl_bccd_relabel"
                      else Path(data).parent)
    files = sorted((txl / split).glob("*.txt"))
    if not files:
        raise EdgecellError(f"{txl / split}: no TXL label files")
    out = []
    for f in files:
        boxes, labels = parse_yolo_txt(f, 640, 480, num_classes=3)
        out.append(Annotation(cbc / split / "Images" / f"{f.stem}.jpg", 640, 480, boxes, TXL_TO_CELLS[labels]))
    return out


@dataclass
class PointAnnotation:
    """One image's red-cell centre points (x, y image pixels) and their morphology classes."""

    image_path: Path
    points: np.ndarray  # (N, 2) float32
    classes: np.ndarray  # (N,) int64, Chula morphology class (all are red cells)

    @property
    def stem(self) -> str:
        return self.image_path.stem

    def typical_diameter(self, default: float = 50.0) -> float:
        """A cell diameter estimate from the points themselves: the median nearest-neighbour
        distance (smeared red cells mostly touch their nearest neighbour)."""
        if len(self.points) < 3:
            return default
        d = np.linalg.norm(self.points[:, None] - self.points[None], axis=2)
        np.fill_diagonal(d, np.inf)
        return float(np.median(d.min(1)))


def load_chula_points(data: str | Path | None = None) -> list[PointAnnotation]:
    """Every labelled Chula RBC-12 image, sorted by its number."""
    root = dataset_dir("chula_rbc12", data)
    out = []
    for f in sorted((root / "labels").glob("*.txt"), key=lambda p: (len(p.stem), p.stem)):
        rows = [line.split() for line in f.read_text().splitlines() if line.strip()]
        pts = np.array([[float(r[0]), float(r[1])] for r in rows], np.float32).reshape(-1, 2)
        cls = np.array([int(r[2]) for r in rows], np.int64)
        image = root / "images" / f"{f.stem}.jpg"
        if image.is_file():
            out.append(PointAnnotation(image, pts, cls))
    if not out:
        raise EdgecellError(f"{root}: no labelled Chula images")
    return out


def chula_is_held_out(stem: str, fraction: float = CHULA_HOLDOUT_FRACTION) -> bool:
    """True for the images kept out of training (see the module docstring)."""
    return hashlib.sha256((_SPLIT_SALT + stem).encode()).digest()[0] < fraction * 256


def chula_split(items: list, fraction: float = CHULA_HOLDOUT_FRACTION) -> tuple[list, list]:
    """(train, held_out) of PointAnnotations (or stems), by `chula_is_held_out`."""
    def stem(x):
        return x if isinstance(x, str) else x.stem

    train = [x for x in items if not chula_is_held_out(stem(x), fraction)]
    held = [x for x in items if chula_is_held_out(stem(x), fraction)]
    return train, held


#: area of a typical Chula red cell in image pixels (diameter ~45 px: the median nearest-neighbour
#: distance on the fully labelled images)
CHULA_CELL_DIAMETER = 45.0
#: an image's labels count as complete when the labelled cells cover at least this share of the
#: stained area (see `label_coverage`)
COMPLETE_COVERAGE = 0.65


def label_coverage(points: PointAnnotation, image: np.ndarray | None = None,
                   diameter: float = CHULA_CELL_DIAMETER) -> float:
    """Labelled cells x typical cell area / stained area (Otsu on the blurred green channel).

    Chula RBC-12 labels the cells of interest for morphology, not every red cell: on many fields
    4-8 of ~60 visible cells carry a point. About 1.0 when every cell is labelled, far below when
    few are. Used to keep the negatives of sparsely labelled images out of the loss and to report
    counting against the fully labelled images separately."""
    import cv2

    if image is None:
        from edgecell.images import decode_image

        image = decode_image(points.image_path)
    green = cv2.GaussianBlur(np.ascontiguousarray(image[:, :, 1]), (5, 5), 0)
    _, mask = cv2.threshold(green, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    stained = max(float((mask > 0).sum()), 1.0)
    return float(len(points.points) * np.pi * (diameter / 2) ** 2 / stained)


def point_boxes(points: np.ndarray, diameter: float = CHULA_CELL_DIAMETER) -> np.ndarray:
    """Square boxes of a typical cell around centre points (for heatmap targets and counting)."""
    p = np.asarray(points, np.float32).reshape(-1, 2)
    r = diameter / 2
    return np.concatenate([p - r, p + r], 1).astype(np.float32)
