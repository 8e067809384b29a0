"""Deploy bundles: one self-contained, verifiable artefact that puts edgecell and a deployment's
models on a device with no network (an X-ray cart, a Pi beside a microscope, a Jetson).

A bundle is a folder (or a .tar.gz of one folder) holding

    manifest.json   name, version, created, edgecell version, profile, task settings, and the
                    SHA-256 and size of every other file
    manifest.sig    optional ed25519 signature of manifest.json's exact bytes (base64)
    run.json        the configured `edgecell run`: model, gate, source, options, output folder
    models/         the models in the format the profile's backend runs, with their sidecars
    wheels/         offline wheelhouse for the target platform and Python (edgecell included)
    install.sh      offline install: pip install --no-index --find-links wheels edgecell[...]

On the device, `install_bundle` unpacks into `prefix/versions/<name>-<version>-<ts>/`, verifies,
builds the version's own virtual environment from the wheelhouse, and only then switches the
`prefix/current` symlink (an atomic rename of a temporary symlink); earlier versions are kept for
`rollback`. Once `prefix/trusted_key.pub` is pinned, unsigned or wrongly signed bundles are refused.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from edgecell import __version__
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


class BundleError(EdgecellError):
    """A bundle that cannot be built, read, trusted or installed."""


class BundleVerificationError(BundleError):
    """A bundle whose files or signature do not match its manifest."""


class UnsafeArchiveError(BundleError):
    """An archive member that would land outside the extraction folder."""


# --------------------------------------------------------------------------------------------
# Profiles: what a kind of device runs. Kept here (not in benchmarks/profiles.py) because a
# bundle needs the wheel platform tags and the Python of the target, which a benchmark does not.


@dataclass(frozen=True)
class BundleProfile:
    name: str
    description: str
    arch: str                 # x86_64 | aarch64
    glibc: tuple[int, int]    # newest glibc a wheel may need (manylinux_2_N tags up to this)
    python: str               # default target Python (major.minor)
    formats: tuple[str, ...]  # model formats, best first; the first one found beside a model is shipped
    backend: str              # the backend that runs the preferred format
    extra: str | None         # edgecell extra that installs that backend (None: base install)
    notes: str = ""

    def platforms(self) -> list[str]:
        """pip --platform tags, newest first. pip does not expand manylinux tags given with
        --platform, so every compatible manylinux_2_N tag is listed."""
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{self.arch}" for m in range(minor, 16, -1)]
        tags.append(f"manylinux2014_{self.arch}")
        if self.arch == "x86_64":
            tags += [f"manylinux_2_12_{self.arch}", f"manylinux2010_{self.arch}",
                     f"manylinux_2_5_{self.arch}", f"manylinux1_{self.arch}"]
        return tags

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["glibc"] = f"{self.glibc[0]}.{self.glibc[1]}"
        d["formats"] = list(self.formats)
        return d


PROFILES: dict[str, BundleProfile] = {
    "x86-legacy": BundleProfile(
        "x86-legacy", "Older x86-64 PC or X-ray cart (AVX2, often no AVX-512/VNNI): OpenVINO IR first.",
        arch="x86_64", glibc=(2, 31), python="3.11", formats=(".xml", ".onnx", ".tflite"),
        backend="openvino", extra="openvino",
        notes="Wheels picked for glibc <= 2.31 (Debian 11, Ubuntu 20.04 or newer); the manifest's "
              "wheelhouse.min_glibc is what the device really needs (2.28 for the 2026 wheels)."),
    "raspberry-pi": BundleProfile(
        "raspberry-pi", "Raspberry Pi 4/5, 64-bit Raspberry Pi OS (Bookworm: Python 3.11): LiteRT.",
        arch="aarch64", glibc=(2, 36), python="3.11", formats=(".tflite",),
        backend="litert", extra=None,
        notes="64-bit OS only (no 32-bit armv7l wheels of ai-edge-litert)."),
    "jetson": BundleProfile(
        "jetson", "NVIDIA Jetson, JetPack 6 (Ubuntu 22.04, Python 3.10): ONNX Runtime, LiteRT fallback.",
        arch="aarch64", glibc=(2, 35), python="3.10", formats=(".onnx", ".tflite"),
        backend="onnxruntime", extra="onnx",
        notes="PyPI's aarch64 onnxruntime is CPU-only; for CUDA/TensorRT install NVIDIA's Jetson "
              "onnxruntime-gpu wheel into the bundle's venv afterwards."),
}


def get_profile(name: str) -> BundleProfile:
    if name not in PROFILES:
        raise BundleError(f"unknown bundle profile {name!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]


# --------------------------------------------------------------------------------------------
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


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", str(text)).strip("-.") or "bundle"


def _write_bytes_atomic(path: Path, data: bytes, mode: int | None = None) -> Path:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def _fsync_dir(path: Path) -> None:
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


def _is_safe_relpath(name: str) -> bool:
    """A relative POSIX path that stays inside its root: no absolute path, no '..', no NUL."""
    if not name or "\x00" in name or "\\" in name:
        return False
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return False
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return bool(parts) and ".." not in parts


# --------------------------------------------------------------------------------------------
# signing (ed25519 through `cryptography`, imported only when used)


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BundleError("bundle signatures need the cryptography package: pip install "
                          "'cryptography>=42' (or 'edgecell[sign]')") from None
    return ed25519, serialization, InvalidSignature


def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Write a new ed25519 key pair (PEM). Keep the private key off the devices."""
    ed25519, serialization, _ = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    _write_bytes_atomic(Path(private_path), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
    _write_bytes_atomic(Path(public_path), public_key_bytes(key.public_key()))


def public_key_bytes(public_key) -> bytes:
    _, serialization, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_private_key(path: Path):
    ed25519, serialization, _ = _crypto()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BundleError(f"{path}: cannot read signing key ({exc.strerror})") from None
    try:
        if len(data) == 32:
            return ed25519.Ed25519PrivateKey.from_private_bytes(data)
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path}: not an unencrypted ed25519 private key in PEM ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BundleError(f"{path}: the signing key must be ed25519 (openssl genpkey -algorithm ed25519)")
    return key


