import json
import os

from pathlib import Path

from edgecell.sinks import JsonlWriter, overlay_relpath, write_bytes_atomic, write_json_atomic


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


def test_overlay_paths_mirror_the_source_and_never_collide(tmp_path):
    root = tmp_path / "in"
    names = {overlay_relpath(str(root / rel), root) for rel in ("d1/smear.jpg", "d2/smear.jpg", "img.bmp", "img.webp")}
    assert len(names) == 4 and Path("d1/smear.jpg") in names
    assert overlay_relpath("camera0#12", None) == Path("camera0/00000012")


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "taken"
    target.mkdir()  # the rename onto it fails, as a full disk or read-only folder would fail the write
    (target / "inside").write_text("x")
    try:
        write_bytes_atomic(target, b"data")
    except OSError:
        pass
    else:
        raise AssertionError("writing onto a folder must fail")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def _record(source, ok=True, label="red"):
    from edgecell.pipeline import Record
    from edgecell.tasks.classify import ClassifyResult

    result = ClassifyResult(label, 0, 0.9) if ok else None
    return Record(source, ok=ok, task="classify", result=result, error=None if ok else "bad file")


def test_csv_rows_are_appended_as_written_and_a_second_run_appends_under_one_header(tmp_path):
    from edgecell.sinks import CsvSink

    path = tmp_path / "results.csv"
    sink = CsvSink(path)
    sink.write(_record("a.jpg"))
    assert path.read_text().splitlines()[1].startswith("a.jpg,True")  # on disk before close
    sink.close()
    again = CsvSink(path)
    again.write(_record("b.jpg", ok=False))
    again.write(_record("c.jpg"))
    again.close()
    lines = path.read_text().splitlines()
    assert lines[0].startswith("source,ok,error") and sum(l.startswith("source,") for l in lines) == 1
    assert [l.split(",")[0] for l in lines[1:]] == ["a.jpg", "b.jpg", "c.jpg"]


def test_csv_of_a_run_where_every_input_failed_still_has_its_rows(tmp_path):
    from edgecell.sinks import CsvSink

    sink = CsvSink(tmp_path / "results.csv")
    sink.write(_record("x.jpg", ok=False))
    sink.close()
    assert (tmp_path / "results.csv").read_text().splitlines() == ["source,ok,error", "x.jpg,False,bad file"]
