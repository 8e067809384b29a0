"""Fleet deploy time: one device vs three at once vs a re-deploy, real bundles with their
wheelhouses, to local sshd devices (edgecell.benchmarks.local_fleet).

    python -m edgecell.benchmarks.fleet_deploy [--runs 3] [--kinds pi,x86] [-o report.json]

The targets (issue 17): deploying a ~75 MB Raspberry Pi bundle to three devices at once takes no
more than 1.5x one device's deploy; re-deploying the same bundle takes <= 10 s.

What is timed: the whole `deploy_bundle` call, as `edgecell fleet deploy` runs it (the controller
verifies the bundle and runs its sample for the expected answer, then Ansible copies, verifies,
installs and health-checks on every device). Each run deploys to fresh prefixes (a device that
does not hold the bundle yet), then deploys the same bundle again (the re-deploy).

Two bundles of the shipped cell counter, because this machine is x86-64:
- `pi`: the raspberry-pi bundle (arm64 wheelhouse, the ~75 MB of the target). Every step runs
  except building the version's venv from its arm64 wheels, which cannot run here: the devices'
  `edgecell install` gets `--no-env`, and the health check runs this machine's edgecell on the
  installed version's model.
- `x86`: the x86-vnni bundle for this machine's Python (OpenVINO wheelhouse, about twice the
  size): every step, the venv built offline from the wheelhouse on each device included.

Read the ratio with the machine in mind: here the three "devices" share this machine's cores (and
whatever else runs on it), while three real devices each bring their own CPU and disk; what they
really share is the controller and its network. The load average is reported beside the figures."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecell.benchmarks.local_fleet import LocalFleet
from edgecell.benchmarks.stats import percentile

DEVICES = ("dev1", "dev2", "dev3")
#: kind -> (bundle profile, Python of the bundle's wheelhouse: None = the profile's, "host" = this one's)
KINDS = {"pi": ("raspberry-pi", None), "x86": ("x86-vnni", "host")}
TARGET_RATIO = 1.5
TARGET_REDEPLOY_S = 10.0

NO_ENV_WRAPPER = """#!/bin/sh
# a Raspberry Pi bundle on an x86 stand-in device: its arm64 wheelhouse cannot be installed here,
# so `install` keeps the version without building its venv; everything else is the real edgecell
if [ "$1" = install ]; then exec {edgecell} "$@" --no-env; fi
exec {edgecell} "$@"
"""


@dataclass
class KindResult:
    """One bundle's figures, seconds per run (in run order) and their medians."""
    kind: str
    profile: str
    bundle_mb: float
    wheels: int
    venv_built: bool
    one_s: list[float] = field(default_factory=list)
    three_s: list[float] = field(default_factory=list)
    redeploy_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("one_s", "three_s", "redeploy_s"):
            if getattr(self, key):
                out[key.replace("_s", "_median_s")] = round(percentile(getattr(self, key), 50), 1)
        if self.one_s and self.three_s:
            ratio = out["three_median_s"] / out["one_median_s"]
            out["three_over_one"] = round(ratio, 2)
            out["ratio_target_met"] = ratio <= TARGET_RATIO
            # each run's own ratio (one and three measured minutes apart): less swayed by the
            # machine's load drifting over the whole benchmark
            paired = [t / o for o, t in zip(self.one_s, self.three_s)]
            out["three_over_one_per_run"] = [round(r, 2) for r in paired]
            out["three_over_one_per_run_median"] = round(percentile(paired, 50), 2)
        if self.redeploy_s:
            out["redeploy_p90_s"] = round(percentile(self.redeploy_s, 90), 1)
            out["redeploy_target_met"] = out["redeploy_median_s"] <= TARGET_REDEPLOY_S
        return out


def build_kind_bundle(kind: str, out: Path) -> Path:
    from edgecell.bundle import build_bundle
    from edgecell.resources import resolve_model_path

    profile, python = KINDS[kind]
    if python == "host":
        python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return build_bundle([resolve_model_path("cells")], profile=profile, out=out, wheelhouse=True,
                        python_version=python, name="cells", version=f"bench-{kind}")


