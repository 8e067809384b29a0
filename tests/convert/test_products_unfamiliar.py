"""The flatbuffer edit that gives the product classifier its features output: the Dense layer's
input becomes a second output. The shipped file is already edited, so editing it again must change
no output (the card's check that the class scores are unchanged is on the original file)."""

from __future__ import annotations

import numpy as np
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


def test_editing_the_edited_file_again_changes_no_output(edited):
    from edgecell.images import decode_image
    from edgecell.model import load_model
    from edgecell.tasks import classify

    image = decode_image(sorted(shipped_path("samples", "products").glob("*.jpg"))[0])
    new, old = load_model(edited, "litert"), load_model(SHIPPED, "litert")
    tensor = classify.preprocess(image, old.info)[0]  # the edited copy has no sidecar beside it
    a, b = new.session.run(tensor), old.session.run(tensor)
    assert all(np.array_equal(a[k], b[k]) for k in ("products_probs", "features"))
