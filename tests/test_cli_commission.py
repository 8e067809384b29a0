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


def test_a_site_model_worse_than_the_shipped_one_says_so_and_exits_1(site, tmp_path, monkeypatch):  # noqa: F811
    """The adaptation's paired verdict reaches the person: printed, and exit 1 when the site model is worse."""
    from typer.testing import CliRunner

    from edgecell.cli import app
    from edgecell.commands import commission

    figures = {"accuracy": 0.8, "ci95": [0.7, 0.9], "films": 6}
    change = {"verdict": "worse", "message": "the site model is WORSE on the held-back films: -15.6 points"}
    monkeypatch.setattr(commission, "run_adapt", lambda *a: {
        "films_adapted_on": 3, "films_evaluated": 6, "before": figures, "after": figures, "model": "m_site.tflite",
        "openvino": "m_site.xml", "change": change})
    films, labels = site
    res = CliRunner().invoke(app, ["commission", str(FIXTURE), str(films), "--labels", str(labels),
                                   "-o", str(tmp_path / "out"), "--adapt", "--train", "3"])
    assert res.exit_code == 1 and "WORSE" in res.output
