"""`edgecell fleet deploy` and `fleet status` against three real sshd devices (see conftest):
the rollout's steps run for real (copy, verify, install, health check, rollback); every device
keeps a working version throughout."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from edgecell.bundle import build_bundle, verify_bundle
from edgecell.fleet import SshSettings, deploy_bundle, fleet_status
from edgecell.resources import resolve_model_path

DEVICES = ("dev1", "dev2", "dev3")  # the conftest's sshd devices
UNREACHABLE = "dev0"  # the inventory entry nothing answers


def _bundle(out: Path, version: str) -> Path:
    return build_bundle([resolve_model_path("cells")], profile="raspberry-pi", out=out, wheelhouse=False,
                        name="cells", version=version)


def _current(prefix: Path) -> str:
    return os.readlink(prefix / "current").rsplit("/", 1)[-1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgecell", "fleet", *args], capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def _by_device(results) -> dict:
    return {r.device: r for r in results}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles")
    return {v: _bundle(out, v) for v in ("1.0", "2.0", "3.0")}


@pytest.fixture(scope="module")
def ssh(fleet):
    return SshSettings(known_hosts=fleet.known_hosts)


@pytest.fixture(scope="module")
def first(fleet, bundles, ssh):
    """1.0 to every device, all at once, the unreachable one included (--max-fail 100: go on)."""
    return _by_device(deploy_bundle(bundles["1.0"], fleet.inventory("good"), max_fail=100, ssh=ssh))


@pytest.fixture(scope="module")
def again(fleet, bundles, ssh, first):
    """The same bundle again, to the three reachable devices."""
    return _by_device(deploy_bundle(bundles["1.0"], fleet.inventory("good"), limit=",".join(DEVICES), ssh=ssh))


def _broken_edgecell(fleet) -> Path:
    """An edgecell that installs but cannot run a model (its backend broken)."""
    wrapper = fleet.root / "broken-edgecell"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = run ]; then echo "edgecell: error: backend broken" >&2; exit 2; fi\n'
                       f'exec {fleet.edgecell} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture(scope="module")
def broken(fleet, bundles, ssh, again):
    """2.0 where dev3's edgecell is broken: dev3's health check fails after its switch to 2.0."""
    inventory = fleet.inventory("broken", {"dev3": {"edgecell_command": str(_broken_edgecell(fleet))}})
    return _by_device(deploy_bundle(bundles["2.0"], inventory, limit=",".join(DEVICES), ssh=ssh))


def test_deploy_installs_on_every_reachable_device(fleet, first):
    assert [first[d].result for d in DEVICES] == ["ok"] * 3
    assert all(_current(fleet.prefixes[d]).startswith("cells-1.0-") for d in DEVICES)
    assert all(first[d].copied for d in DEVICES)


def test_unreachable_device_is_reported_and_skipped(fleet, first):
    assert first[UNREACHABLE].result == "unreachable"
    assert not fleet.prefixes[UNREACHABLE].exists()


def test_redeploy_copies_nothing_and_keeps_the_version(fleet, first, again):
    assert [again[d].result for d in DEVICES] == ["ok"] * 3
    assert [again[d].copied for d in DEVICES] == [False] * 3
    assert [again[d].new_version for d in DEVICES] == [first[d].new_version for d in DEVICES]


def test_failed_health_check_rolls_back_that_device_only(fleet, first, broken):
    assert [broken[d].result for d in ("dev1", "dev2")] == ["ok", "ok"]
    assert all(_current(fleet.prefixes[d]).startswith("cells-2.0-") for d in ("dev1", "dev2"))
    assert broken["dev3"].result == "rolled-back"
    assert "health" in broken["dev3"].error
    assert _current(fleet.prefixes["dev3"]) == first["dev3"].new_version
    assert verify_bundle(fleet.prefixes["dev3"] / "current").ok


def test_failed_first_install_is_removed_and_reported(fleet, bundles, ssh, tmp_path):
    prefix = tmp_path / "new-device"
    inventory = fleet.inventory("first-broken", {"dev1": {"edgecell_prefix": str(prefix),
                                                          "edgecell_command": str(_broken_edgecell(fleet))}})
    [done] = deploy_bundle(bundles["1.0"], inventory, limit="dev1", ssh=ssh)
    assert (done.result, done.old_version, done.new_version) == ("failed", None, None)
    assert "health" in done.error and "nothing to roll back to" in done.error
    assert not (prefix / "current").is_symlink() and list((prefix / "versions").iterdir()) == []
    assert json.loads((prefix / "history.jsonl").read_text().splitlines()[-1])["action"] == "withdraw"


def test_max_fail_stops_the_rollout(fleet, bundles, broken):
    proc = _cli("deploy", str(bundles["3.0"]), "-i", str(fleet.inventory("good")), "--serial", "1", "--max-fail", "0",
                "--known-hosts", str(fleet.known_hosts), "--json")
    assert proc.returncode == 1
    assert [r["result"] for r in json.loads(proc.stdout)] == ["unreachable", "not-run", "not-run", "not-run"]
    assert not any(_current(fleet.prefixes[d]).startswith("cells-3.0-") for d in DEVICES)


def test_status_reports_each_device(fleet, broken):
    proc = _cli("status", "-i", str(fleet.inventory("good")), "--known-hosts", str(fleet.known_hosts), "--json")
    assert proc.returncode == 1  # one device unreachable
    found = {d["device"]: d for d in json.loads(proc.stdout)}
    assert found[UNREACHABLE]["reachable"] is False
    assert [found[d]["version"] for d in DEVICES] == [_current(fleet.prefixes[d]) for d in DEVICES]
    assert all(found[d]["verified"] for d in DEVICES)
    assert all(found[d]["free_disk_mb"] > 0 for d in DEVICES)
    assert all(found[d]["last_install"]["action"] in ("install", "rollback") for d in DEVICES)


def test_unknown_host_key_makes_a_device_unreachable(fleet, tmp_path):
    strangers = tmp_path / "known_hosts"
    strangers.write_text("")
    found = fleet_status(fleet.inventory("good"), limit="dev1", ssh=SshSettings(known_hosts=strangers))
    assert [d.reachable for d in found] == [False]
    assert "host key" in (found[0].error or "").lower()


def test_fleet_bench_gathers_rows_from_every_device(fleet, tmp_path, broken):
    proc = _cli("bench", "cells", "-i", str(fleet.inventory("good")), "-b", "litert", "--precision", "int8",
                "-t", "1", "-n", "3", "--known-hosts", str(fleet.known_hosts), "-o", str(tmp_path), "--json")
    assert proc.returncode == 1  # the unreachable device was not measured
    result = json.loads(proc.stdout)
    assert {d["device"]: d["ok"] for d in result["devices"]} == {UNREACHABLE: False, **{d: True for d in DEVICES}}
    assert sorted({r["fleet_device"] for r in result["rows"] if r["status"] == "ok"}) == list(DEVICES)
    assert all(d["info"].get("isa") for d in result["devices"] if d["ok"])
    assert Path(result["files"]["png"]).stat().st_size > 0
    assert Path(result["files"]["csv"]).read_text().count("\n") == 4


def test_status_table_says_why_a_device_is_unreachable(fleet):
    proc = _cli("status", "-i", str(fleet.inventory("good")), "--limit", UNREACHABLE,
                "--known-hosts", str(fleet.known_hosts))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert UNREACHABLE in proc.stdout and "no:" in proc.stdout


def test_deploy_table_reports_an_unreachable_device(fleet, bundles):
    proc = _cli("deploy", str(bundles["3.0"]), "-i", str(fleet.inventory("good")), "--limit", UNREACHABLE,
                "--known-hosts", str(fleet.known_hosts))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert UNREACHABLE in proc.stdout and "unreachable" in proc.stdout


SHIFT_COUNTS = """import json, sys
shift = int(sys.argv[1])
for line in sys.stdin:
    if line.startswith("{"):
        record = json.loads(line)
        counts = (record.get("result") or {}).get("counts")
        if counts:
            counts[sorted(counts)[0]] += shift
        line = json.dumps(record) + "\\n"
    sys.stdout.write(line)
