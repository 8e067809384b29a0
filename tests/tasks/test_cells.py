"""Cells pipeline: YOLOv2 and CenterNet decode on hand-built outputs, NMS, platelet
de-duplication, thresholds, tiling that counts a seam cell once, empty and greyscale smears (both
heads), refusing another task's model; the shipped default and the paper's reproduction on real
smears."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecell.errors import ModelError
from edgecell.model import Model, load_model
from edgecell.modelinfo import ModelInfo
from edgecell.pipeline import predict
from edgecell.tasks import cells
from edgecell.tasks.boxes import box_iou

ANCHORS = [[12.0, 12.0], [30.0, 30.0], [40.0, 40.0], [50.0, 50.0], [90.0, 90.0]]
MODELS = Path(cells.__file__).resolve().parent.parent / "models"
SHIPPED = MODELS / "cells_int8.tflite"
REPRODUCTION = MODELS / "cells_tinyyolov2_int8.tflite"


def make_info(size=(256, 192), **settings) -> ModelInfo:
    return ModelInfo(task="cells", labels=list(cells.CLASSES), input_size=size, resize="letterbox",
                     settings={"anchors": ANCHORS, **settings})


def make_centernet_info(size=(256, 192), **settings) -> ModelInfo:
    return ModelInfo(task="cells", labels=list(cells.CLASSES), input_size=size, resize="letterbox",
                     settings={"head": "centernet", "interpolation": "linear", **settings})


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


def encode_centernet(boxes, classes, info, score=0.95, background=-9.0) -> np.ndarray:
    """Inverse of the CenterNet decode: 1 x H/8 x W/8 x 7 raw output, one peak per box, with a
    lower (not maximal) neighbourhood as a trained heatmap has."""
    w, h = info.input_size
    s = cells.CENTERNET_STRIDE
    gw, gh = w // s, h // s
    out = np.zeros((gh, gw, 7), np.float32)
    out[..., :3] = background
    for (x1, y1, x2, y2), c in zip(boxes, classes):
        cx, cy = (x1 + x2) / 2 / s, (y1 + y2) / 2 / s
        i, j = min(int(cx), gw - 1), min(int(cy), gh - 1)
        out[max(0, j - 1) : j + 2, max(0, i - 1) : i + 2, c] = np.maximum(out[max(0, j - 1) : j + 2, max(0, i - 1) : i + 2, c],
                                                                         _logit(score) - 2.0)
        out[j, i, c] = _logit(score)
        out[j, i, 3:] = (cells.CENTERNET_OFFSET_SCALE * (cx - i), cells.CENTERNET_OFFSET_SCALE * (cy - j),
                         cells.CENTERNET_SIZE_SCALE * np.log((x2 - x1) / s), cells.CENTERNET_SIZE_SCALE * np.log((y2 - y1) / s))
    return out[None]


class BlobSession:
    """A stand-in detector: dark discs on a light background become boxes in the raw YOLO grid
    (or CenterNet output, by the info's head). Discs smaller than 20 input px are platelets, larger
    than 60 are WBCs, else RBCs."""

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
        if cells.head_of(self.info) == "centernet":
            return {"out": encode_centernet(boxes, classes, self.info)}
        return {"out": encode(boxes, classes, self.info)}


HEAD_INFOS = {"yolov2": make_info, "centernet": make_centernet_info}


@pytest.mark.parametrize("head", HEAD_INFOS)
def test_decode_hand_built_output(head):
    """YOLOv2: a hand-built grid; CenterNet: one heatmap peak per box -> exactly that box."""
    info = HEAD_INFOS[head]()
    boxes = np.array([[10, 20, 40, 50], [100, 60, 190, 150], [200, 150, 212, 162]], np.float32)
    out = encode_centernet(boxes, [0, 1, 2], info, score=0.9) if head == "centernet" else encode(boxes, [0, 1, 2], info, obj=0.9)
    b, c, s = cells.decode({"out": out}, info, floor=0.1)
    order = np.argsort(b[:, 0])
    np.testing.assert_allclose(b[order], boxes, atol=1e-2)
    assert c[order].tolist() == [0, 1, 2]
    np.testing.assert_allclose(s, 0.9, atol=1e-3)
    # NCHW output is accepted too
    b2, _, _ = cells.decode({"out": out.transpose(0, 3, 1, 2)}, info, floor=0.1)
    assert len(b2) == 3
    assert len(cells.decode({"out": out}, info, floor=0.95)[0]) == 0  # all below the floor


def test_decode_rejects_wrong_depth():
    with pytest.raises(ModelError, match="40"):
        cells.decode({"out": np.zeros((1, 6, 8, 30), np.float32)}, make_info())


def test_centernet_only_local_maxima_and_plateaus_are_deduplicated():
    info = make_centernet_info()
    out = encode_centernet(np.array([[60, 60, 100, 100]], np.float32), [0], info, score=0.8)
    # the neighbours hold a lower score: one detection, not nine
    assert len(cells.decode(out, info, floor=0.05)[0]) == 1
    # an INT8 plateau: two equal neighbouring peaks with the same box -> two raw peaks, one count
    j, i = 10, 10
    out[0, j, i + 1] = out[0, j, i]
    out[0, j, i + 1, 3] -= cells.CENTERNET_OFFSET_SCALE  # same centre seen from the next cell
    b, c, s = cells.decode(out, info, floor=0.05)
    assert len(b) == 2
    tensor, ctx = cells.preprocess(np.full((192, 256, 3), 200, np.uint8), info)
    assert cells.postprocess({"out": out}, ctx, info, thresholds=0.5).counts == {"RBC": 1, "WBC": 0, "Platelets": 0}


def test_centernet_decode_rejects_wrong_depth_and_unknown_head():
    with pytest.raises(ModelError, match="1 x H x W x 7"):
        cells.decode({"out": np.zeros((1, 6, 8, 40), np.float32)}, make_centernet_info())
    info = make_centernet_info(head="detr")
    with pytest.raises(ModelError) as exc:
        cells.check_info(info)
    assert "\n" not in str(exc.value) and "detr" in str(exc.value)
    cells.check_info(make_centernet_info())  # no anchors needed


def test_platelet_dedupe_paper_rule():
    # A and B overlap (IoU 0.43 > 0.10): the lower-scored B is a double count; C overlaps A by
    # IoU ~0.05 (<= 0.10): a separate platelet; D is far away.
    a, b = [0, 0, 20, 20], [6, 0, 26, 20]
    c, d = [18, 0, 38, 20], [100, 100, 120, 120]
    boxes = np.array([a, b, c, d], np.float32)
    assert box_iou(boxes[:1], boxes[1:2])[0, 0] > 0.10
    assert box_iou(boxes[:1], boxes[2:3])[0, 0] <= 0.10
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


def run_image(session, image, info, **options) -> cells.CellsResult:
    """The one device path (`pipeline.predict`) on a session the test built."""
    return predict(Model(session, info), image, **options)[0]


def _smear(size=(1600, 1200), step=100, r=16, seed=0):
    """Light background with dark discs on a regular lattice (some land on tile seams)."""
    w, h = size
    img = np.full((h, w, 3), 235, np.uint8)
    centres = [(x, y) for y in range(60, h - 40, step) for x in range(60, w - 40, step)]
    for x, y in centres:
        cv2.circle(img, (x, y), r, (60, 40, 90), -1)
    return img, centres


@pytest.mark.parametrize("head", HEAD_INFOS)
def test_tiling_counts_seam_cells_once(head):
    info = HEAD_INFOS[head]()
    image, centres = _smear()
    session = BlobSession(info)
    r = run_image(session, image, info)
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


@pytest.mark.parametrize("head", HEAD_INFOS)
def test_empty_smear_gives_zero_counts(head):
    info = HEAD_INFOS[head]()
    blank = np.full((480, 640, 3), (230, 200, 210), np.uint8)
    r = run_image(BlobSession(info), blank, info)
    assert r.counts == {"RBC": 0, "WBC": 0, "Platelets": 0} and len(r.boxes) == 0
    overlay = cells.annotate(blank, r)
    assert overlay.shape == blank.shape


@pytest.mark.parametrize("head", HEAD_INFOS)
def test_greyscale_smear_works(head):
    info = HEAD_INFOS[head]()
    image, centres = _smear((640, 480), step=120, r=14)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    for img in (grey, grey[:, :, None]):
        tensor, ctx = cells.preprocess(img, info)
        assert tensor.shape == (1, 192, 256, 3)
        r = run_image(BlobSession(info), img, info)
        assert sum(r.counts.values()) == len(centres)
        assert cells.annotate(img, r).shape == (480, 640, 3)


def test_annotate_draws_circles():
    image = np.full((480, 640, 3), 255, np.uint8)
    r = cells.CellsResult(np.array([[100, 100, 200, 200]], np.float32), np.array([1]), np.array([0.9], np.float32))
    out = cells.annotate(image, r)
    # on the circle (centre 150,150, radius 50) the WBC colour; at the centre still white
    assert tuple(out[150, 200]) != (255, 255, 255) and tuple(out[150, 150]) == (255, 255, 255)


def test_other_task_is_refused_in_one_line():
    info = ModelInfo(task="classify", labels=["a", "b"], input_size=(224, 224))
    with pytest.raises(ModelError) as exc:
        cells.CellsTask().preprocess(np.zeros((100, 100, 3), np.uint8), info)
    msg = str(exc.value)
    assert "\n" not in msg and "'cells'" in msg and "'classify'" in msg


def _load(path):
    model = load_model(path)
    return model.session, model.info


def _samples():
    from edgecell.images import decode_image

    paths = sorted((MODELS.parent / "samples" / "bccd").glob("*.jpg"))
    assert len(paths) == 4, "sample smears missing"
    return [decode_image(p) for p in paths]


def _totals(session, info, images):
    counts = [run_image(session, img, info).counts for img in images]
    return counts, {k: sum(c[k] for c in counts) for k in cells.CLASSES}


def test_shipped_default_counts_the_samples_in_colour_grey_and_blank():
    """The default model (CenterNet) on the 4 shipped test smears (complete labels, TXL: RBC
    27+24+12+23 = 86, WBC 4, platelets 2+4+3+2 = 11; the CBC labels box 51 RBC): the card states
    94 / 5 / 10 in colour, 93 / 6 / 4 in grey."""
    session, info = _load(SHIPPED)
    assert cells.head_of(info) == "centernet" and info.settings["thresholds"]
    images = _samples()
    counts, total = _totals(session, info, images)
    assert all(c["WBC"] >= 1 for c in counts)
    assert 78 <= total["RBC"] <= 100 and 4 <= total["WBC"] <= 6 and 8 <= total["Platelets"] <= 14, total
    grey, grey_total = _totals(session, info, [cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) for img in images])
    assert all(c["WBC"] >= 1 for c in grey)
    # greyscale augmentation: a grey smear counts red and white cells like the colour one (platelets
    # not: 4 vs 10 on these samples, a limitation stated in the model card)
    for k in ("RBC", "WBC"):
        assert abs(grey_total[k] - total[k]) <= max(2, 0.15 * total[k]), (k, grey_total, total)
    assert sum(run_image(session, np.full_like(images[0], 225), info).counts.values()) == 0


def test_shipped_reproduction_still_runs():
    """The paper's Tiny-YOLOv2 (kept as the reproduction) counts 14 / 1 / 2 on sample 00339."""
    session, info = _load(REPRODUCTION)
    assert cells.head_of(info) == "yolov2"
    image = _samples()[0]
    r = run_image(session, image, info)
    assert 10 <= r.counts["RBC"] <= 18 and r.counts["WBC"] == 1
    assert sum(run_image(session, np.full_like(image, 225), info).counts.values()) == 0


def test_shipped_model_of_another_task_is_refused_in_one_line():
    session, info = _load(MODELS / "products_int8.tflite")
    with pytest.raises(ModelError) as exc:
        cells.CellsTask().check(info, session)
    assert "\n" not in str(exc.value) and "'cells'" in str(exc.value)
