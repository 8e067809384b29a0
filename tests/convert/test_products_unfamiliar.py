"""The flatbuffer edit that gives the product classifier its features output: the Dense layer's
input becomes a second output. The shipped file is already edited, so editing it again must give
the same bytes (the card's check that the class scores are unchanged is on the original file)."""

from __future__ import annotations

import pytest

from edgecell.backends import load_session
from edgecell.resources import shipped_path

SHIPPED = shipped_path("models", "products_int8.tflite")


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from edgecell.convert.products_unfamiliar import with_features_output

    out = tmp_path_factory.mktemp("products") / "products_int8.tflite"
    with_features_output(SHIPPED, out)
    return out


def test_outputs_are_the_class_scores_then_the_pooled_features(edited):
    session = load_session(edited, "litert")
    assert [(o.name, o.shape) for o in session.outputs] == [("products_probs", (1, 8)), ("features", (1, 256))]


def test_editing_the_edited_file_again_changes_no_byte(edited):
    assert edited.read_bytes() == SHIPPED.read_bytes()