"""


def _counts_off_by(fleet, shift: int) -> Path:
    """An edgecell whose `run` answers with one class count moved by `shift` cells, as another
    backend (or a broken one) would."""
    script = fleet.root / "shift_counts.py"
    script.write_text(SHIFT_COUNTS)
    wrapper = fleet.root / f"edgecell-off-by-{shift}"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" = run ]; then {fleet.edgecell} "$@" | {sys.executable} {script} {shift}; '
                       f'exit 0; fi\nexec {fleet.edgecell} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def test_health_check_accepts_one_cell_of_backend_difference_and_rolls_back_more(fleet, ssh, tmp_path):
    inventory = fleet.inventory("shifted", {"dev1": {"edgecell_command": str(_counts_off_by(fleet, 1))},
                                            "dev2": {"edgecell_command": str(_counts_off_by(fleet, 3))}})
    done = _by_device(deploy_bundle(_bundle(tmp_path, "4.0"), inventory, limit="dev1,dev2", max_fail=100, ssh=ssh))
    assert done["dev1"].result == "ok", done["dev1"].error
    assert done["dev2"].result == "rolled-back"
    assert "health" in done["dev2"].error


def test_health_image_is_from_the_task_registrys_sample_set():
    from edgecell.fleet.deploy import health_image

    assert health_image(resolve_model_path("products")).parent.name == "products"
    assert health_image(resolve_model_path("xray")) is None  # X-ray films cannot ship


def test_SLOW_device_from_nothing_gets_its_first_edgecell_from_the_bundle(fleet, ssh, tmp_path):
    """SLOW (about 1-2 minutes: a real wheelhouse, two offline venvs): a device with SSH and Python
    but no edgecell at all is bootstrapped by the bundle's own install.sh, then installs the
    bundle with that edgecell, as the README's "device from nothing" says."""
    from edgecell.benchmarks.local_fleet import DEVICE_PYTHON
    from edgecell.bundle import BundleError

    if platform.machine() != "x86_64":
        pytest.skip("the x86-legacy wheelhouse installs on x86-64 only")
    python = subprocess.run([DEVICE_PYTHON, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                            capture_output=True, text=True)
    if python.returncode != 0:
        pytest.skip(f"{DEVICE_PYTHON} cannot make a venv (Debian: apt install python3-venv)")
    try:
        bundle = build_bundle([resolve_model_path("cells")], profile="x86-legacy", out=tmp_path / "b",
                              python_version=python.stdout.strip(), name="cells", version="from-nothing")
    except BundleError as exc:
        pytest.skip(f"no wheelhouse for the bundle: {exc}")
    prefix = tmp_path / "blank-device"
    # no edgecell_command and none on the device's PATH: a device from nothing
    inventory = fleet.inventory("from-nothing", {"dev2": {"edgecell_prefix": str(prefix), "edgecell_command": "''"}})
    [done] = deploy_bundle(bundle, inventory, limit="dev2", ssh=ssh)
    assert done.result == "ok", done.error
    assert (prefix / "incoming" / "bootstrap-venv" / "bin" / "edgecell").is_file()
    assert _current(prefix) == done.new_version and (prefix / "current" / "venv" / "bin" / "edgecell").is_file()


def test_a_bundle_that_cannot_answer_its_health_sample_here_is_refused_with_the_reason(bundles, tmp_path):
    from edgecell.fleet import FleetError
    from edgecell.fleet.deploy import expected_health

    not_an_image = tmp_path / "smear.jpg"
    not_an_image.write_text("not a smear")
    with pytest.raises(FleetError, match="not a readable image.*not deploying it"):
        expected_health(bundles["1.0"], not_an_image)
