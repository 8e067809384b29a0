"""V-BreathNet: the paper's parameter count, and the two-output model the device needs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")

from edgecell.convert.models.vbreathnet import (FEATURE_LAYER, PAPER_PARAMETERS, build_vbreathnet, head_weights,  # noqa: E402
                                                with_feature_output)


@pytest.fixture(scope="module")
def model():
    return build_vbreathnet()


def test_parameter_count_is_the_papers(model):
    assert model.count_params() == PAPER_PARAMETERS == 792_291


def test_layout_six_blocks_then_dense_head(model):
    convs = [l for l in model.layers if type(l).__name__ == "Conv2D"]
    assert [l.filters for l in convs] == [128, 64, 32, 64, 128, 64]
    assert tuple(model.input.shape[1:]) == (256, 256, 3)
    assert tuple(model.get_layer("flatten").output.shape[1:]) == (1024,)
    assert tuple(model.output.shape[1:]) == (3,)


def test_feature_output_shares_weights_and_head_weights(model):
    cam = with_feature_output(model)
    assert cam.count_params() == PAPER_PARAMETERS
    assert [tuple(o.shape[1:]) for o in cam.outputs] == [(3,), (8, 8, 64)]
    assert cam.outputs[1].name.startswith(FEATURE_LAYER) or cam.output_names[1] == FEATURE_LAYER
    head = head_weights(model)
    assert head["w1"].shape == (1024, 512) and head["w2"].shape == (512, 3)
    assert all(v.dtype in (np.float32, np.int32) for v in head.values())
