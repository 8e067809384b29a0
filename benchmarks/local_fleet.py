"""Local "devices" for fleet tests and benchmarks: one Debian `sshd` per device on 127.0.0.1 and
a free high port, with its own generated host key, config and authorized key (the system's sshd
and its config are never touched), each device with its own install prefix. An optional first
inventory entry points at a port nothing listens on: the unreachable device.

    with LocalFleet(root, ("dev1", "dev2", "dev3")) as fleet:
        deploy_bundle(bundle, fleet.inventory("all"), ssh=SshSettings(known_hosts=fleet.known_hosts))

Why real sshd and not mocks: the fleet commands' work is SSH (connections, host-key checks,
copies, parallel forks), so only a real server tells whether it works and what it costs."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

#: what runs Ansible's modules on the devices: the system Python where there is one (starts fastest)
DEVICE_PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def find_sshd() -> str | None:
    """Debian's sshd (openssh-server), or None when it or the ssh client is missing."""
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    return sshd if sshd and shutil.which("ssh") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> str:
    """A new ed25519 key pair at `path` (no passphrase); returns the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgecell-local-fleet", "-f", str(path)],
                   check=True)
    return Path(f"{path}.pub").read_text().strip()


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


class LocalFleet:
    """Devices `names` (each a running sshd) under `root`, plus `unreachable` (a name, or None) that
    nothing answers. `edgecell`: the device's edgecell command before a bundle brings its own
    (None: none, a device from nothing). Start with `start()` or `with`; `stop()` ends every sshd."""

    def __init__(self, root: Path, names: tuple[str, ...], *, unreachable: str | None = None,
                 edgecell: Path | None = None, profile: str = "raspberry-pi"):
        self.root = Path(root)
        self.names = names
        self.unreachable = unreachable
        self.edgecell = edgecell
        self.profile = profile
        self.known_hosts = self.root / "known_hosts"
        self.user_key = self.root / "user_key"
        self.ports: dict[str, int] = {}
        self.prefixes: dict[str, Path] = {}
        self._procs: list[subprocess.Popen] = []

    def start(self) -> LocalFleet:
        sshd = find_sshd()
        if sshd is None:
            raise RuntimeError("local devices need openssh-server and ssh (apt-get install openssh-server)")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "authorized_keys").write_text(keygen(self.user_key) + "\n")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
        if self.unreachable:
            self.ports[self.unreachable] = free_port()
            self.prefixes[self.unreachable] = self.root / self.unreachable / "prefix"
        known = []
        try:
            for name in self.names:
                known.append(self._start_device(sshd, name))
        except BaseException:
            self.stop()
            raise
        self.known_hosts.write_text("\n".join(known) + "\n")
        return self

    def _start_device(self, sshd: str, name: str) -> str:
        home = self.root / name
        home.mkdir()
        host_pub = keygen(home / "host_key")
        port = free_port()
        config = home / "sshd_config"
        config.write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {home / 'host_key'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}", f"PidFile {home / 'sshd.pid'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password", "LogLevel ERROR",
            "MaxStartups 50", "Subsystem sftp internal-sftp", ""]))
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._procs.append(proc)
        _wait_listening(port, proc)
        self.ports[name] = port
        self.prefixes[name] = home / "prefix"
        return f"[127.0.0.1]:{port} {' '.join(host_pub.split()[:2])}"

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs = []

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def inventory(self, name: str, host_vars: dict[str, dict[str, str]] | None = None) -> Path:
        """An INI inventory file `root/NAME.ini` of every device (the unreachable one first), with
        extra variables per host (`edgecell_prefix` here overrides the device's own prefix)."""
        path = self.root / f"{name}.ini"
        host_vars = host_vars or {}
        lines = ["[devices]"]
        for host, port in self.ports.items():
            extra = {"edgecell_prefix": str(self.prefixes[host]), **host_vars.get(host, {})}
            lines.append(f"{host} ansible_host=127.0.0.1 ansible_port={port} "
                         + " ".join(f"{k}={v}" for k, v in extra.items()))
        lines += ["", "[devices:vars]", f"ansible_user={getpass.getuser()}",
                  f"ansible_ssh_private_key_file={self.user_key}", f"ansible_python_interpreter={DEVICE_PYTHON}",
                  f"edgecell_profile={self.profile}"]
        if self.edgecell is not None:
            lines.append(f"edgecell_command={self.edgecell}")
        path.write_text("\n".join(lines) + "\n")
        return path
