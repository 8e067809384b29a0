"""What `edgecell run` writes and how it ends, as a user meets it (issue 12 items 6-11, 13): an
output never replaces an input, outputs never collide, every record has a time and a run id,
results.csv is whole after any signal and appended by a second run, an interrupted run says so and
exits 130/143, a truncated video says it ended early, the overlay policy and budget hold."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"
CLASSIFIER = FIXTURES / "tiny_classifier_int8.tflite"


def edgecell(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EDGECELL_DEBUG"}
    return subprocess.run([sys.executable, "-m", "edgecell", *map(str, args)], capture_output=True, text=True,
                          timeout=180, env=env)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_output_into_the_input_folder_never_replaces_an_input(real_jpeg, tmp_path):
    folder = tmp_path / "x" / "s"
    folder.mkdir(parents=True)
    smear = cv2.imread(str(real_jpeg))
    cv2.imwrite(str(folder / "smear.png"), smear)
    before = (folder / "smear.png").read_bytes()
    for _ in range(2):  # the second run also sees the first run's outputs in the folder
        out = edgecell("run", CLASSIFIER, folder, "-o", folder)
        assert out.returncode == 0, out.stderr
    assert (folder / "smear.png").read_bytes() == before
    runs = records(folder)
    assert [Path(r["source"]).name for r in runs] == ["smear.png", "smear.png"]  # outputs are not inputs
    assert len({r["overlay"] for r in runs}) == 2 and all(Path(r["overlay"]).is_file() for r in runs)


def test_overlays_never_collide_and_records_have_time_and_run_id(real_jpeg, tmp_path):
    src = tmp_path / "in"
    image = cv2.imread(str(real_jpeg))
    for rel in ("d1/smear.jpg", "d2/smear.jpg", "img.bmp", "img.webp"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(src / rel), image)
    out = edgecell("run", CLASSIFIER, src, "-o", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    got = records(tmp_path / "out")
    assert len(got) == 4 and len({r["overlay"] for r in got}) == 4
    assert all(Path(r["overlay"]).is_file() for r in got)
    assert len({r["run_id"] for r in got}) == 1 and [r["seq"] for r in got] == [0, 1, 2, 3]
    assert all(r["time"].endswith("Z") and r["time"][:4].isdigit() for r in got)


def test_a_second_run_appends_to_results_csv_under_one_header(real_jpeg, tmp_path):
    for _ in range(2):
        assert edgecell("run", CLASSIFIER, real_jpeg, "-o", tmp_path).returncode == 0
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 2 and rows[0]["run_id"] != rows[1]["run_id"]
    assert (tmp_path / "results.csv").read_text().count("source,") == 1


SLOW_RUN_INPUTS = 200  # 50 s at --fps 4: a loaded machine still interrupts it long before its end


def _many(real_jpeg: Path, folder: Path, n: int = SLOW_RUN_INPUTS) -> Path:
    folder.mkdir()
    for i in range(n):
        shutil.copy(real_jpeg, folder / f"s{i:03d}.jpg")
    return folder


def _sigint_as_a_terminal_sends_it() -> None:
    """In the child, before exec: SIGINT back to its default. A shell starts background jobs (and
    so a test suite run with `&` or from a CI runner) with SIGINT ignored, which children inherit and
    Python then honours (no KeyboardInterrupt): the test is about Ctrl-C in a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_slow_run(folder: Path, out: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "EDGECELL_DEBUG"}
    return subprocess.Popen([sys.executable, "-m", "edgecell", "run", str(CLASSIFIER), str(folder), "-o", str(out),
                             "--fps", "4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_sigint_as_a_terminal_sends_it)


def _wait_for_lines(path: Path, n: int, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.is_file() and path.read_text().count("\n") >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never had {n} lines")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_exits_130_or_143_and_says_after_how_many(sig, code, real_jpeg, tmp_path):
    proc = _start_slow_run(_many(real_jpeg, tmp_path / "in"), tmp_path / "out")
    _wait_for_lines(tmp_path / "out" / "results.jsonl", 2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "interrupted after" in stderr and f"of {SLOW_RUN_INPUTS} inputs" in stderr and "Traceback" not in stderr
    n = len(records(tmp_path / "out"))
    assert 2 <= n < SLOW_RUN_INPUTS
    assert len(list(csv.DictReader((tmp_path / "out" / "results.csv").open()))) == n


def test_results_csv_is_whole_after_sigkill(real_jpeg, tmp_path):
    proc = _start_slow_run(_many(real_jpeg, tmp_path / "in"), tmp_path / "out")
    _wait_for_lines(tmp_path / "out" / "results.jsonl", 3)
    proc.kill()
    proc.wait(timeout=30)
    jsonl = records(tmp_path / "out")
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert len(rows) >= len(jsonl) - 1 >= 2  # at most the record being written when killed is missing
    assert [r["source"] for r in rows] == [r["source"] for r in jsonl][: len(rows)]
    assert all(r["ok"] == "True" for r in rows)


def _clip(real_jpeg: Path, video: Path, frames: int, *, moving: bool = False) -> Path:
    """A 160 x 120 MJPG clip of `frames` copies of the sample (shifted one pixel per frame if moving)."""
    frame = cv2.resize(cv2.imread(str(real_jpeg)), (160, 120))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(frames):
        writer.write(np.roll(frame, i, axis=1) if moving else frame)
    writer.release()
    return video


def test_truncated_video_says_it_ended_early(real_jpeg, tmp_path):
    video = _clip(real_jpeg, tmp_path / "clip.avi", 60, moving=True)
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    out = edgecell("run", CLASSIFIER, video, "-o", tmp_path / "out")
    assert out.returncode == 1
    assert "video ended early" in out.stderr and "of the 60 frames" in out.stderr
    assert 0 < len(records(tmp_path / "out")) < 60


def test_whole_video_does_not_say_it_ended_early(real_jpeg, tmp_path):
    video = _clip(real_jpeg, tmp_path / "clip.avi", 12)
    out = edgecell("run", CLASSIFIER, video, "--json")
    assert out.returncode == 0 and "ended early" not in out.stderr and len(out.stdout.splitlines()) == 12


@pytest.mark.parametrize("policy, expected", [("none", 0), ("every:2", 2), ("all", 4)])
def test_overlay_policy(policy, expected, real_jpeg, tmp_path):
    folder = _many(real_jpeg, tmp_path / "in", 4)
    out = edgecell("run", CLASSIFIER, folder, "-o", tmp_path / "out", "--overlays", policy,
                   "--min-confidence", "0")  # nothing flagged: only the policy decides
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "out").rglob("*.png"))) == expected


def test_overlay_policy_flagged_writes_only_what_a_person_must_check(real_jpeg, tmp_path):
    folder = _many(real_jpeg, tmp_path / "in", 3)
    out = edgecell("run", CLASSIFIER, folder, "-o", tmp_path / "out", "--overlays", "flagged",
                   "--min-confidence", "1")  # every result uncertain
    assert out.returncode == 0
    assert len(list((tmp_path / "out").rglob("*.png"))) == 3
    edgecell("run", CLASSIFIER, folder, "-o", tmp_path / "calm", "--overlays", "flagged", "--min-confidence", "0")
    assert list((tmp_path / "calm").rglob("*.png")) == []


def test_jpg_overlays_and_a_budget_that_stops_them_with_a_message(real_jpeg, tmp_path):
    folder = _many(real_jpeg, tmp_path / "in", 6)
    out = edgecell("run", CLASSIFIER, folder, "-o", tmp_path / "out", "--overlay-format", "jpg",
                   "--overlay-budget", "150k")
    assert out.returncode == 0, out.stderr
    written = list((tmp_path / "out").rglob("*.jpg.jpg"))
    assert 0 < len(written) < 6 and sum(p.stat().st_size for p in written) <= 150_000
    assert "overlays stopped" in out.stderr and "budget" in out.stderr
    assert len(records(tmp_path / "out")) == 6  # results go on


def test_budget_with_rotation_keeps_the_newest(real_jpeg, tmp_path):
    folder = _many(real_jpeg, tmp_path / "in", 6)
    out = edgecell("run", CLASSIFIER, folder, "-o", tmp_path / "out", "--overlay-format", "jpg",
                   "--overlay-budget", "150k", "--overlay-rotate")
    assert out.returncode == 0, out.stderr
    names = sorted(p.name for p in (tmp_path / "out").rglob("*.jpg.jpg"))
    assert "s005.jpg.jpg" in names and "s000.jpg.jpg" not in names


@pytest.mark.parametrize("option, value", [("--overlays", "some"), ("--overlay-format", "gif"),
                                           ("--overlay-budget", "lots")])
def test_bad_overlay_options_are_one_line(option, value, real_jpeg, tmp_path):
    out = edgecell("run", CLASSIFIER, real_jpeg, "-o", tmp_path, option, value)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(f"edgecell: error: {option}")


def test_a_video_writes_jpeg_overlays_of_flagged_frames_only_by_default(real_jpeg, tmp_path):
    video = _clip(real_jpeg, tmp_path / "clip.avi", 6)
    out = edgecell("run", CLASSIFIER, video, "-o", tmp_path / "out", "--min-confidence", "1")  # all uncertain
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "out").rglob("*.jpg"))) == 6 and not list((tmp_path / "out").rglob("*.png"))
    calm = edgecell("run", CLASSIFIER, video, "-o", tmp_path / "calm", "--min-confidence", "0")
    assert calm.returncode == 0 and not list((tmp_path / "calm" / "overlays").rglob("*.*"))
