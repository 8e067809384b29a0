"""Pascal VOC XML annotations (the BCCD / CBC blood-cell dataset format).

`parse_voc(xml)` -> `Annotation` with N x 4 float32 boxes (x1, y1, x2, y2, image pixels) and
N int labels (index into `classes`). Zero-area boxes (BCCD has two: a point "RBC" in
Training/BloodImage_00338 and Testing/BloodImage_00343) are dropped, boxes are clipped to the
image. `load_split(dataset_dir, "Training")` reads every XML of a split, sorted by file name.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecell.errors import EdgecellError

#: BCCD / CBC class names, in the order the cells model predicts them.
CELL_CLASSES = ("RBC", "WBC", "Platelets")


@dataclass
class Annotation:
    """One image's ground truth. Boxes are x1, y1, x2, y2 in image pixels."""

    image_path: Path
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32
    labels: np.ndarray  # (N,) int64, index into classes
    classes: tuple[str, ...] = CELL_CLASSES
    dropped: list[str] = field(default_factory=list)  # why boxes were dropped, for reports

    @property
    def stem(self) -> str:
        return self.image_path.stem

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}


def _num(node: ET.Element | None, tag: str) -> float:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None:
        raise ValueError(f"missing <{tag}>")
    return float(child.text.strip())


def parse_voc(xml_path: str | Path, classes: tuple[str, ...] = CELL_CLASSES,
              image_dir: str | Path | None = None, drop_zero_area: bool = True) -> Annotation:
    """Read one VOC XML. Unknown class names raise; zero-area boxes are dropped (noted in
    `Annotation.dropped`). The image is `image_dir/<xml stem>.jpg` (default: ../Images)."""
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise EdgecellError(f"{xml_path}: not a readable Pascal VOC XML ({exc})") from None
    size = root.find("size")
    try:
        width, height = int(_num(size, "width")), int(_num(size, "height"))
    except ValueError:
        width = height = 0
    image_dir = Path(image_dir) if image_dir else xml_path.parent.parent / "Images"
    image_path = image_dir / f"{xml_path.stem}.jpg"
    boxes, labels, dropped = [], [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in classes:
            raise EdgecellError(f"{xml_path}: unknown class {name!r}; expected one of {', '.join(classes)}")
        bb = obj.find("bndbox")
        try:
            x1, y1, x2, y2 = (_num(bb, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as exc:
            raise EdgecellError(f"{xml_path}: {name} box without coordinates ({exc})") from None
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        if width and height:
            x1, x2 = np.clip([x1, x2], 0, width)
            y1, y2 = np.clip([y1, y2], 0, height)
        if drop_zero_area and (x2 - x1 <= 0 or y2 - y1 <= 0):
            dropped.append(f"zero-area {name} box ({x1:g},{y1:g},{x2:g},{y2:g})")
            continue
        boxes.append((x1, y1, x2, y2))
        labels.append(classes.index(name))
    return Annotation(
        image_path=image_path, width=width, height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64), classes=tuple(classes), dropped=dropped,
    )


def list_split(dataset_dir: str | Path, split: str) -> list[Path]:
    """The XML files of a split (`Training`, `Validation`, `Testing`), sorted."""
    folder = Path(dataset_dir) / split / "Annotations"
    if not folder.is_dir():
        raise EdgecellError(f"{folder}: no such split folder; expected {split}/Annotations under {dataset_dir}")
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise EdgecellError(f"{folder}: no .xml annotations")
    return files


def load_split(dataset_dir: str | Path, split: str, classes: tuple[str, ...] = CELL_CLASSES) -> list[Annotation]:
    """Every annotation of a split, sorted by file name."""
    return [parse_voc(p, classes) for p in list_split(dataset_dir, split)]


def missing_class(annotations: list[Annotation], class_name: str) -> list[str]:
    """Stems of the annotations with no box of `class_name` (BCCD: 14 training files lack RBC)."""
    out = []
    for a in annotations:
        idx = a.classes.index(class_name)
        if not (a.labels == idx).any():
            out.append(a.stem)
    return out