def _timed_deploy(bundle: Path, inventory: Path, limit: str, ssh, result: KindResult, what: str) -> float:
    from edgecell.fleet import deploy_bundle

    began = time.perf_counter()
    done = deploy_bundle(bundle, inventory, limit=limit, ssh=ssh)
    seconds = time.perf_counter() - began
    for dev in done:
        if dev.result != "ok":
            result.failures.append(f"{what} {dev.device}: {dev.result} {dev.error or ''}".strip())
    return round(seconds, 2)


def measure_kind(kind: str, bundle: Path, fleet: LocalFleet, runs: int, ssh, log) -> KindResult:
    """`runs` times: one device from a fresh prefix, three devices from fresh prefixes, the same
    bundle again to the three. Prefixes are removed after each run (disk)."""
    import tarfile

    with tarfile.open(bundle) as tf:
        wheels = sum(1 for m in tf.getmembers() if m.name.endswith(".whl"))
    profile = KINDS[kind][0]
    result = KindResult(kind, profile, round(bundle.stat().st_size / 1e6, 1), wheels, venv_built=kind != "pi")
    extra: dict[str, str] = {}
    if kind == "pi":
        wrapper = fleet.root / "edgecell-no-env"
        wrapper.write_text(NO_ENV_WRAPPER.format(edgecell=fleet.edgecell))
        wrapper.chmod(0o755)
        extra = {"edgecell_command": str(wrapper)}
    for run in range(runs):
        base = fleet.root / "runs" / f"{kind}-{run}"
        one = fleet.inventory(f"{kind}-{run}-one", {"dev1": {"edgecell_prefix": str(base / "one"), **extra}})
        result.one_s.append(_timed_deploy(bundle, one, "dev1", ssh, result, f"run {run} one"))
        three = fleet.inventory(f"{kind}-{run}-three",
                                {d: {"edgecell_prefix": str(base / d), **extra} for d in DEVICES})
        result.three_s.append(_timed_deploy(bundle, three, ",".join(DEVICES), ssh, result, f"run {run} three"))
        result.redeploy_s.append(_timed_deploy(bundle, three, ",".join(DEVICES), ssh, result, f"run {run} again"))
        log(f"{kind} run {run + 1}/{runs}: one {result.one_s[-1]:.1f} s, three {result.three_s[-1]:.1f} s, "
            f"again {result.redeploy_s[-1]:.1f} s (load {os.getloadavg()[0]:.1f})")
        shutil.rmtree(base, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecell.benchmarks.fleet_deploy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per bundle (default 3); medians are reported")
    parser.add_argument("--kinds", default="pi,x86", help="bundles to time: pi, x86 or both (default pi,x86)")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("-o", "--output", type=Path, default=None, help="also write the report (JSON) here")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds or args.runs < 1:
        parser.error(f"--kinds: expected some of {', '.join(KINDS)}; --runs >= 1")
    from edgecell.fleet import SshSettings

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    work = args.work or Path(tempfile.mkdtemp(prefix="edgecell-fleet-bench-"))
    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": [round(x, 1) for x in os.getloadavg()],
                              "devices": len(DEVICES), "runs": args.runs, "kinds": {}}
    try:
        bundles = {}
        for kind in kinds:
            began = time.perf_counter()
            bundles[kind] = build_kind_bundle(kind, work / "bundles")
            log(f"{kind}: {bundles[kind].name}, {bundles[kind].stat().st_size / 1e6:.1f} MB, "
                f"built in {time.perf_counter() - began:.0f} s")
        with LocalFleet(work / "devices", DEVICES, edgecell=Path(sys.executable).parent / "edgecell") as fleet:
            ssh = SshSettings(known_hosts=fleet.known_hosts)
            for kind in kinds:
                report["kinds"][kind] = measure_kind(kind, bundles[kind], fleet, args.runs, ssh, log).summary()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report["load_after"] = [round(x, 1) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0 if all(not k["failures"] for k in report["kinds"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
