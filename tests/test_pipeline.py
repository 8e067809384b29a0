"""The run loop below the CLI: `run_frames` yields one record per frame and hands each to every
sink as it is made; a bad frame is a failed record, never the end of the run; sinks are closed
however the run ends; the summary keeps running totals, not records."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from edgecell.images import decode_image
from edgecell.model import load_model
from edgecell.pipeline import Record, RunOptions, RunSummary, Sink, run_frames
from edgecell.sources import Frame

CELLS = Path(__file__).resolve().parents[1] / "edge" / "models" / "cells_int8.tflite"


@pytest.fixture(scope="module")
def cells_model():
    return load_model(CELLS)


@pytest.fixture(scope="module")
def smear(real_jpeg):
    return decode_image(real_jpeg)


class Collect:
    """A sink that remembers what it was given (a live view would draw it)."""

    wants_overlay = True

    def __init__(self):
        self.got: list[tuple[Record, bool, bool]] = []
        self.closed = 0

    def write(self, record, image, overlay):
        self.got.append((record, image is not None, overlay is not None))

    def close(self):
        self.closed += 1


def frames(smear, n=3, bad_at=1):
    for i in range(n):
        if i == bad_at:
            yield Frame(f"f{i}.jpg", i, None, "f1.jpg: not an image")
        else:
            yield Frame(f"f{i}.jpg", i, smear)


def test_collect_is_a_sink():
    assert isinstance(Collect(), Sink)


def test_every_frame_gives_one_record_and_a_bad_frame_does_not_stop_the_run(cells_model, smear):
    sink = Collect()
    records = list(run_frames(cells_model, frames(smear), sinks=[sink]))
    assert [r.ok for r in records] == [True, False, True]
    assert records[0].result.counts["RBC"] > 0 and records[1].error == "f1.jpg: not an image"
    assert [(r.source, img, ov) for r, img, ov in sink.got] == [
        ("f0.jpg", True, True), ("f1.jpg", False, False), ("f2.jpg", True, True)]
    assert sink.closed == 1


def test_sinks_are_closed_when_the_run_stops_early(cells_model, smear):
    sink = Collect()
    records = run_frames(cells_model, frames(smear, n=10, bad_at=-1), sinks=[sink])
    next(records)
    records.close()  # what an interrupted caller does
    assert sink.closed == 1 and len(sink.got) == 1


def test_out_folder_gets_jsonl_csv_and_overlays_as_records_are_made(cells_model, smear, tmp_path):
    records = run_frames(cells_model, frames(smear, n=3, bad_at=-1), RunOptions(out=tmp_path))
    first = next(records)
    # the first record is on disk before the second frame is processed
    assert json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])["source"] == "f0.jpg"
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 2
    assert Path(first.overlay).is_file()
    list(records)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["source"] for r in rows] == ["f0.jpg", "f1.jpg", "f2.jpg"]


def test_task_options_reach_the_task(cells_model, smear):
    few = next(run_frames(cells_model, [Frame("a", 0, smear)], RunOptions(thresholds={"RBC": 0.99})))
    many = next(run_frames(cells_model, [Frame("a", 0, smear)], RunOptions(thresholds={"RBC": 0.05})))
    assert few.result.counts["RBC"] < many.result.counts["RBC"]


def test_summary_keeps_running_totals_and_a_bounded_number_of_records(cells_model, smear):
    summary = RunSummary("cells", keep=2, sample=4)
    one = next(run_frames(cells_model, [Frame("a", 0, smear)]))
    for i in range(50):
        summary.add(one)
    summary.add(Record("bad", ok=False, task="cells", error="x"))
    assert summary.inputs == 51 and summary.failed == 1
    assert summary.task_totals.counts["RBC"] == 50 * one.result.counts["RBC"]
    assert len(summary.shown) == 4 and len(summary._sample) == 4
    assert summary.median_ms()["total"] == pytest.approx(one.timings.total)


def test_an_output_that_cannot_be_written_stops_the_run_in_one_error_keeping_what_was_written(
        cells_model, smear, tmp_path):
    from edgecell.errors import OutputError

    blocked = tmp_path / "overlays" / "r1" / "f1.jpg.png"
    blocked.mkdir(parents=True)  # the second overlay cannot be written (as on a full disk)
    (blocked / "x").write_text("x")
    options = RunOptions(out=tmp_path, run_id="r1", source_root=Path("."))
    got = []
    with pytest.raises(OutputError) as exc:
        for record in run_frames(cells_model, (Frame(f"f{i}.jpg", i, smear) for i in range(4)), options):
            got.append(record)
    assert "the run stops here" in str(exc.value) and "\n" not in str(exc.value)
    assert len(got) == 1 and len((tmp_path / "results.jsonl").read_text().splitlines()) == 1
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_options_out_of_range_are_refused_for_python_callers_too():
    from edgecell.errors import EdgecellError

    for bad in ({"tiles": 50}, {"min_confidence": 5.0}, {"top_k": 0}, {"thresholds": {"RBC": 5.0}},
                {"overlays": "some"}, {"overlay_format": "gif"}):
        with pytest.raises(EdgecellError):
            RunOptions(**bad)
