"""Reading a bundle: safe extraction, verification against the manifest, opening one to run."""

from __future__ import annotations

import base64
import json
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from edgecell.bundle.common import (BUNDLE_FORMAT, LOCAL_DIRS, MANIFEST, RUN_CONFIG, SIGNATURE, BundleError,
                                    BundleVerificationError, UnsafeArchiveError, is_safe_relpath,
                                    pinned_key_path, sha256_file)
from edgecell.bundle.signing import crypto_api, key_fingerprint, load_public_key


# safe extraction


def check_archive_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member checked before anything is written: regular files and folders with safe
    relative paths; links only relative, without '..' (so they cannot resolve outside); hard
    links only to members; no devices or FIFOs. Raises UnsafeArchiveError naming the member."""
    members = tar.getmembers()
    names = set()
    for m in members:
        name = m.name
        if not is_safe_relpath(name):
            raise UnsafeArchiveError(f"refusing archive: member {name!r} has an absolute path or '..'")
        if m.issym():
            target = m.linkname
            if (not target or target.startswith("/") or "\\" in target or re.match(r"^[A-Za-z]:", target)
                    or ".." in target.split("/")):
                raise UnsafeArchiveError(f"refusing archive: link {name!r} -> {target!r} points outside the bundle")
        elif m.islnk():
            if not is_safe_relpath(m.linkname) or posixpath.normpath(m.linkname) not in names:
                raise UnsafeArchiveError(f"refusing archive: hard link {name!r} -> {m.linkname!r} "
                                         "points outside the bundle")
        elif not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"refusing archive: member {name!r} is a device or FIFO")
        names.add(posixpath.normpath(name))
    return members


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a .tar(.gz) into `dest` after checking every member; returns the bundle root (the
    folder holding manifest.json: `dest` itself or its single top-level folder)."""
    archive = Path(archive)
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{archive}: not a readable bundle archive ({exc})") from None
    with tar:
        try:
            members = check_archive_members(tar)
        except tarfile.TarError as exc:
            raise BundleError(f"{archive}: archive is damaged ({exc})") from None
        need = sum(m.size for m in members if m.isfile())
        dest.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(dest).free
        if need > free:
            raise BundleError(f"{archive}: needs {need / 1e6:.0f} MB to unpack, only {free / 1e6:.0f} MB free in {dest}")
        try:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Python < 3.11.4: our own check above is the guard
                tar.extractall(dest, members=members)
        except (tarfile.TarError, OSError) as exc:
            raise BundleError(f"{archive}: cannot unpack ({exc})") from None
    return bundle_root(dest)


def bundle_root(folder: Path) -> Path:
    if (folder / MANIFEST).is_file():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()]
    if len(subs) == 1 and (subs[0] / MANIFEST).is_file():
        return subs[0]
    raise BundleError(f"{folder}: no {MANIFEST}; not an edgecell bundle")


