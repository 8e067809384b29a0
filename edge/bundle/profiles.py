"""Device profiles: what a kind of device runs (wheel platform, Python, model format, backend)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgecell.bundle.common import BundleError


# --------------------------------------------------------------------------------------------
# Profiles: what a kind of device runs. Kept here (not in benchmarks/profiles.py) because a
# bundle needs the wheel platform tags and the Python of the target, which a benchmark does not.


@dataclass(frozen=True)
class BundleProfile:
    name: str
    description: str
    arch: str                 # x86_64 | aarch64
    glibc: tuple[int, int]    # newest glibc a wheel may need (manylinux_2_N tags up to this)
    python: str               # default target Python (major.minor)
    formats: tuple[str, ...]  # model formats, best first; the first one found beside a model is shipped
    backend: str              # the backend that runs the preferred format
    extra: str | None         # edgecell extra that installs that backend (None: base install)
    notes: str = ""

    def platforms(self) -> list[str]:
        """pip --platform tags, newest first. pip does not expand manylinux tags given with
        --platform, so every compatible manylinux_2_N tag is listed."""
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 16, -1)]
        tags.append(f"manylinux2014_{self.arch}")
        if self.arch == "x86_64":
            tags += [f"manylinux_2_12_{self.arch}", f"manylinux2010_{self.arch}",
                     f"manylinux_2_5_{self.arch}", f"manylinux1_{self.arch}"]
        return tags

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["glibc"] = f"{self.glibc[0]}.{self.glibc[1]}"
        d["formats"] = list(self.formats)
        return d


PROFILES: dict[str, BundleProfile] = {
    # Why LiteRT on an old x86: without VNNI, OpenVINO's and ONNX Runtime's INT8 kernels multiply
    # u8 x s8 pairs into a saturating 16-bit sum; the shipped IR/ONNX siblings keep the .tflite's
    # 8-bit weights (no overflow fix), so there they can give other answers than the carded ones
    # (cells: counts off LiteRT's by more than one cell with OpenVINO held to AVX2). LiteRT's
    # (XNNPACK) integer kernels sum in 32 bits on every x86, so the .tflite gives the card's answers.
    "x86-legacy": BundleProfile(
        "x86-legacy", "Older x86-64 PC or X-ray cart (AVX2, no VNNI): the INT8 .tflite on LiteRT.",
        arch="x86_64", glibc=(2, 31), python="3.11", formats=(".tflite",),
        backend="litert", extra=None,
        notes="Wheels picked for glibc <= 2.31 (Debian 11, Ubuntu 20.04 or newer); the manifest's "
              "wheelhouse.min_glibc is what the device really needs (2.28 for the 2026 wheels). "
              "`edgecell info` on the device says which x86 profile it takes."),
    "x86-vnni": BundleProfile(
        "x86-vnni", "x86-64 PC with AVX-512 VNNI or AVX-VNNI (Intel since Ice Lake / Alder Lake, AMD Zen 4): "
        "OpenVINO IR first.",
        arch="x86_64", glibc=(2, 31), python="3.11", formats=(".xml", ".onnx", ".tflite"),
        backend="openvino", extra="openvino",
        notes="Only for CPUs with VNNI: on AVX2 alone the INT8 IR can answer differently from LiteRT "
              "(take x86-legacy). Wheels picked for glibc <= 2.31, as x86-legacy."),
    "raspberry-pi": BundleProfile(
        "raspberry-pi", "Raspberry Pi 4/5, 64-bit Raspberry Pi OS (Bookworm: Python 3.11): LiteRT.",
        arch="aarch64", glibc=(2, 36), python="3.11", formats=(".tflite",),
        backend="litert", extra=None,
        notes="64-bit OS only (no 32-bit armv7l wheels of ai-edge-litert)."),
    "jetson": BundleProfile(
        "jetson", "NVIDIA Jetson, JetPack 6 (Ubuntu 22.04, Python 3.10): ONNX Runtime, LiteRT fallback.",
        arch="aarch64", glibc=(2, 35), python="3.10", formats=(".onnx", ".tflite"),
        backend="onnxruntime", extra="onnx",
        notes="PyPI's aarch64 onnxruntime is CPU-only; for CUDA/TensorRT install NVIDIA's Jetson "
              "onnxruntime-gpu wheel into the bundle's venv afterwards."),
}


def get_profile(name: str) -> BundleProfile:
    if name not in PROFILES:
        raise BundleError(f"unknown bundle profile {name!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]


def profile_for_device(arch: str, isa: list[str] | tuple[str, ...], board: str | None = None) -> str | None:
    """The bundle profile a device with this architecture, ISA flags (`edgecell.device` names) and
    board takes, or None when none fits (32-bit ARM). On x86 the INT8 dot-product instructions
    decide it: without VNNI the OpenVINO/ONNX INT8 kernels can saturate (see PROFILES)."""
    from edgecell.device import VNNI_FLAGS

    arch = arch.lower()
    if arch in ("x86_64", "amd64"):
        return "x86-vnni" if set(VNNI_FLAGS) & set(isa) else "x86-legacy"
    if arch in ("aarch64", "arm64"):
        return "jetson" if board and "jetson" in board.lower() else "raspberry-pi"
    return None
