"""The held-out agreement benchmark: every file x backend against LiteRT, as a table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgecell.benchmarks.agreement import agreement_rows, markdown

PRODUCTS = Path(__file__).resolve().parents[2] / "edge" / "models" / "products_int8.tflite"


def test_rows_per_backend_on_heldout_images_and_a_table(tmp_path):
    from edgecell.calibration import data_root
    from edgecell.errors import EdgecellError

    try:
        if not (data_root() / "clothing_small_subset").is_dir():
            raise EdgecellError("no clothing data")
    except EdgecellError:
        pytest.skip("clothing_small_subset not found (set EDGECELL_DATA)")
    from edgecell.bundle.common import companion_files

    for path in [PRODUCTS, PRODUCTS.with_suffix(".json"), *companion_files(PRODUCTS.with_suffix(".json"))]:
        shutil.copy(path, tmp_path)  # the unfamiliar statistics' .npz travels with the model
    rows = agreement_rows(tmp_path, limit=2)
    assert {r["backend"] for r in rows} >= {"openvino"}
    assert all(r["images"] == 2 and r["agree"] == 2 and r["split"] == "clothing test" for r in rows)
    assert "| products_int8.tflite | openvino | clothing test | 2/2 (100.0 %) |" in markdown(rows)
