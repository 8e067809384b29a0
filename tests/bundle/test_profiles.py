"""Which bundle profile a device takes, and the profile names every command accepts."""

from __future__ import annotations

import pytest

from edgecell.bundle.profiles import PROFILES, profile_for_device


@pytest.mark.parametrize("isa", [["avx2", "fma"], ["avx2", "fma", "avx512f"]])
def test_x86_without_vnni_takes_the_legacy_profile(isa):
    assert profile_for_device("x86_64", isa) == "x86-legacy"
    assert PROFILES["x86-legacy"].formats[0] == ".tflite" and PROFILES["x86-legacy"].backend == "litert"


@pytest.mark.parametrize("flag", ["avx512_vnni", "avx_vnni", "amx_int8"])
def test_x86_with_vnni_takes_the_openvino_profile(flag):
    assert profile_for_device("x86_64", ["avx2", "fma", flag]) == "x86-vnni"


def test_arm_boards_take_their_profiles():
    assert profile_for_device("aarch64", ["neon", "asimd"], "Raspberry Pi 5 Model B Rev 1.0") == "raspberry-pi"
    assert profile_for_device("aarch64", ["neon", "asimd"], "NVIDIA Jetson Orin Nano Developer Kit") == "jetson"
    assert profile_for_device("armv7l", ["neon"]) is None  # no 32-bit ARM wheels of LiteRT


def test_every_bundle_profile_is_a_bench_profile():
    """`edgecell fleet bench` passes a device's bundle profile to `edgecell bench --profile`."""
    from edgecell.benchmarks.profiles import PROFILES as BENCH_PROFILES

    assert set(PROFILES) == set(BENCH_PROFILES)
