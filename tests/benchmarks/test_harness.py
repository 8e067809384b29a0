"""The benchmark's pipeline timing runs the task exactly as `edgecell run` does."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgecell.benchmarks.harness import measure_pipeline
from edgecell.model import load_model
from edgecell.tasks import xray

XRAY = Path(__file__).resolve().parents[2] / "edge" / "models" / "xray_int8.tflite"


@pytest.mark.skipif(not XRAY.is_file(), reason="no shipped X-ray model")
def test_xray_pipeline_timing_includes_gradcam():
    model = load_model(XRAY)
    results = []

    def postprocess(outputs, context, info, **options):
        results.append(xray.postprocess(outputs, context, info, **options))
        return results[-1]

    task = SimpleNamespace(preprocess=xray.preprocess, infer=xray.infer, postprocess=postprocess)
    image = np.full((320, 320, 3), 128, np.uint8)
    out = measure_pipeline(model.session, model.info, task, image, iterations=2)
    assert all(r.heatmap is not None for r in results)  # the head was found, as in pipeline.predict
    assert out["post"]["median"] > 0
