"""Cells pipeline: YOLO decode on a hand-built grid, NMS, platelet de-duplication, thresholds,
tiling that counts a seam cell once, empty and greyscale smears, refusing another task's model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecell.errors import ModelError
from edgecell.modelinfo import ModelInfo
from edgecell.tasks import cells

ANCHORS = [[12.0, 12.0], [30.0, 30.0], [40.0, 40.0], [50.0, 50.0], [90.0, 90.0]]
SHIPPED = Path(cells.__file__).resolve().parent.parent / "models" / "cells_int8.tflite"


def make_info(size=(256, 192), **settings) -> ModelInfo:
    return ModelInfo(task="cells", labels=list(cells.CLASSES), input_size=size, resize="letterbox",
                     settings={"anchors": ANCHORS, **settings})


def _logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def encode(boxes, classes, info, obj=0.999, background=-12.0) -> np.ndarray:
    """Inverse of the decode: raw 1 x Gh x Gw x 40 output holding these boxes (model-input px)."""
    w, h = info.input_size
    gw, gh = w // 32, h // 32
    out = np.zeros((gh, gw, 5, 8), np.float32)
    out[..., 4] = background
    anchors = np.asarray(ANCHORS, np.float32)
    for (x1, y1, x2, y2), c in zip(boxes, classes):
        cx, cy, bw, bh = (x1 + x2) / 64, (y1 + y2) / 64, x2 - x1, y2 - y1
        i, j = min(int(cx), gw - 1), min(int(cy), gh - 1)
        a = int(np.argmin(np.abs(np.log(bw / anchors[:, 0]))))
        while out[j, i, a, 4] != background:  # anchor taken: next one
            a = (a + 1) % 5
        out[j, i, a, :4] = (_logit(cx - i), _logit(cy - j), np.log(bw / anchors[a, 0]), np.log(bh / anchors[a, 1]))
        out[j, i, a, 4] = _logit(obj)
        out[j, i, a, 5:] = -10.0
        out[j, i, a, 5 + c] = 10.0
    return out.reshape(1, gh, gw, 40)


class BlobSession:
    """A stand-in detector: dark discs on a light background become boxes in the raw YOLO grid.
    Discs smaller than 20 input px are platelets, larger than 60 are WBCs, else RBCs."""

    backend = "fake"

    def __init__(self, info):
        self.info, self.calls = info, 0

    def run(self, tensor):
        self.calls += 1
        img = (tensor[0].mean(-1) * 255).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats((img < 100).astype(np.uint8))
        boxes, classes = [], []
        for x, y, w, h, area in stats[1:]:
            if area < 4:
                continue
            boxes.append((x, y, x + w, y + h))
            classes.append(2 if max(w, h) < 20 else (1 if max(w, h) > 60 else 0))
        return {"out": encode(boxes, classes, self.info)}


def test_decode_hand_built_grid():
    info = make_info()
    boxes = np.array([[10, 20, 40, 50], [100, 60, 190, 150], [200, 150, 212, 162]], np.float32)
    out = encode(boxes, [0, 1, 2], info, obj=0.9)
    b, c, s = cells.decode({"out": out}, info, floor=0.1)
    order = np.argsort(b[:, 0])
    np.testing.assert_allclose(b[order], boxes, atol=1e-2)
    assert c[order].tolist() == [0, 1, 2]
    np.testing.assert_allclose(s, 0.9, atol=1e-3)
    # NCHW output is accepted too
    b2, _, _ = cells.decode({"out": out.transpose(0, 3, 1, 2)}, info, floor=0.1)
    assert len(b2) == 3


def test_decode_rejects_wrong_depth():
    with pytest.raises(ModelError, match="40"):
        cells.decode({"out": np.zeros((1, 6, 8, 30), np.float32)}, make_info())


def test_nms_per_class():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0])
    keep = cells.nms_per_class(boxes, classes, scores, 0.45)
    assert sorted(keep.tolist()) == [0, 2, 3]  # box 1 suppressed by 0; class 1 box kept


def test_platelet_dedupe_paper_rule():
    # A and B overlap (IoU 0.43 > 0.10): the lower-scored B is a double count; C overlaps A by
    # IoU ~0.05 (<= 0.10): a separate platelet; D is far away.
    a, b = [0, 0, 20, 20], [6, 0, 26, 20]
    c, d = [18, 0, 38, 20], [100, 100, 120, 120]
    boxes = np.array([a, b, c, d], np.float32)
    assert cells.box_iou(boxes[:1], boxes[1:2])[0, 0] > 0.10
    assert cells.box_iou(boxes[:1], boxes[2:3])[0, 0] <= 0.10
    keep = cells.platelet_dedupe(boxes, np.array([0.9, 0.8, 0.7, 0.6], np.float32), 0.10)
    assert sorted(keep.tolist()) == [0, 2, 3]


def test_postprocess_per_class_thresholds_and_counts():
    info = make_info()
    boxes = np.array([[10, 20, 40, 50], [100, 60, 190, 150], [200, 150, 212, 162]], np.float32)
    out = encode(boxes, [0, 1, 2], info, obj=0.4)
    tensor, ctx = cells.preprocess(np.full((192, 256, 3), 200, np.uint8), info)
    r = cells.postprocess({"out": out}, ctx, info)  # paper: RBC 0.55, WBC 0.35, Platelets 0.25
    assert r.counts == {"RBC": 0, "WBC": 1, "Platelets": 1}
    r = cells.postprocess({"out": out}, ctx, info, thresholds={"RBC": 0.3})
    assert r.counts == {"RBC": 1, "WBC": 1, "Platelets": 1}
    r = cells.postprocess({"out": out}, ctx, info, thresholds=0.5)
    assert r.counts == {"RBC": 0, "WBC": 0, "Platelets": 0}
    d = json.loads(json.dumps(r.to_dict()))
    assert d["counts"]["RBC"] == 0 and d["task"] == "cells"


def test_postprocess_maps_back_through_letterbox():
    info = make_info()
    image = np.full((480, 640, 3), 220, np.uint8)  # scale 0.4, no horizontal pad, 0 vertical pad
    tensor, ctx = cells.preprocess(image, info)
    assert tensor.shape == (1, 192, 256, 3) and tensor.dtype == np.float32
    assert abs(float(tensor.max()) - 220 / 255) < 1e-6
    out = encode(np.array([[40, 40, 80, 80]], np.float32), [0], info)
    r = cells.postprocess({"out": out}, ctx, info)
    np.testing.assert_allclose(r.boxes[0], [100, 100, 200, 200], atol=0.5)


def _smear(size=(1600, 1200), step=100, r=16, seed=0):
    """Light background with dark discs on a regular lattice (some land on tile seams)."""
    w, h = size
    img = np.full((h, w, 3), 235, np.uint8)
    centres = [(x, y) for y in range(60, h - 40, step) for x in range(60, w - 40, step)]
    for x, y in centres:
        cv2.circle(img, (x, y), r, (60, 40, 90), -1)
    return img, centres


def test_tiling_counts_seam_cells_once():
    info = make_info()
    image, centres = _smear()
    session = BlobSession(info)
    r = cells.run_image(session, image, info)
    assert r.tiles == 4 and session.calls == 16
    assert sum(r.counts.values()) == len(centres)
    # every disc found exactly once, at its place
    got = (r.boxes[:, :2] + r.boxes[:, 2:]) / 2
    d = np.sqrt(((got[:, None] - np.asarray(centres)[None]) ** 2).sum(-1))
    assert (d.min(0) < 4).all() and len(set(d.argmin(0).tolist())) == len(centres)
    # without the core rule, the overlaps would count many discs twice
    grid = cells.tile_grid(image.shape[1::-1], 4, 0.2)
    raw = 0
    for x0, y0, x1, y1, _ in grid:
        t, ctx = cells.preprocess(image[y0:y1, x0:x1], info)
        raw += len(cells.decode(session.run(t), info, floor=0.25)[0])
    assert raw > len(centres) + 10


def test_tile_grid_cores_partition_image():
    grid = cells.tile_grid((1000, 700), 3, 0.25)
    assert len(grid) == 9
    xs = sorted({(g[4][0], g[4][2]) for g in grid})
    assert xs[0][0] == 0 and xs[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(xs, xs[1:]))
    for x0, y0, x1, y1, (cx0, cy0, cx1, cy1) in grid:
        assert x0 <= cx0 < cx1 <= x1 and y0 <= cy0 < cy1 <= y1
    assert cells.auto_tiles((640, 480), (416, 320)) == 1
    assert cells.auto_tiles((3246, 2448), (416, 320)) == 4


def test_empty_smear_gives_zero_counts():
    info = make_info()
    blank = np.full((480, 640, 3), (230, 200, 210), np.uint8)
    r = cells.run_image(BlobSession(info), blank, info)
    assert r.counts == {"RBC": 0, "WBC": 0, "Platelets": 0} and len(r.boxes) == 0
    overlay = cells.annotate(blank, r)
    assert overlay.shape == blank.shape


def test_greyscale_smear_works():
    info = make_info()
    image, centres = _smear((640, 480), step=120, r=14)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    for img in (grey, grey[:, :, None]):
        tensor, ctx = cells.preprocess(img, info)
        assert tensor.shape == (1, 192, 256, 3)
        r = cells.run_image(BlobSession(info), img, info)
        assert sum(r.counts.values()) == len(centres)
        assert cells.annotate(img, r).shape == (480, 640, 3)


def test_annotate_draws_circles():
    info = make_info()
    image = np.full((480, 640, 3), 255, np.uint8)
    r = cells.CellsResult(np.array([[100, 100, 200, 200]], np.float32), np.array([1]), np.array([0.9], np.float32))
    out = cells.annotate(image, r)
    # on the circle (centre 150,150, radius 50) the WBC colour; at the centre still white
    assert tuple(out[150, 200]) != (255, 255, 255) and tuple(out[150, 150]) == (255, 255, 255)


def test_other_task_is_refused_in_one_line():
    info = ModelInfo(task="classify", labels=["a", "b"], input_size=(224, 224))
    with pytest.raises(ModelError) as exc:
        cells.run_image(BlobSession(info), np.zeros((100, 100, 3), np.uint8), info)
    msg = str(exc.value)
    assert "\n" not in msg and "'cells'" in msg and "'classify'" in msg


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped cells model not built yet")
def test_shipped_model_counts_a_real_smear_and_a_blank_one():
    from edgecell.backends import load_session
    from edgecell.images import decode_image
    from edgecell.modelinfo import read_model_info

    session = load_session(SHIPPED)
    info = read_model_info(SHIPPED, session.embedded_metadata)
    samples = sorted((SHIPPED.parent.parent / "samples" / "bccd").glob("*.jpg"))
    assert samples, "sample smears missing"
    image = decode_image(samples[0])
    r = cells.run_image(session, image, info)
    assert r.counts["RBC"] >= 5
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    rg = cells.run_image(session, grey, info)
    assert rg.counts["RBC"] >= 1
    blank = np.full_like(image, 225)
    assert sum(cells.run_image(session, blank, info).counts.values()) == 0
