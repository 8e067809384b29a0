"""The gate-overhead benchmark on the shipped products pair, two photos, one repeat (real backend)."""

from pathlib import Path

from edgecell.benchmarks.gate_overhead import VARIANTS, OverheadSpec, markdown, measure_overhead

MODELS = Path(__file__).resolve().parents[2] / "edge" / "models"
PHOTOS = sorted(str(p) for p in (MODELS.parent / "samples" / "products").glob("*.jpg"))[:2]


def test_gated_vs_ungated_on_the_same_images():
    r = measure_overhead(OverheadSpec(str(MODELS / "gate_products_int8.tflite"), str(MODELS / "products_int8.tflite"),
                                      PHOTOS, repeats=2, warmup=1))
    assert r["images"] == 2 and set(r["variants"]) == set(VARIANTS)
    for v in VARIANTS:
        s = r["variants"][v]["wall_ms"]
        assert s["n"] == 4 and 0 < s["median"] <= s["p90"] <= s["max"]
    for v in ("gated", "gated_separate"):
        o = r["overhead"][v]
        # the ratio's value is the benchmark's business (noisy machines); here only that it is computed
        assert o["median_ratio"] > 0 and len(o["per_repeat_median_ratio"]) == 2
    assert "gated_separate" in markdown([r])
