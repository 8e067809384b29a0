"""`edgecell run MODEL` without a source runs on the shipped samples of the model's own task: a
product classifier is never shown blood smears by default (it answered "hat 0.61" for a smear)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from edgecell.resources import shipped_samples


def edgecell(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EDGECELL_DEBUG"}
    return subprocess.run([sys.executable, "-m", "edgecell", *map(str, args)], capture_output=True, text=True,
                          timeout=180, env=env)


def sources(stdout: str) -> set[str]:
    return {json.loads(line)["source"].replace("\\", "/").rsplit("/", 1)[-1] for line in stdout.splitlines()}


def test_products_model_without_a_source_runs_on_the_product_samples():
    done = edgecell("run", "products", "--json")
    assert done.returncode == 0, done.stderr
    expected = {p.name for p in shipped_samples("products").iterdir() if p.suffix == ".jpg"}
    assert sources(done.stdout) == expected


def test_products_gate_without_a_source_runs_on_the_product_samples():
    done = edgecell("run", "gate_products", "--json")
    assert done.returncode == 0, done.stderr
    assert all(name.split("_")[0] in {"hat", "pants", "shoes"} for name in sources(done.stdout))


def test_xray_model_without_a_source_asks_for_input_in_one_line():
    done = edgecell("run", "xray")
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0
    assert "no shipped sample images for 'xray'" in done.stderr
