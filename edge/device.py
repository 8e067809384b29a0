"""What this device is: CPU, cores, instruction sets that decide INT8 speed (AVX2, AVX-512 VNNI,
NEON dot product), Raspberry Pi or Jetson model, temperature and throttling, installed backends."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

#: instruction sets that decide INT8 speed, per architecture (cpuinfo flag names)
X86_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
ARM_FLAGS = ("neon", "asimd", "asimddp", "sve")
ISA_FLAGS = X86_FLAGS + ARM_FLAGS
#: x86 flags whose INT8 dot product sums u8 x s8 pairs in 32 bits; without one, OpenVINO's and ONNX
#: Runtime's INT8 kernels sum pairs into a saturating 16-bit value
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: backends whose x86 INT8 kernels saturate without VNNI (LiteRT's XNNPACK kernels do not)
SATURATING_INT8_BACKENDS = ("openvino", "onnxruntime")
#: aarch64 AT_HWCAP bits (linux/arch/arm64/include/uapi/asm/hwcap.h)
_AARCH64_HWCAP = {"asimd": 1 << 1, "asimddp": 1 << 20, "sve": 1 << 22}
#: ARM CPU part numbers of the boards edgecell targets
_ARM_PARTS = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd08": "Cortex-A72",
              "0xd0b": "Cortex-A76", "0xd42": "Cortex-A78AE", "0xd4f": "Neoverse-V2"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return ""


def _is_arm(machine: str) -> bool:
    return machine.lower().startswith(("aarch64", "arm"))


def _hwcap_flags(machine: str) -> set[str]:
    """ISA from the kernel's (or the emulator's) AT_HWCAP for the architecture this Python runs on:
    under qemu-user that is the emulated CPU, whatever the host's /proc/cpuinfo says."""
    if machine.lower() not in ("aarch64", "arm64") or machine != platform.machine():
        return set()
    try:
        import ctypes

        hwcap = ctypes.CDLL(None).getauxval(16)  # AT_HWCAP
    except (OSError, AttributeError):
        return set()
    found = {name for name, bit in _AARCH64_HWCAP.items() if hwcap & bit}
    return found | ({"neon"} if "asimd" in found else set())


def _cpuinfo(text: str | None = None, machine: str | None = None) -> tuple[str, list[str]]:
    """(CPU name, ISA flags) of the architecture this Python runs on. /proc/cpuinfo is used only
    when it describes that architecture: under plain qemu-user emulation it is the host's
    (an x86 "AMD EPYC, AVX-512" on an aarch64 guest), and then it is not believed."""
    machine = machine or platform.machine()
    text = _read("/proc/cpuinfo") if text is None else text
    model, flags, keys, part = "", set(), set(), ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        keys.add(key)
        if key in ("model name", "hardware", "cpu model", "model") and not model and not value.strip().isdigit():
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
        elif key == "cpu part" and not part:
            part = value.strip()
    arm = _is_arm(machine)
    describes_arm = "cpu implementer" in keys or "features" in keys
    describes_x86 = "vendor_id" in keys or "flags" in keys
    if (arm and describes_x86 and not describes_arm) or (not arm and describes_arm and not describes_x86):
        model, flags = f"{machine} CPU (/proc/cpuinfo describes another architecture: emulated)", set()
    elif arm and part in _ARM_PARTS and (not model or model.lower().startswith("raspberry")):
        model = f"ARM {_ARM_PARTS[part]}" + (f" ({model})" if model else "")
    flags |= _hwcap_flags(machine)
    if not model:
        model = platform.processor() or machine
    allowed = ARM_FLAGS if arm else X86_FLAGS
    return model, [f for f in allowed if f in flags]


def board_model() -> str | None:
    """'Raspberry Pi 5 Model B Rev 1.0', 'NVIDIA Jetson Orin Nano ...' or None."""
    model = _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    if model:
        return model
    tegra = _read("/etc/nv_tegra_release")
    return f"NVIDIA Jetson ({tegra.splitlines()[0]})" if tegra else None


def temperature_c() -> float | None:
    raw = _read("/sys/class/thermal/thermal_zone0/temp")
    try:
        return int(raw) / 1000.0
    except ValueError:
        return None


def throttled() -> str | None:
    """Raspberry Pi firmware throttling flags (`vcgencmd get_throttled`), when available."""
    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=2)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def describe_device() -> dict:
    """This device as `edgecell info`, bench reports and fleet status show it, with the bundle
    profile it should take (on x86 that depends on VNNI: without it the INT8 .tflite on LiteRT)."""
    from edgecell.backends import backend_versions
    from edgecell.bundle.profiles import profile_for_device

    model, isa = _cpuinfo()
    board = board_model()
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    mem_kb = next((int(l.split()[1]) for l in _read("/proc/meminfo").splitlines() if l.startswith("MemTotal")), 0)
    return {
        "cpu": model,
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "isa": isa,
        "int8_dot_product": any(f in isa for f in (*VNNI_FLAGS, "asimddp")),
        "freq_mhz": int(freq) // 1000 if freq.isdigit() else None,
        "memory_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "board": board,
        "bundle_profile": profile_for_device(platform.machine(), isa, board),
        "temperature_c": temperature_c(),
        "throttled": throttled(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "backends": backend_versions(),
    }


def int8_saturation_warning(backend: str, precision: str, machine: str | None = None,
                            cpuinfo: str | None = None) -> str | None:
    """Why an INT8 model on `backend` may not give its model card's answers on this CPU, or None.

    On x86 without VNNI, OpenVINO's and ONNX Runtime's INT8 kernels can saturate; the shipped IR and
    ONNX siblings keep the .tflite's 8-bit weights (no overflow fix), and on an emulated AVX2-only
    CPU they answered differently from LiteRT on 10-45 % of held-out images (README, "INT8 and your
    CPU"), while LiteRT's answers did not change. Said once per run, not per image: it is a
    property of the CPU and the backend, not of an image."""
    machine = (machine or platform.machine()).lower()
    if precision != "int8" or backend not in SATURATING_INT8_BACKENDS or machine not in ("x86_64", "amd64"):
        return None
    model, isa = _cpuinfo(cpuinfo, machine)
    if not isa or any(flag in isa for flag in VNNI_FLAGS):  # no flags read: nothing known to say
        return None
    return (f"INT8 model on {backend} on a CPU without VNNI ({model}): its INT8 kernels can saturate here and "
            "give other answers than LiteRT and the model card; run the .tflite on LiteRT (-b litert; bundle "
            "profile x86-legacy)")
