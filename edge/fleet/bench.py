"""`edgecell fleet bench`: `edgecell bench --json` on every device (the shipped `bench` playbook),
gathered per device. The report across devices (tables, PNG) is written by
`edgecell.benchmarks.fleet_report`; this module only collects."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecell.fleet.ansible import SshSettings, list_devices, run_playbook


@dataclass
class DeviceBench:
    """One device's `edgecell bench --json` document (`result`: device info, rows, claims), or why not."""
    device: str
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fleet_bench(inventory: Path, bench_args: list[str], *, limit: str | None = None,
                ssh: SshSettings | None = None, timeout: float = 3600) -> list[DeviceBench]:
    """Run `edgecell bench BENCH_ARGS --json` on every device of `inventory` (matching `limit`) at
    once; each device benchmarks its own CPU, so running them together skews none of them."""
    devices = list_devices(inventory, limit)
    run = run_playbook("bench", inventory, limit=",".join(devices), extra_vars={"bench_args": list(bench_args)},
                       ssh=ssh, forks=len(devices), timeout=timeout)
    out = []
    for host in devices:
        task = run.task(host, "bench")
        text = task.stdout if task is not None else ""
        try:
            doc = json.loads(text[text.index("{"):]) if "{" in text else None
        except json.JSONDecodeError:
            doc = None
        if doc is None:
            out.append(DeviceBench(device=host, ok=False, error=run.error(host) or "no bench result"))
        else:
            out.append(DeviceBench(device=host, ok=True, result=doc))
    return out
