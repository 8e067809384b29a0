"""`edgecell commission` on the command line: the report from a model and a site's labelled films;
`--adapt` refuses a model it cannot adapt with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_commission import FIXTURE, site  # noqa: F401  (the fixture: synthetic films and labels.csv)


def edgecell(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EDGECELL_DEBUG"}
    return subprocess.run([sys.executable, "-m", "edgecell", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def test_commission_writes_the_local_validation_report(site, tmp_path):  # noqa: F811
    films, labels = site
    out = edgecell("commission", FIXTURE, films, "--labels", labels, "-o", tmp_path / "out", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)["report"]
    assert report["films"] == 9 and len(report["wrong"]) == 1
    for name in ("commission.json", "commission.md", "wrong.csv", "confusion.png"):
        assert (tmp_path / "out" / name).is_file()


def test_adapt_on_a_model_it_cannot_adapt_is_one_line(site, tmp_path):  # noqa: F811
    films, labels = site
    out = edgecell("commission", FIXTURE, films, "--labels", labels, "-o", tmp_path / "out", "--adapt", "--train", "3")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("edgecell: error: --adapt") and "Traceback" not in out.stderr
