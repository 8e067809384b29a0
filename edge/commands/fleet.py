"""`edgecell fleet init | status | deploy | bench`: many devices at once, over SSH, on Ansible (the
controller needs `pip install 'edgecell[fleet]'`; the devices need nothing more than SSH)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(name="fleet", no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
                  help="Deploy bundles to, and look at, many devices at once over SSH (on Ansible). "
                       "Start with `edgecell fleet init`.")

_INVENTORY = typer.Option(..., "--inventory", "-i", help="Ansible inventory (INI or YAML); `edgecell fleet init` "
                          "writes an example.")
_LIMIT = typer.Option(None, "--limit", "-l", help="Only the devices matching this Ansible host pattern.")
_KNOWN_HOSTS = typer.Option(None, "--known-hosts", help="The devices' trusted host keys (default: ~/.ssh/known_hosts). "
                            "A device whose key is unknown or changed is reported unreachable, never trusted.")
_JSON = typer.Option(False, "--json", help="Print the result as JSON.")


def _ssh(known_hosts: Optional[Path]):
    from edgecell.fleet import SshSettings

    return SshSettings(known_hosts=known_hosts)


def _table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*r)
    Console().print(table)


@app.command("init")
def init(path: Path = typer.Argument(Path("inventory.yml"), help="Where to write the example inventory."),
         force: bool = typer.Option(False, "--force", help="Overwrite an existing file.")) -> None:
    """Write an example inventory: groups of devices with their `edgecell_profile` and `edgecell_prefix`."""
    from edgecell.fleet import write_example_inventory

    print(f"wrote {write_example_inventory(path, force=force)}; edit the hosts, then: "
          f"edgecell fleet status -i {path}")


@app.command("status")
def status(inventory: Path = _INVENTORY, limit: Optional[str] = _LIMIT, known_hosts: Optional[Path] = _KNOWN_HOSTS,
           as_json: bool = _JSON) -> None:
    """Each device: reachable, installed version and its verification, service state, free disk,
    last install, recent results and errors, temperature and throttling. Read-only."""
    from edgecell.fleet import fleet_status

    found = fleet_status(inventory, limit=limit, ssh=_ssh(known_hosts))
    if as_json:
        print(json.dumps([d.to_dict() for d in found], indent=2))
    else:
        _table("edgecell fleet status", ["device", "reachable", "version", "verified", "service", "free MB",
                                         "errors", "temp C", "throttled"],
               [[d.device, "yes" if d.reachable else f"no: {d.error}", d.version or "-",
                 {True: "ok", False: f"REFUSED: {d.verification}", None: "-"}[d.verified], d.service or "-",
                 "-" if d.free_disk_mb is None else f"{d.free_disk_mb:.0f}",
                 "-" if d.recent_errors is None else str(d.recent_errors),
                 "-" if d.temperature_c is None else f"{d.temperature_c:.0f}", str(d.throttled or "-")]
                for d in found])
    if any(not d.reachable or d.verified is False for d in found):
        raise typer.Exit(1)


@app.command("deploy")
def deploy(bundle: Path = typer.Argument(..., help="Bundle archive (.tar.gz) made by `edgecell bundle`."),
           inventory: Path = _INVENTORY, limit: Optional[str] = _LIMIT,
           serial: int = typer.Option(0, "--serial", help="Devices deployed at once, batch after batch (0: all)."),
           max_fail: float = typer.Option(0.0, "--max-fail", help="Stop before the next batch once more than this "
                                          "percent of the devices failed (unreachable ones count)."),
           known_hosts: Optional[Path] = _KNOWN_HOSTS, as_json: bool = _JSON) -> None:
    """Rolling deploy: per device copy the bundle (only if it lacks that SHA-256), `edgecell verify`,
    `edgecell install`, a health check (the installed version runs the bundle's model on its sample
    and must give the answer it gives here), restart the systemd service (where there is one).
    A device that fails after the switch is rolled back. Exit code 1 if any device did not take it."""
    from edgecell.fleet import deploy_bundle

    results = deploy_bundle(bundle, inventory, limit=limit, serial=serial, max_fail=max_fail, ssh=_ssh(known_hosts))
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        _table(f"edgecell fleet deploy {bundle.name}", ["device", "version", "result", "seconds", "notes"],
               [[r.device, f"{r.old_version or '-'} -> {r.new_version or '-'}", r.result, f"{r.seconds:.1f}",
                 "; ".join(x for x in (r.error, "copied" if r.copied else "already held" if r.copied is False
                                       else None, r.service) if x)]
                for r in results])
    if any(r.result != "ok" for r in results):
        raise typer.Exit(1)


@app.command("bench")
def bench(models: Optional[List[str]] = typer.Argument(None, metavar="[MODEL]...", help="Shipped model names or "
                                                       "paths on the devices. Default: the shipped models."),
          inventory: Path = _INVENTORY, limit: Optional[str] = _LIMIT,
          backend: Optional[List[str]] = typer.Option(None, "--backend", "-b", help="Only these backends (repeatable)."),
          precision: Optional[List[str]] = typer.Option(None, "--precision", help="Only these precisions: fp32, int8."),
          threads: Optional[List[int]] = typer.Option(None, "--threads", "-t", help="Thread counts (repeatable)."),
          iterations: int = typer.Option(100, "--iterations", "-n", help="Timed runs per row."),
          profile: Optional[str] = typer.Option(None, "--profile", help="One profile for every device (default: each "
                                                "device's edgecell_profile from the inventory)."),
          out: Path = typer.Option(Path("fleet-bench"), "--out", "-o", help="Folder for fleet-bench.json/csv/md/png."),
          known_hosts: Optional[Path] = _KNOWN_HOSTS, as_json: bool = _JSON) -> None:
    """`edgecell bench` on every device at once with its installed edgecell, gathered into one report:
    rows device x model x backend x precision x threads, each device's CPU, ISA, board, temperature
    and throttling, the papers' claims beside them; JSON, CSV, Markdown and a PNG comparing devices."""
    from edgecell.benchmarks.fleet_report import fleet_result, markdown, write
    from edgecell.fleet.bench import fleet_bench

    args = [*(models or [])]
    for flag, values in (("--backend", backend), ("--precision", precision), ("--threads", threads)):
        for v in values or []:
            args += [flag, str(v)]
    args += ["--iterations", str(iterations)] + (["--profile", profile] if profile else [])
    result = fleet_result(fleet_bench(inventory, args, limit=limit, ssh=_ssh(known_hosts)))
    result["files"] = write(result, out)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(markdown(result))
        print("written: " + ", ".join(v for k, v in result["files"].items() if not k.endswith("_error")))
    if any(not d["ok"] for d in result["devices"]):
        raise typer.Exit(1)
