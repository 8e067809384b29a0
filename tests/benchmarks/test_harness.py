"""The benchmark's pipeline timing runs the task exactly as `edgecell run` does."""

from pathlib import Path

import numpy as np
import pytest

from edgecell.benchmarks.harness import measure_pipeline
from edgecell.model import load_model

XRAY = Path(__file__).resolve().parents[2] / "edge" / "models" / "xray_int8.tflite"


@pytest.mark.skipif(not XRAY.is_file(), reason="no shipped X-ray model")
def test_xray_pipeline_timing_includes_gradcam():
    image = np.full((320, 320, 3), 128, np.uint8)
    out, result = measure_pipeline(load_model(XRAY), image, iterations=2)
    assert result.heatmap is not None  # the head was found: the timing is pipeline.predict's
    assert out["post"]["median"] > 0


CELLS = Path(__file__).resolve().parents[2] / "edge" / "models" / "cells_int8.tflite"
SMEAR = sorted((Path(__file__).resolve().parents[2] / "edge" / "samples" / "bccd").glob("*.jpg"))[0]


def test_openvino_row_on_the_shipped_int8_tflite_agrees_with_litert():
    from edgecell.benchmarks.harness import RowSpec, measure_row

    row = measure_row(RowSpec(model=str(CELLS), backend="openvino", threads=1, iterations=2, warmup=1,
                              image=str(SMEAR), async_throughput=False, keep_timings=False))
    assert row["status"] == "ok", row.get("reason")
    assert row["agreement"].startswith("agrees with litert")


def test_row_answering_differently_from_litert_is_wrong_never_ok():
    from edgecell.benchmarks.harness import RowSpec, check_agreement
    from edgecell.images import decode_image

    row = {"status": "ok", "sample_image": str(SMEAR)}
    no_cells = {"counts": {"RBC": 0, "WBC": 0, "Platelets": 0}}  # what OpenVINO answered before the fix
    check_agreement(RowSpec(model=str(CELLS), backend="openvino"), None, decode_image(SMEAR), no_cells, row)
    assert row["status"] == "wrong" and "RBC 0 vs" in row["reason"]


def test_every_shipped_tflite_model_gets_an_ok_row_on_litert():
    """Every shipped model's bare call is timed on the input its task really gives the model (the
    rbc patch model takes a batch of patches, not the smear: its row failed before)."""
    from edgecell.benchmarks.harness import RowSpec, measure_row
    from edgecell.resources import shipped_models

    for name, path in shipped_models().items():
        row = measure_row(RowSpec(model=str(path), backend="litert", threads=1, iterations=1, warmup=0,
                                  async_throughput=False, keep_timings=False))
        assert row["status"] == "ok", (name, row.get("reason"), row.get("error"))
