"""`edgecell run --serve` and `--show` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgecell.live import opencv_has_gui
from edgecell.resources import shipped_samples


def edgecell(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgecell", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.skipif(opencv_has_gui(), reason="this OpenCV has windows: --show works as before")
def test_show_without_gui_opencv_says_so_once_and_points_to_serve(tmp_path):
    res = edgecell("run", "cells", shipped_samples("bccd"), "--show", "--out", tmp_path)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgecell: error: --show") and "--serve" in lines[0]
    assert not (tmp_path / "results.jsonl").exists()


def test_run_with_serve_announces_the_page_and_writes_every_result(tmp_path):
    res = edgecell("run", "cells", shipped_samples("bccd"), "--serve", "127.0.0.1:0", "--out", tmp_path, "--json")
    assert res.returncode == 0, res.stderr
    banner = [line for line in res.stderr.splitlines() if line.startswith("live view: http://127.0.0.1:")]
    assert banner and "this machine only" in banner[0]
    assert len([json.loads(line) for line in res.stdout.splitlines()]) == 4


def test_serve_with_a_bad_address_is_one_line(tmp_path):
    res = edgecell("run", "cells", shipped_samples("bccd"), "--serve", "host:port")
    assert res.returncode != 0 and res.stderr.startswith("edgecell: error: --serve 'host:port'")
