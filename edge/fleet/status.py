"""`edgecell fleet status`: a read-only look at every device (the shipped `status` playbook)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgecell.fleet.ansible import PlaybookRun, SshSettings, list_devices, run_playbook


@dataclass
class DeviceStatus:
    """What one device says about itself; None where it could not say (not installed, no edgecell)."""
    device: str
    reachable: bool
    version: str | None = None
    verified: bool | None = None
    verification: str | None = None
    service: str | None = None
    free_disk_mb: float | None = None
    last_install: dict[str, Any] | None = None
    recent_errors: int | None = None
    last_result: dict[str, Any] | None = None
    temperature_c: float | None = None
    throttled: Any = None
    edgecell: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None


def _device_status(run: PlaybookRun, host: str) -> DeviceStatus:
    if run.unreachable(host):
        return DeviceStatus(device=host, reachable=False, error=run.error(host))
    dev = DeviceStatus(device=host, reachable=True)
    out = {name: (run.task(host, name).stdout.strip() if run.task(host, name) else "")
           for name in ("installed version", "verification", "info", "service", "free disk", "last install",
                        "last result")}
    dev.version = out["installed version"] or None
    verification = _json_or_none(out["verification"])
    if isinstance(verification, dict):
        dev.verified = bool(verification.get("ok"))
        dev.verification = verification.get("message") or ("ok" if dev.verified else "refused")
    elif dev.version:
        dev.verification = "no edgecell to verify with"
    info = _json_or_none(out["info"]) or {}
    dev.temperature_c, dev.throttled, dev.edgecell = info.get("temperature_c"), info.get("throttled"), info.get("edgecell")
    dev.service = out["service"] or None
    dev.free_disk_mb = round(int(out["free disk"]) / 1024, 1) if out["free disk"].isdigit() else None
    dev.last_install = _json_or_none(out["last install"])
    lines = out["last result"].splitlines()
    if lines and lines[0].startswith("errors "):
        dev.recent_errors = int(lines[0].split()[1])
        dev.last_result = _json_or_none(lines[-1]) if len(lines) > 1 else None
    dev.error = run.error(host)
    return dev


def fleet_status(inventory: Path, *, limit: str | None = None, ssh: SshSettings | None = None) -> list[DeviceStatus]:
    """Every device of `inventory` (matching `limit`), in inventory order, all looked at in parallel."""
    devices = list_devices(inventory, limit)
    run = run_playbook("status", inventory, limit=",".join(devices), ssh=ssh, forks=len(devices))
    return [_device_status(run, host) for host in devices]
