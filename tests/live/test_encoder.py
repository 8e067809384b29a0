"""The helper process draws and encodes exactly what the viewer's thread would."""

from edgecell.live.encoder import Encoder
from edgecell.live.state import encode_jpeg
from edgecell.model import load_model
from edgecell.pipeline import predict
from edgecell.resources import shipped_models
from edgecell.tasks import get_task


def test_helper_process_gives_the_same_jpeg_as_the_viewer_thread(cells_frames):
    image = cells_frames[0][1]
    result, _ = predict(load_model(shipped_models()["cells"], "litert"), image)
    encoder = Encoder()
    try:
        assert encoder.encode(image, "cells", result) == encode_jpeg(get_task("cells").annotate(image, result))
        assert encoder.encode(image, None, None) == encode_jpeg(image)
    finally:
        encoder.close()


def test_a_failing_helper_leaves_the_viewer_thread_to_encode(live, cells_frames):
    record, image, overlay = cells_frames[0]
    live.publish(record, image, overlay)
    live.state.encoder.close()  # the helper is gone
    assert live.state.jpeg(live.state.newest())[:2] == b"\xff\xd8"
    assert live.state.encoder is None
