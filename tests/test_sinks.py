import json
import os

from edgecell.sinks import JsonlWriter, overlay_name, write_json_atomic


def test_jsonl_lines_survive_a_writer_that_is_never_closed(tmp_path):
    path = tmp_path / "r.jsonl"
    writer = JsonlWriter(path)
    writer.write({"source": "a.jpg", "ok": True})
    writer.write({"source": "b.jpg", "ok": False})
    # a crash now (no close) must not lose the lines already written
    assert [json.loads(l)["source"] for l in path.read_text().splitlines()] == ["a.jpg", "b.jpg"]
    writer.close()


def test_jsonl_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "r.jsonl"
    with JsonlWriter(path) as w:
        w.write({"n": 1})
    with JsonlWriter(path) as w:
        w.write({"n": 2})
    assert path.read_text().count("\n") == 2


def test_numpy_values_are_serialised(tmp_path):
    import numpy as np

    with JsonlWriter(tmp_path / "r.jsonl") as w:
        w.write({"count": np.int64(3), "box": np.array([1.5, 2.0])})
    assert json.loads((tmp_path / "r.jsonl").read_text()) == {"count": 3, "box": [1.5, 2.0]}


def test_json_report_is_replaced_atomically(tmp_path):
    path = write_json_atomic(tmp_path / "report.json", {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(tmp_path) == ["report.json"]


def test_overlay_names():
    assert overlay_name("/x/smear.jpg", 0) == "smear.png"
    assert overlay_name("camera0#12", 12) == "camera0_000012.png"
