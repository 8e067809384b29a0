"""Cells pipeline, unstained platelets: a platelet detection whose pixels absorb red, green and
blue alike (dust on the camera's optics, as BCCD's camera shows near (555, 78) in many smears) is
not counted; a stained platelet is; a grey smear keeps every platelet (no colour to judge by);
white balance does not change the decision.

Fixture: a 370 x 140 crop of the BCCD Training smear BloodImage_00242 (MIT, see
edge/samples/bccd/LICENSE_AND_SOURCE.md) holding one labelled platelet and the dust spot that the
shipped counter scored 0.36 as a platelet on the whole smear."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgecell.images import decode_image
from edgecell.model import Model
from edgecell.pipeline import predict
from edgecell.tasks import cells
from test_cells import encode_centernet, make_centernet_info

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "cells" / "bccd_00242_platelet_and_dust.jpg"
#: in the fixture's pixels: the labelled platelet (TXL) and the dust spot (the counter's box)
PLATELET, DUST = [18, 78, 54, 118], [313, 20, 346, 66]
STAIN = {"min_relative_spread": 0.25}


def _kept(image, boxes=(PLATELET, DUST)) -> list[int]:
    b = np.asarray(boxes, np.float32)
    keep = cells.stained_platelets(image, b, np.full(len(b), 2), np.arange(len(b)), list(cells.CLASSES),
                                   STAIN["min_relative_spread"])
    return sorted(keep.tolist())


def test_dust_is_not_counted_as_a_platelet_a_stained_platelet_is():
    assert _kept(decode_image(FIXTURE)) == [0]


def test_grey_smear_keeps_every_platelet():
    grey = cv2.cvtColor(cv2.cvtColor(decode_image(FIXTURE), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    assert _kept(grey) == [0, 1]


def test_white_balance_does_not_change_which_platelets_are_stained():
    warm = np.clip(decode_image(FIXTURE) * np.array([1.15, 1.0, 0.85], np.float32), 0, 255).astype(np.uint8)
    assert _kept(warm) == [0]


class FixedSession:
    """A stand-in detector that reports the same detections (model-input pixels) for any input."""

    backend = "fake"

    def __init__(self, output):
        self.output = output

    def run(self, tensor):
        return {"out": self.output}


def test_pipeline_drops_unstained_platelets_when_the_sidecar_asks():
    image = decode_image(FIXTURE)
    counts = {}
    for name, settings in (("without", {}), ("with", {"platelet_stain": STAIN})):
        info = make_centernet_info(size=(384, 160), thresholds={"RBC": 0.5, "WBC": 0.5, "Platelets": 0.3}, **settings)
        lb = cells.preprocess(image, info)[1].letterbox
        boxes = [[v * lb.scale + (lb.pad_x, lb.pad_y)[k % 2] for k, v in enumerate(b)] for b in (PLATELET, DUST)]
        result = predict(Model(FixedSession(encode_centernet(boxes, [2, 2], info, score=0.6)), info), image)[0]
        counts[name] = result.counts["Platelets"]
    assert counts == {"without": 2, "with": 1}