def load_public_key(key) -> Any:
    """An ed25519 public key from a path, PEM/raw bytes, or a key object."""
    ed25519, serialization, _ = _crypto()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.public_key()
    source = str(key)
    if isinstance(key, (str, os.PathLike)):
        try:
            data = Path(key).read_bytes()
        except OSError as exc:
            raise BundleError(f"{key}: cannot read public key ({exc.strerror})") from None
    else:
        data, source = bytes(key), "public key"
    try:
        if len(data) == 32:
            return ed25519.Ed25519PublicKey.from_public_bytes(data)
        if data.lstrip().startswith(b"ssh-ed25519"):
            pub = serialization.load_ssh_public_key(data)
        else:
            pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, IndexError) as exc:
        raise BundleError(f"{source}: not an ed25519 public key in PEM ({exc})") from None
    if not isinstance(pub, ed25519.Ed25519PublicKey):
        raise BundleError(f"{source}: the public key must be ed25519")
    return pub


def key_fingerprint(public_key) -> str:
    _, serialization, _ = _crypto()
    raw = load_public_key(public_key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# safe extraction


def check_archive_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member checked before anything is written: regular files and folders with safe
    relative paths; links only relative, without '..' (so they cannot resolve outside); hard
    links only to members; no devices or FIFOs. Raises UnsafeArchiveError naming the member."""
    members = tar.getmembers()
    names = set()
    for m in members:
        name = m.name
        if not _is_safe_relpath(name):
            raise UnsafeArchiveError(f"refusing archive: member {name!r} has an absolute path or '..'")
        if m.issym():
            target = m.linkname
            if (not target or target.startswith("/") or "\\" in target or re.match(r"^[A-Za-z]:", target)
                    or ".." in target.split("/")):
                raise UnsafeArchiveError(f"refusing archive: link {name!r} -> {target!r} points outside the bundle")
        elif m.islnk():
            if not _is_safe_relpath(m.linkname) or posixpath.normpath(m.linkname) not in names:
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
    return _bundle_root(dest)


def _bundle_root(folder: Path) -> Path:
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


def _walk_files(root: Path) -> Iterable[str]:
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
        root = _bundle_root(path)
        manifest = read_manifest(root)
    except BundleError as exc:
        result.errors.append(str(exc))
        return result
    result.name, result.version = str(manifest.get("name", "")), str(manifest.get("version", ""))
    result.profile = str((manifest.get("profile") or {}).get("name", ""))
    listed = manifest["files"]
    for rel, meta in sorted(listed.items()):
        if not _is_safe_relpath(rel) or rel in (MANIFEST, SIGNATURE):
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
    for rel in _walk_files(root):
        if rel not in listed and rel not in (MANIFEST, SIGNATURE):
            result.extra.append(rel)
    sig_path = root / SIGNATURE
    if public_key is not None:
        try:
            pub = load_public_key(public_key)
            _, _, InvalidSignature = _crypto()
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
# building


ProgressFn = Callable[[str, str, int], None]  # (event, detail, wheels saved so far)


def _select_model_files(model: Path, profile: BundleProfile) -> tuple[Path, list[Path]]:
    """The model file in the best format the profile runs (found beside `model`, same stem),
    and every file to ship for it (OpenVINO .bin, sidecar .json)."""
    model = Path(model)
    if not model.exists():
        raise BundleError(f"{model}: no such model file")
    stem = model.with_suffix("")
    chosen = None
    for fmt in profile.formats:
        cand = stem.with_suffix(fmt)
        if cand.is_file():
            chosen = cand
            break
    if chosen is None:
        have = ", ".join(sorted({p.suffix for p in stem.parent.glob(stem.name + ".*")})) or model.suffix
        raise BundleError(f"{model}: profile {profile.name} runs {', '.join(profile.formats)} models; only {have} "
                          f"found beside it: convert it first (edgecell-convert)")
    files = [chosen]
    if chosen.suffix == ".xml":
        weights = chosen.with_suffix(".bin")
        if not weights.is_file():
            raise BundleError(f"{chosen}: OpenVINO IR needs its weights file {weights.name} beside it")
        files.append(weights)
    from edgecell.modelinfo import sidecar_path

    side = sidecar_path(chosen)
    if side.is_file():
        files.append(side)
        files += companion_files(side)
    return chosen, files


def companion_files(sidecar: Path) -> list[Path]:
    """Files a model's task needs beside it, named in its sidecar settings (for example the X-ray
    model's Grad-CAM head, `settings.gradcam_head`): a bundle without them runs, but not fully."""
    try:
        settings = json.loads(sidecar.read_text()).get("settings") or {}
    except (OSError, json.JSONDecodeError):
        return []
    out = []
    for value in settings.values():
        if isinstance(value, str) and value and "/" not in value and "\\" not in value:
            candidate = sidecar.parent / value
            if candidate.is_file() and candidate != sidecar:
                out.append(candidate)
    return out


def parse_run_args(run_args: list[str] | None, model_rel: str) -> dict[str, Any]:
    """Check `edgecell run` options against the real `run` command and keep the ones given:
    {"source": ..., "options": {param: value}, "args": [...]}. Unknown options are refused now,
    at build time, not on the device."""
    try:
        from typer import _click as click  # typer >= 0.2x vendors click
    except ImportError:  # pragma: no cover - older typer on top of click
        import click
    from typer.main import get_command

    ParameterSource = click.core.ParameterSource

    from edgecell import cli

    args = [str(a) for a in (run_args or [])]
    if any(a in ("--help", "-h") for a in args):
        raise BundleError("run arguments: --help is not a run configuration")
    group = get_command(cli.app)
    cmd = group.commands["run"] if hasattr(group, "commands") else group
    try:
        ctx = cmd.make_context("run", [model_rel] + args)
    except click.ClickException as exc:
        raise BundleError(f"run arguments {shlex.join(args)!r}: {exc.format_message()}") from None
    source = ctx.params.get("source")
    options: dict[str, Any] = {}
    for name, value in ctx.params.items():
        if name in ("model", "source") or ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        if name == "camera":
            source = str(value)
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        options[name] = value
    if "gate" in options:
        raise BundleError("run arguments: give the gate model as one of the bundle's models (its task is "
                          "'gate'), not with --gate: a path on this machine does not exist on the device")
    return {"source": source, "options": options, "args": args}


def _repo_root() -> Path:
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise BundleError("building a wheelhouse needs an edgecell source checkout (pyproject.toml not found "
                          f"beside {Path(__file__).resolve().parent}); use wheelhouse=False / --no-wheels")
    return root


def source_revision() -> dict[str, Any] | None:
    """The checkout the edgecell wheel is built from: git commit and whether the tree had
    uncommitted changes (they are in the wheel too)."""
    try:
        root = _repo_root()
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=20)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20)
    except (BundleError, OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return {"git_commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def build_edgecell_wheel(dest: Path, *, shipped_models: bool = False) -> Path:
    """edgecell itself as a wheel, built from this checkout (copied first, so the build leaves
    nothing behind in the working tree). Without `shipped_models` the package's own models and
    sample images are left out: a bundle carries the models it runs, and the wheelhouse is what
    dominates the size of a bundle."""
    import tomllib  # Python 3.11+

    root = _repo_root()
    config = tomllib.loads((root / "pyproject.toml").read_text())
    package_dirs = set(config.get("tool", {}).get("setuptools", {}).get("package-dir", {}).values()) or {"edge"}
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info", "build")
    with tempfile.TemporaryDirectory(prefix="edgecell-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py", "MANIFEST.in"):
            if (root / name).is_file():
                shutil.copy2(root / name, src / name)
        for d in sorted(package_dirs):
            if (root / d).is_dir():
                shutil.copytree(root / d, src / d, ignore=ignore, symlinks=False)
        if not shipped_models:
            for sub in ("models", "samples"):
                folder = src / "edge" / sub
                if folder.is_dir():
                    shutil.rmtree(folder)
                    folder.mkdir()
        before = set(dest.glob("edgecell-*.whl"))
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q", "-w", str(dest), str(src)]
        if _has_setuptools():
            cmd.insert(5, "--no-build-isolation")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BundleError("building the edgecell wheel failed: " + _last_error_line(proc.stderr + proc.stdout))
    wheels = sorted(set(dest.glob("edgecell-*.whl")) - before) or sorted(dest.glob("edgecell-*.whl"))
    if not wheels:
        raise BundleError("building the edgecell wheel produced no wheel")
    return wheels[-1]


def _has_setuptools() -> bool:
    import importlib.util

    return importlib.util.find_spec("setuptools") is not None


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["(no output)"])[-1][:400]


def _target_environment(profile: BundleProfile, python_version: str) -> dict[str, str]:
    return {"implementation_name": "cpython", "implementation_version": python_version + ".0",
            "os_name": "posix", "platform_machine": profile.arch, "platform_python_implementation": "CPython",
            "platform_release": "", "platform_system": "Linux", "platform_version": "",
            "python_full_version": python_version + ".0", "python_version": python_version,
            "sys_platform": "linux"}


def wheel_requirements(wheel: Path, extras: Iterable[str], profile: BundleProfile, python_version: str) -> list[str]:
    """edgecell's Requires-Dist for the target (markers evaluated for the target platform and
    Python, not this machine), without markers, for `pip download`."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover
        from pip._vendor.packaging.requirements import Requirement
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = zf.read(meta_name).decode()
    env = _target_environment(profile, python_version)
    out = []
    wanted = [""] + [e for e in extras if e]
    for line in meta.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e}) for e in wanted):
            continue
        req.marker = None
        out.append(str(req))
    return out


def download_wheels(requirements: list[str], dest: Path, profile: BundleProfile, python_version: str,
                    progress: ProgressFn | None = None) -> list[Path]:
    """`pip download` of the requirements (and their dependencies) as binary wheels for the
    profile's platform and Python. Streams pip's output to `progress`."""
    cmd = [sys.executable, "-m", "pip", "download", "--dest", str(dest), "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", "--progress-bar", "off",
           "--disable-pip-version-check"]
    for tag in profile.platforms():
        cmd += ["--platform", tag]
    cmd += requirements
    saved = 0
    tail: list[str] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-40:]
        m = re.match(r"\s*(Collecting|Downloading|Saved|File was already downloaded)\s+(\S+)", line)
        if m and progress:
            kind, what = m.group(1), m.group(2)
            if kind in ("Saved", "File was already downloaded"):
                saved += 1
                progress("saved", Path(what).name, saved)
            else:
                progress(kind.lower(), what, saved)
    rc = proc.wait()
    if rc != 0:
        text = "\n".join(tail)
        hint = ""
        if re.search(r"(?i)(connection|network|resolve|timed out|proxy|temporary failure)", text):
            hint = " (is PyPI reachable? build with --no-wheels to make a bundle without the wheelhouse)"
        raise BundleError(f"downloading wheels for {profile.name} (Python {python_version}) failed: "
                          f"{_last_error_line(text)}{hint}")
    return sorted(dest.glob("*.whl"))


#: base requirements a bundle leaves out when none of its models needs them (requirement ->
#: the model format that needs it): an x86 bundle that ships OpenVINO IR does not carry LiteRT.
OPTIONAL_BASE = {"ai-edge-litert": ".tflite"}
_BACKEND_MODULES = {".tflite": "ai_edge_litert", ".xml": "openvino", ".onnx": "onnxruntime"}


def _req_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0].lower().replace("_", "-")


def _install_script(edgecell_req: str, extra_reqs: list[str], python_version: str, profile: BundleProfile,
                    no_deps: bool = False, modules: list[str] | None = None) -> str:
    if no_deps:  # the wheelhouse is the whole closure, minus a backend no model here needs
        reqs = '--no-deps "$HERE"/wheels/*.whl'
    else:
        reqs = " ".join(shlex.quote(r) for r in [edgecell_req, *extra_reqs])
    check = ", ".join(modules or ["edgecell"])
    major, minor = python_version.split(".")[:2]
    return f"""#!/bin/sh
# Offline install of this bundle's edgecell ({profile.name}, Python {python_version}): no network used.
#   sh install.sh [VENV]        default VENV: ./venv beside this script
#   PYTHON=/usr/bin/python{python_version} sh install.sh
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${{1:-$HERE/venv}}"
PY="${{PYTHON:-python{python_version}}}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == ({major}, {minor}) else 1)' || {{
    echo "install.sh: this bundle's wheels are for Python {python_version}; $PY is $("$PY" -V 2>&1)" >&2; exit 1; }}
