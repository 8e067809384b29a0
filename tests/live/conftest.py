"""Live-view fixtures: real records from the shipped cells model on the shipped smears, and a
live view on 127.0.0.1 (an ephemeral port) that the tests publish into."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecell.live import LiveView, ServeAddress
from edgecell.model import load_model
from edgecell.pipeline import Record, annotate, predict
from edgecell.resources import shipped_models, shipped_samples
from edgecell.sources import iter_frames


@pytest.fixture(scope="session")
def cells_frames() -> list[tuple[dict, object, object]]:
    """(record, image, overlay) for each shipped smear, as the run loop would publish them."""
    model = load_model(shipped_models()["cells"], "litert")
    out = []
    for frame in iter_frames(str(shipped_samples("bccd"))):
        result, timings = predict(model, frame.image)
        record = Record(frame.name, ok=True, task="cells", result=result, timings=timings).to_dict()
        out.append((record, frame.image, annotate(model, frame.image, result)))
    return out


@pytest.fixture()
def live(tmp_path: Path):
    """A live view as `--serve 127.0.0.1:0 --out tmp` would start it."""
    view = LiveView(ServeAddress("127.0.0.1", 0), out=tmp_path / "out",
                    run_info={"model": "cells", "task": "cells", "backend": "litert"})
    with view:
        yield view


@pytest.fixture()
def live_with_token(tmp_path: Path):
    """A live view that asks for a token, as on 0.0.0.0, but bound to 127.0.0.1 for the test."""
    view = LiveView(ServeAddress("127.0.0.1", 0), out=tmp_path / "out", token="test-token-123")
    with view:
        yield view
