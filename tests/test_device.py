import pytest

from edgecell.device import describe_device


def test_device_description_has_what_benchmarks_report():
    d = describe_device()
    assert d["cores"] >= 1 and d["arch"]
    assert isinstance(d["isa"], list) and "litert" in d["backends"]
    if d["arch"] in ("x86_64", "AMD64"):
        assert "avx2" in d["isa"] or not d["isa"]  # every x86 machine this runs on since 2013


def test_device_description_names_the_bundle_profile_its_isa_calls_for():
    from edgecell.bundle.profiles import profile_for_device

    d = describe_device()
    assert d["bundle_profile"] == profile_for_device(d["arch"], d["isa"], d["board"])


X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9454P 48-Core Processor
flags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni
"""
PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd08
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def test_x86_cpuinfo_on_x86():
    from edgecell.device import _cpuinfo

    assert _cpuinfo(X86_CPUINFO, "x86_64") == ("AMD EPYC 9454P 48-Core Processor",
                                                ["avx2", "fma", "avx512f", "avx512_vnni"])


def test_host_cpuinfo_under_emulation_is_not_believed():
    """qemu-user on an x86 host: the aarch64 guest reads the host's /proc/cpuinfo."""
    from edgecell.device import _cpuinfo

    model, isa = _cpuinfo(X86_CPUINFO, "aarch64")
    assert "EPYC" not in model and "emulated" in model and not [f for f in isa if f.startswith("avx")]


def test_raspberry_pi_cpuinfo_names_the_core_and_neon():
    from edgecell.device import _cpuinfo

    model, isa = _cpuinfo(PI4_CPUINFO, "aarch64")
    assert model == "ARM Cortex-A72 (Raspberry Pi 4 Model B Rev 1.4)" and "asimd" in isa and "asimddp" not in isa


AVX2_CPUINFO = X86_CPUINFO.replace("model name\t: AMD EPYC 9454P 48-Core Processor", "model name\t: Intel Core i5-4590") \
                          .replace(" avx512f avx512_vnni", "")


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_int8_on_a_saturating_backend_without_vnni_is_warned(backend):
    from edgecell.device import int8_saturation_warning

    warning = int8_saturation_warning(backend, "int8", "x86_64", AVX2_CPUINFO)
    assert warning and "without VNNI (Intel Core i5-4590)" in warning and "-b litert" in warning


@pytest.mark.parametrize("backend, precision, cpuinfo", [
    ("litert", "int8", AVX2_CPUINFO),         # XNNPACK sums in 32 bits
    ("openvino", "fp32", AVX2_CPUINFO),       # no INT8 kernels
    ("openvino", "int8", X86_CPUINFO),        # VNNI
])
def test_no_int8_warning_where_the_answers_hold(backend, precision, cpuinfo):
    from edgecell.device import int8_saturation_warning

    assert int8_saturation_warning(backend, precision, "x86_64", cpuinfo) is None