# only this bundle's wheels: no pip config, index or find-links from the environment
for v in $(env | sed -n 's/^\\(PIP_[A-Za-z0-9_]*\\)=.*/\\1/p'); do unset "$v"; done
export PIP_CONFIG_FILE=/dev/null
# fast path: a venv without its own pip, filled by this Python's pip (pip >= 22.3: --python);
# otherwise the usual venv with pip (ensurepip costs 5-20 s on a slow device)
if "$PY" -m venv --without-pip "$VENV" && "$PY" -m pip --python "$VENV/bin/python" --version >/dev/null 2>&1; then
    pip_venv() {{ "$PY" -m pip --python "$VENV/bin/python" "$@"; }}
else
    "$PY" -m venv "$VENV"
    pip_venv() {{ "$VENV/bin/python" -m pip "$@"; }}
fi
pip_venv install --no-index --find-links "$HERE/wheels" --disable-pip-version-check -q {reqs}
"$VENV/bin/python" -c "import {check}"
echo "installed: $VENV/bin/edgecell"
"""


def build_bundle(models: list[Path], *, profile: str, out: Path, run_args: list[str] | None = None,
                 gate_policy=None, wheelhouse: bool = True, python_version: str | None = None,
                 sign_key: Path | None = None, archive: bool = True, name: str | None = None,
                 version: str | None = None, progress: ProgressFn | None = None,
                 shipped_models: bool = False) -> Path:
    """Build a deploy bundle in `out/`: the folder `out/<name>-<version>/`, or with `archive` the
    single file `out/<name>-<version>.tar.gz`. Returns that path.

    `python_version=None` uses the profile's Python (3.11; Jetson: 3.10). The first non-gate model
    is the one `run` uses; a model whose task is "gate" is the gate in front of it (`gate_policy`:
    reject, flag, pass, or a dict of settings). `shipped_models` keeps edgecell's own shipped models and sample
    images in the bundle's edgecell wheel (off by default: the bundle carries its own models)."""
    prof = get_profile(profile)
    python_version = python_version or prof.python
    if not re.fullmatch(r"3\.\d+", python_version):
        raise BundleError(f"python version {python_version!r}: expected major.minor such as 3.11")
    if not models:
        raise BundleError("a bundle needs at least one model")
    from edgecell.modelinfo import read_model_info

    chosen: list[tuple[Path, list[Path], Any]] = []
    for m in models:
        main_file, files = _select_model_files(Path(m), prof)
        chosen.append((main_file, files, read_model_info(main_file)))
    seen: dict[str, Path] = {}
    for _, files, _ in chosen:
        for f in files:
            if f.name in seen and seen[f.name].resolve() != f.resolve():
                raise BundleError(f"two models ship a file named {f.name} ({seen[f.name]}, {f}); rename one")
            seen[f.name] = f
    gates = [c for c in chosen if c[2].task == "gate"]
    mains = [c for c in chosen if c[2].task != "gate"]
    if not mains:
        raise BundleError("a bundle needs a model to run, not only a gate")
    if len(gates) > 1:
        raise BundleError(f"{len(gates)} gate models given; a run uses one gate")
    if gate_policy is not None:
        if not gates:
            raise BundleError("a gate policy was given but none of the models is a gate (task 'gate')")
        if isinstance(gate_policy, str) and gate_policy not in GATE_POLICIES:
            raise BundleError(f"gate policy {gate_policy!r}: expected one of {', '.join(GATE_POLICIES)}")
    main_info = mains[0][2]
    name = _safe_name(name or main_info.name or mains[0][0].stem)
    created = _now()
    version = _safe_name(version or created.strftime("%Y.%m.%d.%H%M%S"))
    signer = _load_private_key(sign_key) if sign_key else None

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final_dir = out / f"{name}-{version}"
    final_archive = out / f"{name}-{version}.tar.gz"
    final = final_archive if archive else final_dir
    if final.exists():
        raise BundleError(f"{final} already exists; choose another --version or remove it")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-{version}.", dir=out))
    try:
        root = staging / f"{name}-{version}"
        (root / "models").mkdir(parents=True)
        model_entries = []
        for main_file, files, info in chosen:
            for f in files:
                shutil.copy2(f, root / "models" / f.name)
            model_entries.append({
                "file": f"models/{main_file.name}", "files": [f"models/{f.name}" for f in files],
                "role": "gate" if info.task == "gate" else "model", "task": info.task, "name": info.name,
                "version": info.version, "precision": info.precision, "labels": info.labels,
                "input_size": list(info.input_size), "settings": info.settings, "metrics": info.metrics,
                "source_file": str(Path(main_file).resolve()),
            })
        main_rel = f"models/{mains[0][0].name}"
        run = parse_run_args(run_args, main_rel)
        if gate_policy is None and "gate_policy" in run["options"]:
            gate_policy = run["options"].pop("gate_policy")
        run_config = {"model": main_rel, "gate": f"models/{gates[0][0].name}" if gates else None,
                      "gate_policy": gate_policy, "source": run["source"], "options": run["options"],
                      "output": run["options"].get("out"), "args": run["args"]}
        (root / RUN_CONFIG).write_text(json.dumps(run_config, indent=2) + "\n")

        extras = [prof.extra] if prof.extra else []
        extra_reqs = [CRYPTOGRAPHY_REQ] if signer else []
        wheel_info = None
        if wheelhouse:
            wheels = root / "wheels"
            if progress:
                progress("building", "edgecell wheel", 0)
            own = build_edgecell_wheel(wheels, shipped_models=shipped_models)
            reqs = wheel_requirements(own, extras, prof, python_version) + extra_reqs
            formats = {c[0].suffix for c in chosen}
            left_out = [r for r in reqs if _req_name(r) in OPTIONAL_BASE and OPTIONAL_BASE[_req_name(r)] not in formats]
            reqs = [r for r in reqs if r not in left_out]
            download_wheels(reqs, wheels, prof, python_version, progress)
            edgecell_req = f"edgecell{'[' + ','.join(extras) + ']' if extras else ''}=={_wheel_version(own)}"
            files = sorted(wheels.glob("*.whl"))
            modules = ["edgecell", "numpy", "cv2"] + sorted({_BACKEND_MODULES[f] for f in formats})
            wheel_info = {"python": python_version, "platform": prof.platforms()[0], "requirements": reqs,
                          "left_out": left_out, "no_deps": bool(left_out),
                          "install": [edgecell_req, *extra_reqs], "check_imports": modules,
                          "min_glibc": wheels_min_glibc(p.name for p in files),
                          "edgecell_wheel": {"file": own.name, "shipped_models": shipped_models,
                                             "source": source_revision()},
                          "count": len(files), "bytes": sum(p.stat().st_size for p in files),
                          "wheels": [p.name for p in files]}
            script = root / INSTALL_SCRIPT
            script.write_text(_install_script(edgecell_req, extra_reqs, python_version, prof, bool(left_out), modules))
            script.chmod(0o755)

        file_table = {}
        for rel in sorted(_walk_files(root)):
            p = root / rel
            if p.is_symlink():
                raise BundleError(f"{rel}: a link inside the bundle; bundles hold regular files only")
            file_table[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
        manifest = {
            "format": BUNDLE_FORMAT, "name": name, "version": version,
            "created": created.isoformat(timespec="seconds"), "edgecell_version": __version__,
            "profile": {**prof.to_dict(), "python": python_version},
            "models": model_entries, "task": {"task": main_info.task, "settings": main_info.settings,
                                              "labels": main_info.labels},
            "run": run_config, "wheelhouse": wheel_info,
            "signed_by": key_fingerprint(signer.public_key()) if signer else None,
            "files": file_table,
        }
        data = (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()
        (root / MANIFEST).write_bytes(data)
        if signer:
            (root / SIGNATURE).write_bytes(base64.b64encode(signer.sign(data)) + b"\n")
        verify_bundle(root, public_key=signer.public_key() if signer else None).raise_for_failure()
        if archive:
            tmp_archive = staging / final_archive.name
            _write_archive(root, tmp_archive)
            os.replace(tmp_archive, final_archive)
        else:
            os.rename(root, final_dir)
        _fsync_dir(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def wheels_min_glibc(names: Iterable[str]) -> str | None:
    """The glibc the wheelhouse needs on the device: for each wheel the oldest glibc one of its
    platform tags accepts, then the newest of those over all wheels (None: pure-Python only)."""
    need = None
    for name in names:
        plats = name[:-4].split("-")[-1].split(".")
        versions = []
        for plat in plats:
            m = re.match(r"manylinux_(\d+)_(\d+)_", plat)
            if m:
                versions.append((int(m.group(1)), int(m.group(2))))
            elif plat.split("_")[0] in _LEGACY_MANYLINUX:
                versions.append(_LEGACY_MANYLINUX[plat.split("_")[0]])
        if versions:
            v = min(versions)
            need = v if need is None or v > need else need
    return f"{need[0]}.{need[1]}" if need else None


def _wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def _write_archive(root: Path, dest: Path) -> None:
    """A .tar.gz of the bundle folder: regular files only, owner root, sorted, fixed mtime of the
    manifest, so the same bundle packs to the same members."""
    mtime = int((root / MANIFEST).stat().st_mtime)

    def clean(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        ti.mtime = mtime
        ti.mode = 0o755 if (ti.isdir() or ti.mode & 0o100) else 0o644
        return ti

    # wheels are zip files already: fast gzip level, little to gain from more
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        tar.add(root, arcname=root.name, recursive=False, filter=clean)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for entry in sorted(dirnames) + sorted(filenames):
                p = Path(dirpath) / entry
                tar.add(p, arcname=f"{root.name}/{p.relative_to(root).as_posix()}", recursive=False, filter=clean)


# --------------------------------------------------------------------------------------------
# install, rollback, systemd


def _pinned_key_path(prefix: Path) -> Path:
    return Path(prefix) / TRUSTED_KEY


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
    line = json.dumps({"time": _now().isoformat(timespec="seconds"), **entry}) + "\n"
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
    _fsync_dir(prefix)


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
    # fast path: a venv without pip, filled by the installing Python's pip (--python, pip >= 22.3);
    # ensurepip alone takes 5-20 s on a busy or slow device
    proc = subprocess.run([py, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True)
    pip = [py, "-m", "pip", "--python", str(venv / "bin" / "python")]
    if proc.returncode != 0 or subprocess.run([*pip, "--version"], capture_output=True, env=env).returncode != 0:
        proc = subprocess.run([py, "-m", "venv", str(venv)], capture_output=True, text=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip"]
    if proc.returncode != 0:
        raise BundleError(f"creating the virtual environment failed: {_last_error_line(proc.stderr + proc.stdout)}"
                          " (on Debian: apt install python3-venv)")
    wheels = version_dir / "wheels"
    what = (["--no-deps", *map(str, sorted(wheels.glob("*.whl")))] if info.get("no_deps")
            else list(info.get("install", [])))
    proc = subprocess.run([*pip, "install", "--no-index", "--find-links", str(wheels), "--disable-pip-version-check",
                           "-q", *what], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise BundleError(f"offline install from the wheelhouse failed: {_last_error_line(proc.stderr + proc.stdout)}")
    modules = info.get("check_imports") or ["edgecell"]
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", "import " + ", ".join(modules)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise BundleError(f"the installed environment does not import: {_last_error_line(proc.stderr)}")
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
    (prefix / "logs").mkdir(exist_ok=True)
    pinned = _pinned_key_path(prefix)
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
    stamp = _now().strftime("%Y%m%dT%H%M%S")
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=versions))
    target: Path | None = None
    try:
        if bundle.is_file():
            root = safe_extract(bundle, staging)
        else:
            src_root = _bundle_root(bundle)
            root = staging / "bundle"
            shutil.copytree(src_root, root, symlinks=True,
                            ignore=lambda d, names: [n for n in names if Path(d) == src_root and n in LOCAL_DIRS])
        manifest = read_manifest(root)
        base = f"{_safe_name(manifest.get('name', 'bundle'))}-{_safe_name(manifest.get('version', '0'))}-{stamp}"
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
        _activate(prefix, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if target is not None and target != current_version(prefix):
            shutil.rmtree(target, ignore_errors=True)
        raise
    _append_history(prefix, {"action": "install", "version": target.name, "from": str(bundle),
                             "previous": previous.name if previous else None})
    if trust is not None and not pinned.is_file():
        _write_bytes_atomic(pinned, public_key_bytes(key))
    _prune(prefix, keep)
    return target


def installed_versions(prefix: Path) -> list[Path]:
    """Installed version folders, oldest install first (from the history, then by name)."""
    versions = Path(prefix) / "versions"
    present = {p.name: p for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".")} \
        if versions.is_dir() else {}
    order = []
    for entry in _read_history(prefix):
        if entry.get("action") == "install" and entry.get("version") in present and entry["version"] not in order:
            order.append(entry["version"])
    order += sorted(n for n in present if n not in order)
    return [present[n] for n in order]


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
    pinned = _pinned_key_path(prefix)
    result = verify_bundle(target, public_key=pinned if pinned.is_file() else None)
    if not result.ok:
        raise BundleVerificationError(f"cannot roll back to {target.name}: {result.message()}")
    _activate(prefix, target)
    _append_history(prefix, {"action": "rollback", "version": target.name, "previous": current.name})
    return target


def systemd_unit(prefix: Path, user: str = "edgecell", *, executable: str | None = None,
                 description: str | None = None) -> str:
    """A systemd service that runs the installed bundle's configured `edgecell run` at boot,
    restarts it on failure and appends its output to `prefix/logs/edgecell.log`.
    `edgecell run PREFIX/current` re-verifies the bundle before it starts."""
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
    log = prefix / "logs" / "edgecell.log"
    return f"""[Unit]
Description={description}
After=local-fs.target network-online.target
Wants=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=10

[Service]
Type=simple
User={user}
WorkingDirectory={prefix}
Environment=PYTHONUNBUFFERED=1
ExecStart={executable} run {current}
Restart=on-failure
RestartSec=5
# results go to the run's --out folder (relative to WorkingDirectory); console output and errors
# to this log. The user needs write access to both: sudo chown -R {user} {prefix / "logs"}
StandardOutput=append:{log}
StandardError=append:{log}

[Install]
WantedBy=multi-user.target
"""


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
        root = _bundle_root(p)
    real = root.resolve()
    if public_key is None and real.parent.name == "versions":
        pinned = _pinned_key_path(real.parent.parent)
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
