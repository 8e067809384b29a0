"""Building a bundle: pick the model files for a profile, make the offline wheelhouse, write the manifest."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

from edgecell import __version__
from edgecell.backends import BACKENDS, BY_SUFFIX, REGISTRY
from edgecell.bundle.common import (BUNDLE_FORMAT, CRYPTOGRAPHY_REQ, GATE_POLICIES, INSTALL_SCRIPT, MANIFEST,
                                    RUN_CONFIG, SIGNATURE, BundleError, RunSettings, fsync_dir, last_error_line,
                                    utc_now, safe_name, companion_files, sha256_file)
from edgecell.bundle.profiles import BundleProfile, get_profile
from edgecell.bundle.signing import load_private_key, key_fingerprint
from edgecell.bundle.verify import walk_files, verify_bundle
from edgecell.bundle.wheel import build_edgecell_wheel, model_family
from edgecell.resources import MODELS, shipped_path, source_checkout


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
                          f"found beside it: convert it first (python -m edgecell.convert.quantize --help)")
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


def source_revision() -> dict[str, Any] | None:
    """The checkout edgecell is imported from (an editable install): git commit and whether the
    tree had uncommitted changes (they are in the wheel too). None for an installed wheel."""
    root = source_checkout()
    if root is None:
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=20)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return {"git_commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


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
                          f"{last_error_line(text)}{hint}")
    return sorted(dest.glob("*.whl"))


#: base requirements a bundle leaves out when none of its models needs them (requirement ->
#: the model format that needs it): an x86 bundle that ships OpenVINO IR does not carry LiteRT.
#: (from the backend registry: a base-dependency backend and the file type it is made for)
OPTIONAL_BASE = {b.distributions[0]: b.reads[0] for b in REGISTRY if b.base_dependency}
#: model file type -> the module a bundle's install check imports for it (its default backend)
_BACKEND_MODULES = {suffix: BACKENDS[names[0]].package for suffix, names in BY_SUFFIX.items()}


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


def build_bundle(models: list[Path], *, profile: str, out: Path, run: RunSettings | None = None,
                 gate_policy=None, wheelhouse: bool = True, python_version: str | None = None,
                 sign_key: Path | None = None, archive: bool = True, name: str | None = None,
                 version: str | None = None, progress: ProgressFn | None = None,
                 shipped_models: bool = False) -> Path:
    """Build a deploy bundle in `out/`: the folder `out/<name>-<version>/`, or with `archive` the
    single file `out/<name>-<version>.tar.gz`. Returns that path.

    `python_version=None` uses the profile's Python (3.11; Jetson: 3.10). The first non-gate model
    is the one `run` uses; a model whose task is "gate" is the gate in front of it (`gate_policy`:
    reject, flag, pass, or a dict of settings). `run` is the device's `edgecell run` configuration, as
    data (the CLI parses `--run` into it). The bundle's edgecell wheel keeps the sample images and
    the shipped models among `models`, so `edgecell run` and `edgecell run cells` work on the device
    as here; `shipped_models` keeps all of edgecell's shipped models."""
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
    name = safe_name(name or main_info.name or mains[0][0].stem)
    created = utc_now()
    version = safe_name(version or created.strftime("%Y.%m.%d.%H%M%S"))
    signer = load_private_key(sign_key) if sign_key else None

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
        run = run or RunSettings()
        options = dict(run.options)
        if "gate" in options:
            raise BundleError("run arguments: give the gate model as one of the bundle's models (its task is "
                              "'gate'), not with --gate: a path on this machine does not exist on the device")
        if gate_policy is None and "gate_policy" in options:
            gate_policy = options.pop("gate_policy")
        run_config = {"model": main_rel, "gate": f"models/{gates[0][0].name}" if gates else None,
                      "gate_policy": gate_policy, "source": run.source, "options": options,
                      "output": options.get("out"), "args": list(run.args)}
        (root / RUN_CONFIG).write_text(json.dumps(run_config, indent=2) + "\n")

        extras = [prof.extra] if prof.extra else []
        extra_reqs = [CRYPTOGRAPHY_REQ] if signer else []
        wheel_info = None
        if wheelhouse:
            wheels = root / "wheels"
            if progress:
                progress("building", "edgecell wheel", 0)
            own = build_edgecell_wheel(wheels, keep_models=shipped_models or _shipped_names(c[0] for c in chosen))
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
                          "edgecell_wheel": {"file": own.name, "shipped_models": True if shipped_models
                                             else sorted(_shipped_names(c[0] for c in chosen)),
                                             "source": source_revision()},
                          "count": len(files), "bytes": sum(p.stat().st_size for p in files),
                          "wheels": [p.name for p in files]}
            script = root / INSTALL_SCRIPT
            script.write_text(_install_script(edgecell_req, extra_reqs, python_version, prof, bool(left_out), modules))
            script.chmod(0o755)

        file_table = {}
        for rel in sorted(walk_files(root)):
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
        fsync_dir(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def _shipped_names(files: Iterable[Path]) -> set[str]:
    """Names of the shipped models among `files` ('cells' for .../edgecell/models/cells_int8.tflite)."""
    folder = shipped_path(MODELS).resolve()
    return {model_family(f.name) for f in files if Path(f).resolve().parent == folder}


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
