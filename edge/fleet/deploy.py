"""Rolling deploy of one bundle to the devices of an inventory: batches of `serial` devices, each
batch one run of the shipped `deploy` playbook (copy only when the device lacks the bundle's
SHA-256, verify, install, health check on the bundle's sample, service restart, roll back on
failure); the rollout stops once more than `max_fail` percent of all devices failed."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from edgecell.bundle import run_bundle_args, safe_extract, sha256_file
from edgecell.fleet.ansible import FleetError, PlaybookRun, SshSettings, list_devices, run_playbook
from edgecell.resources import shipped_samples

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass
class DeviceDeploy:
    """One device's deploy: `result` is ok, failed, rolled-back, unreachable or not-run (the
    rollout stopped before its batch); `copied` False means the device already held the bundle.
    A first install that fails after its switch is removed again (nothing to roll back to): failed,
    `new_version` None, the device without a version as before."""
    device: str
    result: str
    old_version: str | None = None
    new_version: str | None = None
    copied: bool | None = None
    service: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def health_image(model: Path) -> Path | None:
    """The shipped sample the health check runs `model` on: the first image of its task's sample
    set (the task registry's `sample_set`); None where the task ships no images (X-ray films)."""
    from edgecell.modelinfo import read_model_info
    from edgecell.tasks import get_task, task_names

    info = read_model_info(model)
    subset = get_task(info.task).sample_set(info) if info.task in task_names() else None
    if subset is None:
        return None
    images = sorted(p for p in shipped_samples(subset).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return images[0] if images else None


def result_summary(result: dict[str, Any]) -> Any:
    """What a health check compares: a detector's counts per class, a classifier's label (the
    playbook's `health result` step takes the same from the device's JSON line)."""
    return result.get("counts") if "counts" in result else result.get("label")


def expected_health(bundle: Path, image: Path) -> Any:
    """The bundle's model on `image`, here on the controller, through the same `edgecell run` the
    device uses: what the device must answer after its install. `bundle`: an archive, or the
    folder it was unpacked to (one unpacking less)."""
    with tempfile.TemporaryDirectory(prefix="edgecell-fleet-health-") as out:
        proc = subprocess.run([sys.executable, "-m", "edgecell", "run", str(bundle), str(image), "--max-frames", "1",
                               "--json", "--out", out], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    line = json.loads(lines[0]) if lines else {}
    if proc.returncode != 0 or not line.get("ok"):
        tail = line.get("error") or (proc.stderr.strip().splitlines() or ["no result"])[-1]
        raise FleetError(f"{Path(bundle).name}: the bundle does not run its own sample here ({tail}); not deploying it")
    return result_summary(line["result"])


def _shell_json(run: PlaybookRun, host: str, task: str) -> dict[str, Any]:
    t = run.task(host, task)
    try:
        return json.loads(t.stdout) if t is not None and not t.skipped else {}
    except json.JSONDecodeError:
        return {}


def _device_result(run: PlaybookRun, host: str, seconds: float) -> DeviceDeploy:
    probe = _shell_json(run, host, "probe")
    dev = DeviceDeploy(device=host, result="ok", seconds=round(seconds, 1), old_version=probe.get("old") or None)
    if run.unreachable(host):
        dev.result, dev.error = "unreachable", run.error(host) or "unreachable"
        return dev
    copy = run.task(host, "copy bundle")
    dev.copied = None if copy is None else not copy.skipped
    dev.new_version = _shell_json(run, host, "installed").get("new") or dev.old_version
    service = run.task(host, "service")
    dev.service = (service.stdout.strip() or None) if service is not None and not service.skipped else None
    failed = run.task(host, "failed")
    if failed is not None and failed.failed:
        rolled, withdrawn = run.task(host, "roll back"), run.task(host, "withdraw")
        dev.error = str(failed.result.get("msg", "failed"))[:300]
        dev.new_version = dev.old_version if rolled is not None and not rolled.skipped else dev.new_version
        dev.result = "rolled-back" if rolled is not None and not rolled.skipped and not rolled.failed else "failed"
        if withdrawn is not None and not withdrawn.skipped:
            dev.new_version = None if not withdrawn.failed else dev.new_version
            dev.error += ("; first install: nothing to roll back to, " + ("the new version was removed (none active)"
                          if not withdrawn.failed else "removing it failed too: check the device"))
    elif failed is None and run.error(host):
        dev.result, dev.error = "failed", run.error(host)
    return dev


def deploy_bundle(bundle: Path, inventory: Path, *, limit: str | None = None, serial: int = 0,
                  max_fail: float = 0.0, ssh: SshSettings | None = None,
                  on_batch: Callable[[list[DeviceDeploy]], None] | None = None) -> list[DeviceDeploy]:
    """Deploy `bundle` (a .tar.gz) to the devices of `inventory` matching `limit`, `serial` at a
    time (0: all at once); stop before the next batch once more than `max_fail` percent of all the
    devices failed (unreachable ones count). Returns one DeviceDeploy per device, in inventory order."""
    bundle = Path(bundle)
    if not (bundle.is_file() and bundle.name.endswith(".tar.gz")):
        raise FleetError(f"{bundle}: expected a bundle archive (.tar.gz) made by `edgecell bundle`")
    with tempfile.TemporaryDirectory(prefix="edgecell-fleet-bundle-") as unpacked:
        # refuses a bundle that does not verify here, before any device sees it
        root = safe_extract(bundle, Path(unpacked))
        model, _, _ = run_bundle_args(root)
        image = health_image(model)
        expected = expected_health(root, image) if image else None
    devices = list_devices(inventory, limit)
    if not devices:
        raise FleetError(f"{inventory}: no device matches {limit or 'all'}")
    size = serial if serial > 0 else len(devices)
    extra = {"bundle": str(bundle.absolute()), "bundle_sha256": sha256_file(bundle), "bundle_file": bundle.name,
             "health_image": str(image) if image else "", "health_image_sha256": sha256_file(image) if image else "",
             "expected": expected}
    results: list[DeviceDeploy] = []
    for start in range(0, len(devices), size):
        batch = devices[start:start + size]
        began = time.perf_counter()
        run = run_playbook("deploy", inventory, limit=",".join(batch), extra_vars=extra, ssh=ssh, forks=len(batch))
        seconds = time.perf_counter() - began
        done = [_device_result(run, host, seconds) for host in batch]
        results += done
        if on_batch:
            on_batch(done)
        failed = sum(r.result != "ok" for r in results)
        if failed * 100.0 / len(devices) > max_fail and start + size < len(devices):
            results += [DeviceDeploy(device=h, result="not-run", error=f"rollout stopped: {failed} of {len(devices)} "
                                     f"devices failed (more than --max-fail {max_fail:g} %)")
                        for h in devices[start + size:]]
            break
    return results

