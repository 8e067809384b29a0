"""Real devices over real SSH: one Debian `sshd` per device, on 127.0.0.1 and a free high port,
with its own generated host key, config and authorized key (the system's sshd and its config are
never touched), each device with its own install prefix. A fourth inventory entry points at a
port nothing listens on: the unreachable device. Every sshd is stopped at teardown."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("ansible", reason="fleet tests need ansible-core (pip install 'edgecell[fleet]')")
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
if SSHD is None or shutil.which("ssh") is None:
    pytest.skip("fleet tests need openssh-server and ssh (apt-get install openssh-server)", allow_module_level=True)

DEVICES = ("dev1", "dev2", "dev3")
#: what runs Ansible's modules on the devices: the system Python where there is one (starts fastest)
DEVICE_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
UNREACHABLE = "dev0"  # first in the inventory: a rolling deploy meets it first


@dataclass
class Fleet:
    root: Path
    prefixes: dict[str, Path]
    known_hosts: Path
    edgecell: Path

    def inventory(self, name: str, host_vars: dict[str, dict[str, str]] | None = None) -> Path:
        """An INI inventory of the unreachable device and the three devices (extra vars per host)."""
        path = self.root / f"{name}.ini"
        path.write_text(self._text(host_vars or {}))
        return path

    def _text(self, host_vars: dict[str, dict[str, str]]) -> str:
        lines = ["[devices]"]
        for host, port in self.ports.items():
            extra = {"edgecell_prefix": str(self.prefixes[host]), **host_vars.get(host, {})}
            lines.append(f"{host} ansible_host=127.0.0.1 ansible_port={port} "
                         + " ".join(f"{k}={v}" for k, v in extra.items()))
        lines += ["", "[devices:vars]", f"ansible_user={getpass.getuser()}",
                  f"ansible_ssh_private_key_file={self.root / 'user_key'}",
                  f"ansible_python_interpreter={DEVICE_PYTHON}", f"edgecell_command={self.edgecell}",
                  "edgecell_profile=raspberry-pi", ""]
        return "\n".join(lines)

    ports: dict[str, int] = None  # type: ignore[assignment]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgecell-test", "-f", str(path)], check=True)
    return (path.with_suffix(".pub") if path.suffix else Path(f"{path}.pub")).read_text().strip()


def _wait_listening(port: int, proc: subprocess.Popen, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd on port {port} exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"sshd on port {port} did not listen within {seconds:.0f} s")


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    user_pub = _keygen(root / "user_key")
    (root / "authorized_keys").write_text(user_pub + "\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    procs, ports, prefixes, known = [], {UNREACHABLE: _free_port()}, {UNREACHABLE: root / UNREACHABLE / "prefix"}, []
    try:
        for name in DEVICES:
            home = root / name
            home.mkdir()
            host_pub = _keygen(home / "host_key")
            port = _free_port()
            config = home / "sshd_config"
            config.write_text("\n".join([
                f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {home / 'host_key'}",
                f"AuthorizedKeysFile {root / 'authorized_keys'}", f"PidFile {home / 'sshd.pid'}",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
                "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password", "LogLevel ERROR",
                "MaxStartups 50", "Subsystem sftp internal-sftp", ""]))
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            _wait_listening(port, proc)
            ports[name] = port
            prefixes[name] = home / "prefix"
            known.append(f"[127.0.0.1]:{port} {' '.join(host_pub.split()[:2])}")
        (root / "known_hosts").write_text("\n".join(known) + "\n")
        fleet = Fleet(root=root, prefixes=prefixes, known_hosts=root / "known_hosts",
                      edgecell=Path(sys.executable).parent / "edgecell")
        fleet.ports = ports
        yield fleet
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