def is_archive(path: Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith((".tar.gz", ".tgz", ".tar"))


def is_bundle(path) -> bool:
    """A bundle folder, a bundle archive, or an install prefix (with `current`)."""
    p = Path(path)
    if p.is_file():
        return is_archive(p)
    return (p / MANIFEST).is_file() or (p / "current" / MANIFEST).is_file()


# --------------------------------------------------------------------------------------------
# verification


@dataclass
class VerifyResult:
    path: str
    ok: bool = False
    name: str = ""
    version: str = ""
    profile: str = ""
    files: int = 0
    bytes: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # "path (reason)"
    signature: str = "unsigned"  # unsigned | unchecked | valid | invalid | missing
    errors: list[str] = field(default_factory=list)

    def message(self) -> str:
        """One line for people: what was checked and, if refused, why."""
        title = f"{self.name} {self.version}".strip() or self.path
        if self.ok:
            sig = {"valid": "signature valid", "unchecked": "signed, no key pinned to check it",
                   "unsigned": "unsigned"}.get(self.signature, self.signature)
            return f"bundle {title}: OK ({self.files} files, {self.bytes / 1e6:.1f} MB verified, {sig})"
        reasons = list(self.errors)
        for label, items in (("changed", self.changed), ("missing", self.missing), ("unexpected", self.extra)):
            if items:
                shown = ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")
                reasons.append(f"{label}: {shown}")
        return f"bundle {title} refused: " + "; ".join(reasons)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["message"] = self.message()
        return d

    def raise_for_failure(self) -> "VerifyResult":
        if not self.ok:
            raise BundleVerificationError(self.message())
        return self


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BundleError(f"{root}: no {MANIFEST}; not an edgecell bundle") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: manifest is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT or not isinstance(data.get("files"), dict):
        raise BundleError(f"{path}: not an {BUNDLE_FORMAT} manifest")
    return data


def walk_files(root: Path) -> Iterable[str]:
    """Every file and link under root as a POSIX relative path (links are not followed)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in LOCAL_DIRS]
        for d in list(dirnames):
            if (Path(dirpath) / d).is_symlink():
                dirnames.remove(d)
                yield (rel_dir / d).as_posix()
        for f in filenames:
            yield (rel_dir / f).as_posix()


def verify_bundle(path, *, public_key=None) -> VerifyResult:
    """Check a bundle folder or archive: the manifest, every file's size and SHA-256, no file
    missing and none added, and (with `public_key`, e.g. the pinned key) the ed25519 signature.
    Never raises for a bad bundle: the result says what is wrong (`raise_for_failure()`)."""
    path = Path(path)
    if path.is_file() and is_archive(path):
        with tempfile.TemporaryDirectory(prefix="edgecell-verify-") as tmp:
            try:
                root = safe_extract(path, Path(tmp))
            except BundleError as exc:
                return VerifyResult(str(path), errors=[str(exc)])
            result = verify_bundle(root, public_key=public_key)
            result.path = str(path)
            return result
    result = VerifyResult(str(path))
    if not path.is_dir():
        result.errors.append(f"{path}: no such bundle folder or archive")
        return result
    try:
        root = bundle_root(path)
        manifest = read_manifest(root)
    except BundleError as exc:
        result.errors.append(str(exc))
        return result
    result.name, result.version = str(manifest.get("name", "")), str(manifest.get("version", ""))
    result.profile = str((manifest.get("profile") or {}).get("name", ""))
    listed = manifest["files"]
    for rel, meta in sorted(listed.items()):
        if not is_safe_relpath(rel) or rel in (MANIFEST, SIGNATURE):
            result.errors.append(f"manifest lists an unsafe path {rel!r}")
            continue
        p = root / rel
        if p.is_symlink() or not p.is_file():
            result.missing.append(rel)
            continue
        size = p.stat().st_size
        if size != meta.get("size"):
            result.changed.append(f"{rel} (size {size}, manifest says {meta.get('size')})")
            continue
        if sha256_file(p) != meta.get("sha256"):
            result.changed.append(f"{rel} (sha256 differs)")
            continue
        result.files += 1
        result.bytes += size
    for rel in walk_files(root):
        if rel not in listed and rel not in (MANIFEST, SIGNATURE):
            result.extra.append(rel)
    sig_path = root / SIGNATURE
    if public_key is not None:
        try:
            pub = load_public_key(public_key)
            _, _, InvalidSignature = crypto_api()
        except BundleError as exc:
            result.errors.append(str(exc))
            pub = None
        if pub is not None:
            if not sig_path.is_file():
                result.signature = "missing"
                result.errors.append("unsigned bundle, but a signing key is pinned: only bundles signed "
                                     "with that key are accepted")
            else:
                try:
                    pub.verify(base64.b64decode(sig_path.read_bytes().strip(), validate=True),
                               (root / MANIFEST).read_bytes())
                    result.signature = "valid"
                except (InvalidSignature, ValueError):
                    result.signature = "invalid"
                    result.errors.append(f"signature does not match the pinned key {key_fingerprint(pub)} "
                                         "(manifest changed, or signed with another key)")
    elif sig_path.is_file():
        result.signature = "unchecked"
    result.ok = not (result.missing or result.extra or result.changed or result.errors)
    return result


# --------------------------------------------------------------------------------------------




# --------------------------------------------------------------------------------------------
# running a bundle


_EXTRACTED: list[tempfile.TemporaryDirectory] = []


def open_bundle(path, *, public_key=None) -> tuple[Path, dict[str, Any]]:
    """Verify a bundle folder, archive or install prefix and return (bundle root, run config).
    The pinned key of an install prefix is used when `public_key` is not given."""
    p = Path(path)
    if p.is_dir() and (p / "current").is_symlink():
        p = p / "current"
    if p.is_file():
        if not is_archive(p):
            raise BundleError(f"{p}: not a bundle (expected a folder or .tar.gz)")
        tmp = tempfile.TemporaryDirectory(prefix="edgecell-bundle-")
        _EXTRACTED.append(tmp)  # lives as long as the process: the model is read from it
        root = safe_extract(p, Path(tmp.name))
    else:
        root = bundle_root(p)
    real = root.resolve()
    if public_key is None and real.parent.name == "versions":
        pinned = pinned_key_path(real.parent.parent)
        if pinned.is_file():
            public_key = pinned
    verify_bundle(root, public_key=public_key).raise_for_failure()
    try:
        run = json.loads((root / RUN_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{root / RUN_CONFIG}: cannot read the run configuration ({exc})") from None
    return root, run


def run_bundle_args(bundle_path, *, public_key=None) -> tuple[Path, str | None, dict[str, Any]]:
    """(verified model path, source, options) for `edgecell run BUNDLE`. Options use the `run`
    command's parameter names (out, threshold, top_k, ...); a gate adds "gate" (its path) and
    "gate_policy". Raises BundleVerificationError (one line) if any file fails verification."""
    root, run = open_bundle(bundle_path, public_key=public_key)
    model = root / run["model"]
    options = dict(run.get("options") or {})
    if run.get("gate"):
        options["gate"] = root / run["gate"]
        options["gate_policy"] = run.get("gate_policy")
    return model, run.get("source"), options
