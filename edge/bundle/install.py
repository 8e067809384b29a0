"""Installing on the device: versioned folders, atomic switch of `current`, rollback, systemd unit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from edgecell.bundle.common import (HISTORY, LOCAL_DIRS, BundleError, BundleVerificationError,
                                    fsync_dir, last_error_line, utc_now, pinned_key_path, safe_name,
                                    write_durable)
from edgecell.bundle.signing import key_fingerprint, load_public_key, public_key_bytes
from edgecell.bundle.verify import bundle_root, read_manifest, safe_extract, verify_bundle


# install, rollback, systemd


def _read_history(prefix: Path) -> list[dict[str, Any]]:
    path = Path(prefix) / HISTORY
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _append_history(prefix: Path, entry: dict[str, Any]) -> None:
    line = json.dumps({"time": utc_now().isoformat(timespec="seconds"), **entry}) + "\n"
    fd = os.open(Path(prefix) / HISTORY, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def current_version(prefix: Path) -> Path | None:
    link = Path(prefix) / "current"
    if not link.is_symlink():
        return None
    return (link.parent / os.readlink(link)).resolve()


def _activate(prefix: Path, target: Path) -> None:
    """Point `prefix/current` at `target`: a new symlink under a temporary name, renamed over the
    old one (rename is atomic, so `current` is always the old or the new version, never none)."""
    prefix = Path(prefix)
    rel = os.path.relpath(target, prefix)
    tmp = prefix / f".current.tmp{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(rel, tmp)
    os.replace(tmp, prefix / "current")
    fsync_dir(prefix)


def _die_with_parent() -> None:
    """In a child process (preexec_fn): ask Linux to SIGKILL it when the installing process dies,
    so a killed `edgecell install` leaves no pip still writing into the prefix."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        pass


def _run_child(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run for the install's helpers (venv, pip): output captured, dies with us."""
    return subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_die_with_parent, **kwargs)


def _target_python(version: str, python: str | None) -> str:
    candidates = [python] if python else []
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        candidates.append(sys.executable)
    candidates += [shutil.which(f"python{version}") or ""]
    for c in candidates:
        if c and Path(c).exists():
            return c
    raise BundleError(f"this bundle's wheels are for Python {version}; no python{version} found here "
                      f"(this is {sys.version_info[0]}.{sys.version_info[1]}); give one with --python")


def _create_env(version_dir: Path, manifest: dict[str, Any], python: str | None) -> Path:
    """The version's own virtual environment, from the bundle's wheelhouse, no network."""
    info = manifest.get("wheelhouse") or {}
    py = _target_python(str(info.get("python") or manifest["profile"]["python"]), python)
    venv = version_dir / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    # fast path: a venv without pip, filled by the installing Python's pip run by the venv's own
    # interpreter (pip's __pip-runner__.py, pip >= 22.3: what `pip --python` runs, minus the extra
    # process that would outlive a killed install); ensurepip alone takes 5-20 s on a slow device
    proc = _run_child([py, "-m", "venv", "--without-pip", str(venv)])
    runner = _run_child([py, "-c", "import os, pip; print(os.path.join(os.path.dirname(pip.__file__), "
                             "'__pip-runner__.py'))"], env=env).stdout.strip()
    pip = [str(venv / "bin" / "python"), runner]
    if proc.returncode != 0 or not runner or _run_child([*pip, "--version"], env=env).returncode != 0:
        proc = _run_child([py, "-m", "venv", str(venv)])
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
    if proc.returncode != 0:
        raise BundleError(f"creating the virtual environment failed: {last_error_line(proc.stderr + proc.stdout)}"
                          " (on Debian: apt install python3-venv)")
    wheels = version_dir / "wheels"
    what = (["--no-deps", *map(str, sorted(wheels.glob("*.whl")))] if info.get("no_deps")
            else list(info.get("install", [])))
    proc = _run_child([*pip, "install", "--no-index", "--find-links", str(wheels), "--disable-pip-version-check",
                       "-q", *what], env=env)
    if proc.returncode != 0:
        raise BundleError(f"offline install from the wheelhouse failed: {last_error_line(proc.stderr + proc.stdout)}")
    modules = info.get("check_imports") or ["edgecell"]
    proc = _run_child([str(venv / "bin" / "python"), "-c", "import " + ", ".join(modules)], env=env)
    if proc.returncode != 0:
        raise BundleError(f"the installed environment does not import: {last_error_line(proc.stderr)}")
    return venv


