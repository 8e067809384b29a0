"""The state between the run loop and the viewers: newest only, lazy drawing, bounded memory."""

import json

import numpy as np
import pytest

from edgecell.live.state import HISTORY, LiveState


def _record(i: int) -> dict:
    return {"source": f"camera0#{i}", "ok": True, "task": "cells", "result": {"counts": {"RBC": i}, "total": i}}


def test_overlay_is_drawn_only_when_a_viewer_asks():
    state, drawn = LiveState(), []
    image = np.zeros((48, 64, 3), np.uint8)
    for i in range(5):
        state.publish(_record(i), image, lambda i=i: drawn.append(i) or image)
    assert drawn == []
    assert state.newest().jpeg()[:2] == b"\xff\xd8"
    assert drawn == [4]


def test_a_waiting_viewer_gets_the_newest_frame_not_the_next():
    state = LiveState()
    for i in range(10):
        state.publish(_record(i))
    snap = state.wait_newer(0, timeout=1.0)
    assert snap.seq == 10 and snap.record["source"] == "camera0#9"
    assert state.wait_newer(10, timeout=0.05) is None


def test_history_is_bounded_and_newest_first():
    state = LiveState()
    for i in range(HISTORY + 15):
        state.publish(_record(i))
    history = state.history()
    assert len(history) == HISTORY
    assert history[0]["source"] == f"camera0 frame {HISTORY + 14}"


def test_status_counts_frames_failures_and_source_state():
    state = LiveState({"model": "cells"})
    state.publish(_record(0))
    state.publish({"source": "x#1", "ok": False, "error": "unreadable"})
    state.note_source(7, 1)
    status = state.status()
    assert (status["model"], status["frames"], status["failures"], status["dropped_frames"], status["reconnects"]) \
        == ("cells", 2, 1, 7, 1)


def test_keep_saves_the_frame_a_viewer_was_sent(tmp_path):
    state = LiveState(out=tmp_path)
    frames = [np.full((40, 60, 3), i, np.uint8) for i in range(3)]
    for i, image in enumerate(frames):
        state.publish(_record(i), image)
        if i == 1:
            state.mark_sent(state.newest())
    kept = state.keep(2)  # frame 2 (seq) was sent: kept although frame 3 is newer
    assert kept["seq"] == 2
    stem = kept["files"][0][: -len(".png")]
    assert json.loads((tmp_path / "kept" / f"{stem}.json").read_text())["source"] == "camera0#1"


def test_keep_without_an_output_folder_says_how():
    state = LiveState()
    state.publish(_record(0), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(LookupError, match="--out"):
        state.keep(None)
