"""Running a shipped playbook with `ansible-playbook` and reading what every device did.

Safety is set here, for every playbook: SSH keys only (BatchMode, no password or keyboard
prompts), host keys checked against a known_hosts file the user controls (StrictHostKeyChecking=
yes: an unknown or changed host key makes the device unreachable, never silently trusted), and
every device's results come back as one JSON document (the shipped `edgecell_json` callback,
which drops module arguments) kept in memory, never written to a log file."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from edgecell.errors import EdgecellError


class FleetError(EdgecellError):
    """A fleet command that cannot run: no Ansible, an unreadable inventory, a playbook crash."""


@dataclass
class SshSettings:
    """How the controller reaches the devices. `known_hosts`: the file of trusted host keys (None:
    the user's ~/.ssh/known_hosts); `connect_timeout`: seconds before a device counts unreachable."""
    known_hosts: Path | None = None
    connect_timeout: int = 10

    def ssh_args(self) -> str:
        args = ["-o", "ControlMaster=auto", "-o", "ControlPersist=30s", "-o", "BatchMode=yes",
                "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
                "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={self.connect_timeout}"]
        if self.known_hosts is not None:
            args += ["-o", f"UserKnownHostsFile={Path(self.known_hosts).absolute()}"]
        return shlex.join(args)


@dataclass
class HostTask:
    """One task's result on one device, as Ansible's JSON callback reports it."""
    task: str
    result: dict[str, Any]

    @property
    def failed(self) -> bool:
        return bool(self.result.get("failed"))

    @property
    def skipped(self) -> bool:
        return bool(self.result.get("skipped"))

    @property
    def stdout(self) -> str:
        return str(self.result.get("stdout") or "")


@dataclass
class PlaybookRun:
    """Every device's task results (in order), its totals, and which devices were unreachable."""
    tasks: dict[str, list[HostTask]] = field(default_factory=dict)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    returncode: int = 0
    stderr: str = ""

    def task(self, host: str, name: str) -> HostTask | None:
        """The last result of task `name` on `host` (None: it did not run there)."""
        found = [t for t in self.tasks.get(host, []) if t.task == name]
        return found[-1] if found else None

    def unreachable(self, host: str) -> bool:
        return bool(self.stats.get(host, {}).get("unreachable")) or any(
            t.result.get("unreachable") for t in self.tasks.get(host, []))

    def error(self, host: str) -> str | None:
        """Why `host` failed (the last failed task's message, one line), or None."""
        for t in reversed(self.tasks.get(host, [])):
            if t.result.get("unreachable") or (t.failed and not t.result.get("ignore_errors")):
                msg = str(t.result.get("msg") or t.result.get("stderr") or "failed").strip()
                return f"{msg.splitlines()[-1] if msg else 'failed'}"[:300]
        return None


def playbook_path(name: str) -> Path:
    """A playbook shipped inside edgecell (`edgecell/fleet/playbooks/NAME.yml`)."""
    return Path(str(files("edgecell.fleet") / "playbooks" / f"{name}.yml"))


def require_ansible() -> None:
    try:
        import ansible  # noqa: F401
    except ImportError:
        raise FleetError("fleet commands need Ansible on this machine (not on the devices): "
                         "pip install 'edgecell[fleet]'") from None


def run_playbook(name: str, inventory: Path, *, limit: str | None = None, extra_vars: dict[str, Any] | None = None,
                 ssh: SshSettings | None = None, forks: int = 10, timeout: float = 3600) -> PlaybookRun:
    """Run the shipped playbook `name` against `inventory` (INI or YAML), `limit` (an Ansible host
    pattern) and `extra_vars`; return every device's results. Unreachable or failing devices are
    results, not exceptions; a playbook that cannot start (bad inventory, syntax) raises FleetError."""
    require_ansible()
    inventory = Path(inventory)
    if not inventory.exists():
        raise FleetError(f"{inventory}: no such inventory")
    ssh = ssh or SshSettings()
    with tempfile.TemporaryDirectory(prefix="edgecell-fleet-") as tmp:
        vars_file = Path(tmp) / "vars.json"
        vars_file.write_text(json.dumps(extra_vars or {}))
        os.chmod(vars_file, 0o600)
        env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "edgecell_json",
               "ANSIBLE_CALLBACK_PLUGINS": str(Path(str(files("edgecell.fleet") / "callback_plugins"))), "ANSIBLE_HOST_KEY_CHECKING": "True",
               "ANSIBLE_SSH_ARGS": ssh.ssh_args(), "ANSIBLE_TIMEOUT": str(ssh.connect_timeout),
               "ANSIBLE_FORKS": str(max(1, forks)), "ANSIBLE_PIPELINING": "True", "ANSIBLE_RETRY_FILES_ENABLED": "False",
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PYTHON_INTERPRETER":
               os.environ.get("ANSIBLE_PYTHON_INTERPRETER", "auto_silent"),
               # a short control-socket folder: unix socket paths are limited to about 100 bytes
               "ANSIBLE_SSH_CONTROL_PATH_DIR": tmp, "ANSIBLE_LOCAL_TEMP": tmp,
               "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        env.pop("ANSIBLE_LOG_PATH", None)  # no log file: nothing of a run is kept on disk
        cmd = [sys.executable, "-m", "ansible.cli.playbook", "-i", str(inventory), str(playbook_path(name)),
               "-e", f"@{vars_file}"]
        if limit:
            cmd += ["--limit", limit]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise FleetError(f"ansible-playbook {name}: no answer in {timeout:.0f} s") from None
        finally:
            _close_connections(Path(tmp))
    return parse_json_events(proc.stdout, proc.returncode, proc.stderr)


def _close_connections(folder: Path) -> None:
    """End the SSH master connections the run left open (ControlPersist), so no ssh process (and
    no session on a device) outlives the command."""
    import stat

    for sock in folder.iterdir():
        try:
            if stat.S_ISSOCK(sock.lstat().st_mode):
                subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "edgecell-fleet"],
                               capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            continue


def parse_json_events(stdout: str, returncode: int, stderr: str = "") -> PlaybookRun:
    """Ansible's JSON callback document -> PlaybookRun. Return codes 0 (all fine), 2 (some hosts
    failed), 4 (some unreachable) and 8 with a document are device results; anything else is an error."""
    start = stdout.find("{")
    try:
        doc = json.loads(stdout[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        doc = None
    if doc is None:
        lines = [ln.strip() for ln in (stderr or stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("[ERROR]", "ERROR"))]
        raise FleetError(f"ansible-playbook failed (exit {returncode}): {(errors or lines or ['no output'])[0]}")
    run = PlaybookRun(stats=doc.get("stats", {}), returncode=returncode, stderr=stderr)
    for play in doc.get("plays", []):
        for task in play.get("tasks", []):
            name = task.get("task", {}).get("name", "")
            for host, result in task.get("hosts", {}).items():
                run.tasks.setdefault(host, []).append(HostTask(name, result))
    for host in run.stats:
        run.tasks.setdefault(host, [])
    return run


def list_devices(inventory: Path, limit: str | None = None) -> list[str]:
    """The devices of `inventory` matching `limit`, in inventory order (Ansible's own reading)."""
    require_ansible()
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    if not Path(inventory).exists():
        raise FleetError(f"{inventory}: no such inventory")
    manager = InventoryManager(loader=DataLoader(), sources=[str(inventory)])
    if limit:
        manager.subset(limit)
    return [h.name for h in manager.get_hosts()]
