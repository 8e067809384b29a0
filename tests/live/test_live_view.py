"""LiveView as the run loop's sink: the frame is copied, the overlay is drawn only on demand."""

import numpy as np

from edgecell.live import LiveView, ServeAddress
from edgecell.pipeline import Record


class _Result:
    def to_dict(self) -> dict:
        return {"counts": {"RBC": 2}, "total": 2}


def test_write_copies_the_frame_and_draws_only_when_asked():
    drawn = []
    view = LiveView(ServeAddress("127.0.0.1", 0), draw=lambda image, result: drawn.append(result) or image + 1)
    image = np.zeros((16, 16, 3), np.uint8)
    result = _Result()
    view.write(Record("camera0#0", ok=True, task="cells", result=result), image, None)
    image[:] = 255  # the loop reuses its buffer: the live view must not see it
    snap = view.state.newest()
    assert drawn == [] and snap.record["result"]["counts"] == {"RBC": 2}
    assert int(snap.overlay_image().max()) == 1 and drawn == [result]
    view.close()


def test_write_of_a_failed_frame_has_no_overlay():
    view = LiveView(ServeAddress("127.0.0.1", 0), draw=lambda image, result: image)
    view.write(Record("bad.jpg", ok=False, task="cells", error="truncated"), None, None)
    assert view.state.newest().overlay_image() is None and view.state.status()["failures"] == 1
    view.close()


def test_observe_passes_frames_on_and_reports_a_cameras_drops():
    from edgecell.sources import Frame

    view = LiveView(ServeAddress("127.0.0.1", 0), run_info={"live_source": True})
    frames = [Frame("camera0#0", 0, dropped=0), Frame("camera0#1", 1, dropped=5, reconnects=1)]
    assert list(view.observe(frames)) == frames
    status = view.state.status()
    assert (status["dropped_frames"], status["reconnects"]) == (5, 1)
    view.close()
