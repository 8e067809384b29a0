"""Bundle file names, errors and small file helpers shared by every step."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecell.errors import EdgecellError


BUNDLE_FORMAT = "edgecell-bundle/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
RUN_CONFIG = "run.json"
INSTALL_SCRIPT = "install.sh"
TRUSTED_KEY = "trusted_key.pub"
HISTORY = "history.jsonl"
#: made on the device by `install_bundle`, not part of the bundle, not verified
LOCAL_DIRS = ("venv",)
GATE_POLICIES = ("reject", "flag", "pass")
#: extra requirement added to the wheelhouse when a bundle is signed, so the device can check it
CRYPTOGRAPHY_REQ = "cryptography>=42"


@dataclass
class RunSettings:
    """A bundle's configured `edgecell run`, as data: the source (None: the shipped samples), the
    options by the `run` command's parameter names (out, threshold, top_k, ...), and the argument
    words they came from. The CLI parses `--run '...'` into this; the bundle code never imports the
    CLI to do it."""
    source: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)


class BundleError(EdgecellError):
    """A bundle that cannot be built, read, trusted or installed."""


class BundleVerificationError(BundleError):
    """A bundle whose files or signature do not match its manifest."""


class UnsafeArchiveError(BundleError):
    """An archive member that would land outside the extraction folder."""



# small helpers


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", str(text)).strip("-.") or "bundle"


def write_durable(path: Path, data: bytes, mode: int | None = None) -> Path:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_safe_relpath(name: str) -> bool:
    """A relative POSIX path that stays inside its root: no absolute path, no '..', no NUL."""
    if not name or "\x00" in name or "\\" in name:
        return False
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return False
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return bool(parts) and ".." not in parts




def last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["(no output)"])[-1][:400]


def pinned_key_path(prefix: Path) -> Path:
    return Path(prefix) / TRUSTED_KEY


def companion_files(sidecar: Path) -> list[Path]:
    """Files a model's task needs beside it (`Task.companion_files`: the X-ray model's Grad-CAM
    head, the rbc model's centre detector): a bundle without them does not run fully, or at all."""
    from edgecell.tasks import TASKS

    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    task = TASKS.get(str(meta.get("task", "")))
    if task is None:
        return []
    return task.companion_files(sidecar, meta)
