"""The closing table of `edgecell run`: readable on an 80-column console whatever the task."""

from __future__ import annotations

import os
import subprocess
import sys

from edgecell.commands.render import MAX_CLASS_COLUMNS, _nonzero
from edgecell.resources import shipped_path

CHULA = shipped_path("samples", "chula")


def run_rbc(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGECELL_DEBUG", "COLUMNS")} | {"COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "edgecell", "run", "rbc", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


def test_nonzero_lists_the_classes_that_occur_most_first():
    assert _nonzero({"normal": 3, "burr": 0, "ovalocyte": 5}) == "ovalocyte 5, normal 3"


def test_nonzero_of_nothing_is_zero():
    assert _nonzero({"normal": 0}) == "0"


def test_many_classes_fold_into_one_counts_column_on_80_columns(tmp_path):
    done = run_rbc(CHULA / "chula_302.jpg", "-o", tmp_path)
    header = next(line for line in done.stdout.splitlines() if "source" in line)
    assert "counts" in header and "normal" not in header and MAX_CLASS_COLUMNS < 13, done.stdout


def test_smear_flag_has_its_own_column(tmp_path):
    done = run_rbc(CHULA / "chula_302.jpg", "-o", tmp_path)
    assert "ABNORMAL (stomatocyte)" in done.stdout and done.returncode == 0, done.stdout + done.stderr

