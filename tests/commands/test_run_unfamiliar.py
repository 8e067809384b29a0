"""`edgecell run` on one image the model finds unfamiliar: the answer is written, flagged, a line
`edgecell: unfamiliar: ...` goes to stderr and the exit status is 3, so a script never takes it
as a good answer; a familiar image exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from edgecell.resources import shipped_path

PRODUCTS = shipped_path("models", "products_int8.tflite")
SMEAR = sorted(shipped_path("samples", "bccd").glob("*.jpg"))[0]
PRODUCT = sorted(shipped_path("samples", "products").glob("hat_*.jpg"))[0]


def run(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EDGECELL_DEBUG"}
    return subprocess.run([sys.executable, "-m", "edgecell", "run", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


def test_smear_given_to_the_product_classifier_exits_3_saying_unfamiliar():
    done = run(PRODUCTS, SMEAR, "--json")
    assert done.returncode == 3 and "edgecell: unfamiliar:" in done.stderr, done.stderr


def test_smear_given_to_the_product_classifier_is_written_flagged():
    record = json.loads(run(PRODUCTS, SMEAR, "--json").stdout.splitlines()[0])
    assert record["result"]["unfamiliar"] is True and record["result"]["uncertain"] is True


def test_product_photo_exits_0():
    done = run(PRODUCTS, PRODUCT)
    assert done.returncode == 0 and "unfamiliar" not in done.stderr.lower(), done.stderr


def test_product_photo_given_to_the_cells_counter_exits_3():
    done = run(shipped_path("models", "cells_int8.tflite"), PRODUCT)
    assert done.returncode == 3 and "blood smears" in done.stderr, done.stderr


def test_folder_with_a_smear_goes_on_and_exits_0(tmp_path):
    for path in (SMEAR, PRODUCT):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    done = run(PRODUCTS, tmp_path, "--json")
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 2, done.stderr


def test_closing_table_of_a_counting_run_marks_the_unfamiliar_image(tmp_path):
    (tmp_path / "a.jpg").write_bytes(PRODUCT.read_bytes())
    done = run(shipped_path("models", "cells_int8.tflite"), tmp_path)
    assert "a.jpg (unfamiliar)" in done.stdout, done.stdout


def test_product_photo_given_to_the_morphology_task_exits_3():
    done = run(shipped_path("models", "rbc_int8.tflite"), PRODUCT)
    assert done.returncode == 3 and "not assessed as a blood smear" in done.stderr, done.stderr
