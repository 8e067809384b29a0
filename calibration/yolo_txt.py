"""YOLO txt annotations: one line per box, `class cx cy w h`, coordinates normalised to 0..1.

`parse_yolo_txt(path, width, height)` -> (N x 4 float32 x1,y1,x2,y2 pixels, N int labels);
`write_yolo_txt` writes the same format (to export BCCD for other trainers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecell.errors import EdgecellError


def parse_yolo_txt(path: str | Path, width: int, height: int, num_classes: int | None = None,
                   drop_zero_area: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Boxes in pixels of a width x height image, and class indices. Empty file -> no boxes."""
    path = Path(path)
    boxes, labels = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < 5:
            raise EdgecellError(f"{path}:{n}: expected 'class cx cy w h', got {line.strip()!r}")
        try:
            cls = int(float(parts[0]))
            cx, cy, w, h = (float(v) for v in parts[1:5])
        except ValueError:
            raise EdgecellError(f"{path}:{n}: not numbers: {line.strip()!r}") from None
        if num_classes is not None and not 0 <= cls < num_classes:
            raise EdgecellError(f"{path}:{n}: class {cls} out of range 0..{num_classes - 1}")
        x1, x2 = np.clip([(cx - w / 2) * width, (cx + w / 2) * width], 0, width)
        y1, y2 = np.clip([(cy - h / 2) * height, (cy + h / 2) * height], 0, height)
        if drop_zero_area and (x2 <= x1 or y2 <= y1):
            continue
        boxes.append((x1, y1, x2, y2))
        labels.append(cls)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def write_yolo_txt(path: str | Path, boxes: np.ndarray, labels: np.ndarray, width: int, height: int) -> Path:
    """Write pixel boxes as normalised `class cx cy w h` lines."""
    path = Path(path)
    lines = []
    for (x1, y1, x2, y2), c in zip(np.asarray(boxes, np.float64).reshape(-1, 4), labels):
        lines.append(f"{int(c)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                     f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return path
