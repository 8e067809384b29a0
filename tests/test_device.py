from edgecell.device import describe_device


def test_device_description_has_what_benchmarks_report():
    d = describe_device()
    assert d["cores"] >= 1 and d["arch"]
    assert isinstance(d["isa"], list) and "litert" in d["backends"]
    if d["arch"] in ("x86_64", "AMD64"):
        assert "avx2" in d["isa"] or not d["isa"]  # every x86 machine this runs on since 2013
