"""The claims file parses, and every claim names its hardware and its source paper."""

import copy
import json

import pytest

from edgecell.benchmarks import claims as C


def test_claims_parse_and_name_hardware_and_source():
    claims = C.load_claims(check_sources=False)
    assert len(claims) >= 7
    for c in claims:
        assert c["hardware"].strip(), c["id"]
        assert c["source"].endswith(".txt") and c["source"][:3].isdigit(), c["id"]
        assert c["citation"].strip() and c["quote"].strip(), c["id"]
        assert c["value_ms"] > 0


def test_the_published_numbers():
    by_id = {c["id"]: c for c in C.load_claims(check_sources=False)}
    assert by_id["alam2019-tiny-yolo"]["value_ms"] == 60
    assert [by_id[f"alam2019-{k}"]["value_ms"] for k in ("mobilenet", "vgg16", "resnet50", "inceptionv3")] == [84, 106, 118, 130]
    assert by_id["qiu-faster-rcnn-detection"]["value_ms"] == 500 and by_id["qiu-faster-rcnn-detection"]["bound"] == "<"
    assert "GTX 1070" in by_id["qiu-faster-rcnn-detection"]["hardware"]
    assert "GTX 1050 Ti" in by_id["alam2019-tiny-yolo"]["hardware"] and "i5-6500" in by_id["alam2019-tiny-yolo"]["hardware"]
    assert by_id["alam2019-full-count"]["measure"] == "pipeline"


@pytest.mark.skipif(not C.SEEDS_DIR.is_dir(), reason="papers (../shared/seeds) not in this checkout")
def test_quotes_are_verbatim_in_the_papers():
    C.load_claims(check_sources=True)


def test_validation_rejects_a_claim_without_hardware():
    data = json.loads(C.CLAIMS_FILE.read_text())
    bad = copy.deepcopy(data)
    bad["claims"][0]["hardware"] = ""
    with pytest.raises(C.ClaimsError, match="hardware"):
        C.validate(bad)
    bad = copy.deepcopy(data)
    del bad["claims"][1]["source"]
    with pytest.raises(C.ClaimsError, match="source"):
        C.validate(bad)


def test_compare_sets_claim_beside_best_row():
    claims = C.load_claims(check_sources=False)
    rows = [
        {"status": "ok", "family": "cells", "name": "cells_int8", "backend": "litert", "precision": "int8", "threads": 2,
         "latency_ms": {"median": 30.0}, "pipeline_ms": {"total": {"median": 45.0}}},
        {"status": "ok", "family": "cells", "name": "cells_fp32", "backend": "litert", "precision": "fp32", "threads": 2,
         "latency_ms": {"median": 90.0}},
        {"status": "skipped", "family": "cells", "name": "cells_int8", "backend": "openvino"},
    ]
    out = {c["id"]: c for c in C.compare(claims, rows)}
    assert out["alam2019-tiny-yolo"]["measured_ms"] == 30.0 and out["alam2019-tiny-yolo"]["ratio"] == pytest.approx(0.5)
    assert out["alam2019-full-count"]["measured_ms"] == 45.0 and out["alam2019-full-count"]["meets"] is True
    assert out["alam2019-vgg16"]["measured_ms"] is None and "not measured" in out["alam2019-vgg16"]["note"]