class _PrefixLock:
    """One install or rollback at a time per prefix (flock on prefix/.lock); a second one is
    refused at once rather than racing for the `current` link."""

    def __init__(self, prefix: Path):
        self.path = Path(prefix) / ".lock"
        self.fd: int | None = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise BundleError(f"{self.path.parent}: another install or rollback is running") from None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def install_bundle(bundle, *, prefix: Path, trust: Path | None = None, create_env: bool = True,
                   python: str | None = None, keep: int = 3) -> Path:
    """Install a bundle (folder or archive) under `prefix`, atomically:

    1. unpack (archives: every member checked first) into `prefix/versions/.staging-*`;
    2. rename to `prefix/versions/<name>-<version>-<ts>/` and verify every hash, and the signature
       when a key is pinned (`prefix/trusted_key.pub`) or given with `trust` (then pinned);
    3. build the version's venv from its wheelhouse (when it has one and `create_env`);
    4. switch `prefix/current` last. A failure before the switch removes the new folder and
       leaves `current` as it was. The `keep` newest versions stay for `rollback`."""
    with _PrefixLock(Path(prefix).absolute()):
        return _install(bundle, prefix=prefix, trust=trust, create_env=create_env, python=python, keep=keep)


def _install(bundle, *, prefix: Path, trust: Path | None = None, create_env: bool = True,
             python: str | None = None, keep: int = 3) -> Path:
    """The work of install_bundle, under the prefix lock."""
    bundle = Path(bundle)
    prefix = Path(prefix).absolute()
    versions = prefix / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    pinned = pinned_key_path(prefix)
    key = None
    if trust is not None:
        key = load_public_key(trust)
        if pinned.is_file() and public_key_bytes(load_public_key(pinned)) != public_key_bytes(key):
            raise BundleError(f"{pinned} pins another key ({key_fingerprint(pinned)}); remove it to trust "
                              f"{key_fingerprint(key)} instead")
    elif pinned.is_file():
        key = load_public_key(pinned)
    if not bundle.exists():
        raise BundleError(f"{bundle}: no such bundle")
    _remove_leftovers(prefix)
    stamp = utc_now().strftime("%Y%m%dT%H%M%S")
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=versions))
    target: Path | None = None
    try:
        if bundle.is_file():
            root = safe_extract(bundle, staging)
        else:
            src_root = bundle_root(bundle)
            root = staging / "bundle"
            shutil.copytree(src_root, root, symlinks=True,
                            ignore=lambda d, names: [n for n in names if Path(d) == src_root and n in LOCAL_DIRS])
        manifest = read_manifest(root)
        base = f"{safe_name(manifest.get('name', 'bundle'))}-{safe_name(manifest.get('version', '0'))}-{stamp}"
        target = versions / base
        n = 1
        while target.exists():
            target = versions / f"{base}.{n}"
            n += 1
        os.rename(root, target)
        shutil.rmtree(staging, ignore_errors=True)
        verify_bundle(target, public_key=key).raise_for_failure()
        if create_env and (target / "wheels").is_dir() and manifest.get("wheelhouse"):
            _create_env(target, manifest, python)
        previous = current_version(prefix)
        # recorded complete (verified, venv built) before `current` moves: a version counts for
        # --keep and rollback only once this line exists
        _append_history(prefix, {"action": "install", "version": target.name, "from": str(bundle),
                                 "previous": previous.name if previous else None})
        _activate(prefix, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if target is not None and target != current_version(prefix):
            shutil.rmtree(target, ignore_errors=True)
        raise
    if trust is not None and not pinned.is_file():
        write_durable(pinned, public_key_bytes(key))
    _prune(prefix, keep)
    return target


def installed_versions(prefix: Path) -> list[Path]:
    """Complete installed versions, oldest install first: the folders the history records as
    installed (verified, venv built), and the active one. A folder an interrupted install left
    behind is not a version: it never counts toward --keep and is never a rollback target."""
    versions = Path(prefix) / "versions"
    present = {p.name: p for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".")} \
        if versions.is_dir() else {}
    order = []
    for entry in _read_history(prefix):
        if entry.get("action") == "install" and entry.get("version") in present and entry["version"] not in order:
            order.append(entry["version"])
    current = current_version(prefix)
    if current is not None and current.name in present and current.name not in order:
        order.append(current.name)
    return [present[n] for n in order]


