"""CenterNet training targets decode back to the boxes they were built from (the runtime decoder
reads what the loss teaches), and the greyscale augmentation really greys an image. No TensorFlow."""

from __future__ import annotations

import numpy as np

from edgecell.convert.centernet_loss import build_heat_targets
from edgecell.convert.train_cells import augment
from edgecell.evaluation.detection import map50
from edgecell.modelinfo import ModelInfo
from edgecell.tasks import cells

LABELS = list(cells.CLASSES)


def test_targets_round_trip_through_the_runtime_decoder():
    info = ModelInfo(task="cells", labels=LABELS, input_size=(416, 320), settings={"head": "centernet"})
    boxes = np.array([[10, 12, 70, 66], [100, 40, 230, 170], [300, 200, 325, 224], [330, 210, 356, 236]], np.float32)
    labels = np.array([0, 1, 2, 2])
    y = build_heat_targets([boxes], [labels], 3, (416, 320))
    assert y.shape == (1, 40, 52, 8) and y[..., 7].sum() == 4 and (y[..., :3] == 1).sum() == 4
    heat = np.clip(y[0, ..., :3], 1e-6, 1 - 1e-6)
    logits = np.log(heat / (1 - heat)) - (heat < 1) * 1.0  # peaks strictly highest, as training aims for
    raw = np.concatenate([logits, y[0, ..., 3:7]], -1)[None]
    b, c, s = cells.decode(raw, info, floor=0.5)
    assert len(b) == 4
    assert map50([(b, c, s)], [(boxes, labels)], LABELS)["map"] == 1.0
    order = np.argsort(b[:, 0])
    np.testing.assert_allclose(b[order], boxes, atol=1e-3)


def test_greyscale_augmentation():
    rng = np.random.default_rng(0)
    img = np.zeros((48, 64, 3), np.uint8)
    img[..., 0], img[..., 2] = 200, 60
    boxes, labels = np.array([[10, 10, 30, 30]], np.float32), np.array([0])
    out, b, _ = augment(img, boxes, labels, rng, grey=1.0)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all() and len(b) == 1
    out, _, _ = augment(img, boxes, labels, rng, grey=0.0)
    assert not (out[..., 0] == out[..., 2]).all()


def test_weights_channels_are_appended_per_image():
    boxes = [np.array([[10, 12, 70, 66]], np.float32)] * 2
    labels = [np.array([0])] * 2
    w = [np.array([1, 1, 1, 1, 1, 1, 1], np.float32), np.array([1, 0, 0, 0, 0, 0, 0], np.float32)]
    y = build_heat_targets(boxes, labels, 3, (416, 320), weights_list=w)
    assert y.shape == (2, 40, 52, 15)
    np.testing.assert_array_equal(y[1, 5, 5, 8:], w[1])
    np.testing.assert_array_equal(y[0, ..., :8], y[1, ..., :8])


def test_strong_augmentation_keeps_edge_cut_cells_and_shifts_colour():
    rng = np.random.default_rng(1)
    img = np.full((480, 640, 3), 200, np.uint8)
    boxes, labels = np.array([[300, 200, 400, 300]], np.float32), np.array([0])
    sizes = []
    for _ in range(20):
        out, b, _ = augment(img, boxes, labels, rng, strong=True)
        assert out.shape == img.shape and out.dtype == np.uint8
        sizes += list(b[:, 2] - b[:, 0])
    assert max(sizes) > 150 and min(sizes) < 70  # scale 0.5-2x
