"""What this device is: CPU, cores, instruction sets that decide INT8 speed (AVX2, AVX-512 VNNI,
NEON dot product), Raspberry Pi or Jetson model, temperature and throttling, installed backends."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "neon", "asimd", "asimddp", "sve")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return ""


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = "", set()
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    if not model:
        model = platform.processor() or platform.machine()
    return model, [f for f in ISA_FLAGS if f in flags]


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
    from edgecell.backends import backend_versions

    model, isa = _cpuinfo()
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    mem_kb = next((int(l.split()[1]) for l in _read("/proc/meminfo").splitlines() if l.startswith("MemTotal")), 0)
    return {
        "cpu": model,
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "isa": isa,
        "int8_dot_product": any(f in isa for f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")),
        "freq_mhz": int(freq) // 1000 if freq.isdigit() else None,
        "memory_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "board": board_model(),
        "temperature_c": temperature_c(),
        "throttled": throttled(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "backends": backend_versions(),
    }