def _remove_leftovers(prefix: Path) -> None:
    """Folders an interrupted install left under versions/ (`.staging-*`, a version folder never
    recorded as installed). Called under the prefix lock, so no install is still writing them."""
    versions = Path(prefix) / "versions"
    if not versions.is_dir():
        return
    complete = {v.name for v in installed_versions(prefix)}
    for path in versions.iterdir():
        if path.is_dir() and not path.is_symlink() and path.name not in complete:
            shutil.rmtree(path, ignore_errors=True)


def _prune(prefix: Path, keep: int) -> None:
    keep = max(keep, 2)
    current = current_version(prefix)
    versions = installed_versions(prefix)
    for old in versions[:-keep]:
        if current is None or old.resolve() != current:
            shutil.rmtree(old, ignore_errors=True)


def rollback(prefix: Path) -> Path:
    """Switch `current` back to the version installed before it (verified first, with the pinned
    key if one is pinned). Repeating goes further back."""
    prefix = Path(prefix).absolute()
    if not prefix.is_dir():
        raise BundleError(f"{prefix}: nothing installed (no such folder)")
    with _PrefixLock(prefix):
        return _rollback(prefix)


def _rollback(prefix: Path) -> Path:
    current = current_version(prefix)
    if current is None:
        raise BundleError(f"{prefix}: nothing installed (no 'current' link)")
    versions = installed_versions(prefix)
    names = [v.name for v in versions]
    if current.name not in names or names.index(current.name) == 0:
        raise BundleError(f"{prefix}: no earlier version to roll back to (current: {current.name})")
    target = versions[names.index(current.name) - 1]
    pinned = pinned_key_path(prefix)
    result = verify_bundle(target, public_key=pinned if pinned.is_file() else None)
    if not result.ok:
        raise BundleVerificationError(f"cannot roll back to {target.name}: {result.message()}")
    _activate(prefix, target)
    _append_history(prefix, {"action": "rollback", "version": target.name, "previous": current.name})
    return target


#: the service's writable folder: systemd makes /var/lib/edgecell for it (StateDirectory=)
STATE_DIRECTORY = "edgecell"


def systemd_unit(prefix: Path, user: str | None = None, *, executable: str | None = None,
                 description: str | None = None) -> str:
    """A systemd service that runs the installed bundle's configured `edgecell run` at boot and
    restarts it on failure. It starts on a fresh device as written: with no `user`, systemd makes
    a throw-away user (DynamicUser=) and its writable state folder /var/lib/edgecell
    (StateDirectory=), which is also the working directory, so a run's relative `--out results`
    lands in /var/lib/edgecell/results; everything else is read-only to it. With `user`, that
    existing account runs it (systemd still makes and hands it the state folder). Output goes to
    the journal: `journalctl -u edgecell`. `edgecell run PREFIX/current` re-verifies the bundle
    before it starts."""
    prefix = Path(prefix).absolute()
    current = prefix / "current"
    if executable is None:
        if (current / "venv" / "bin" / "edgecell").exists():
            executable = str(current / "venv" / "bin" / "edgecell")  # through the link: rollback switches it too
        else:
            found = shutil.which("edgecell")
            executable = found or f"{sys.executable} -m edgecell"
    if description is None:
        try:
            m = read_manifest(current)
            description = f"edgecell {m.get('name')} ({m.get('profile', {}).get('name', '')})"
        except BundleError:
            description = "edgecell deploy bundle"
    who = f"User={user}" if user else "DynamicUser=yes"
    return f"""[Unit]
Description={description}
After=local-fs.target network-online.target
Wants=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=10

[Service]
Type=simple
{who}
# cameras (/dev/video*) belong to the video group
SupplementaryGroups=video
StateDirectory={STATE_DIRECTORY}
WorkingDirectory=%S/{STATE_DIRECTORY}
Environment=PYTHONUNBUFFERED=1 HOME=%S/{STATE_DIRECTORY}
ExecStart={executable} run {current}
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"""
