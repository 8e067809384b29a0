"""edgecell's own wheel for a bundle, packed from the edgecell that is installed here.

A bundle must build wherever `edgecell bundle` runs: after `pip install edgecell` on a workstation
(no source tree), in an editable development install, on a machine with no network and no
`setuptools`/`wheel` packages. So the wheel is not *built* (no build backend, no build isolation,
no download): it is *packed*, a wheel being a zip of the package files plus the distribution's
metadata. The files are the ones this Python imports:

- an installed wheel: the files its RECORD lists under `edgecell/` (exactly what pip installed);
- an editable install: the package folders and package data the checkout's pyproject.toml names
  (the same rules setuptools applies when it builds the wheel).

METADATA and entry_points.txt come from the installed distribution, so the device gets the same
requirements and the same `edgecell` command.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import re
import zipfile
from pathlib import Path
from typing import Collection, Iterator

from edgecell import __version__
from edgecell.bundle.common import BundleError, companion_files
from edgecell.resources import MODELS, SAMPLES, shipped_path, source_checkout

DIST = "edgecell"
_SKIP_PARTS = {"__pycache__", ".pytest_cache"}
#: a shipped model file's family: cells_int8.tflite, cells_fp32.onnx, cells_int8.json -> cells
_PRECISION_SUFFIX = re.compile(r"_(int8|fp32|fp16|uint8|int4)$")


def model_family(filename: str) -> str:
    """`cells_int8.tflite` -> `cells` (the name `edgecell run cells` uses)."""
    return _PRECISION_SUFFIX.sub("", filename.split(".", 1)[0])


def _distribution() -> importlib.metadata.Distribution:
    # the installed .dist-info; a stray edgecell.egg-info (left in a checkout by a setuptools
    # build, earlier on sys.path) has no METADATA file and is passed over
    dist = next((d for d in importlib.metadata.distributions(name=DIST) if d.read_text("METADATA")), None)
    if dist is None:
        raise BundleError("edgecell's distribution metadata is not installed (edgecell imported from a "
                          "folder, not installed with pip): pip install edgecell, or pip install -e . "
                          "in the checkout")
    if dist.version != __version__:
        raise BundleError(f"the installed edgecell metadata is version {dist.version}, the imported package "
                          f"{__version__}: reinstall edgecell (pip install --force-reinstall ...)")
    return dist


def _checkout_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(name in the wheel, file) for an editable install: the packages, package-dir mapping and
    package data of the checkout's pyproject.toml."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: pip vendors the same parser
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    setup = config.get("tool", {}).get("setuptools", {})
    package_dir: dict[str, str] = setup.get("package-dir", {})
    package_data: dict[str, list[str]] = setup.get("package-data", {})

    def folder_of(package: str) -> Path:
        best = max((p for p in package_dir if package == p or package.startswith(p + ".")), key=len, default="")
        rest = package[len(best):].lstrip(".").split(".") if package != best else []
        base = root / package_dir.get(best, best.replace(".", "/"))
        return base.joinpath(*[r for r in rest if r])

    for package in setup.get("packages", []):
        folder = folder_of(package)
        prefix = package.replace(".", "/")
        if not (folder / "__init__.py").is_file():
            raise BundleError(f"pyproject.toml lists package {package}, but {folder} has no __init__.py")
        for f in sorted(folder.glob("*.py")):
            yield f"{prefix}/{f.name}", f
        for pattern in package_data.get(package, []):
            for f in sorted(folder.glob(pattern)):
                if f.is_file() and not f.name.endswith(".py"):
                    yield f"{prefix}/{f.relative_to(folder).as_posix()}", f


def _installed_files(dist: importlib.metadata.Distribution) -> Iterator[tuple[str, Path]]:
    """(name in the wheel, file) for an installed wheel: what its RECORD lists under edgecell/."""
    for entry in dist.files or []:
        name = entry.as_posix() if hasattr(entry, "as_posix") else str(entry)
        if name.startswith(DIST + "/") and not _SKIP_PARTS & set(name.split("/")) and not name.endswith(".pyc"):
            path = Path(entry.locate())
            if not path.is_file():
                raise BundleError(f"{path}: listed in edgecell's RECORD but missing; reinstall edgecell")
            yield name, path


def package_files(keep_models: Collection[str] | bool = True, keep_samples: bool = True) -> list[tuple[str, Path]]:
    """The files of edgecell's wheel, as (name in the wheel, file here), sorted by name.

    `keep_models`: True keeps every shipped model, a collection keeps the models of those names
    (every format and precision, sidecar and companion files), False none. Model cards stay."""
    checkout = source_checkout()
    files = dict(_checkout_files(checkout) if checkout else _installed_files(_distribution()))
    models_prefix = f"{DIST}/{MODELS}/"
    if keep_models is not True:
        wanted = set(keep_models or ())
        files = {name: path for name, path in files.items() if not name.startswith(models_prefix)
                 or name.endswith(".md") or _model_kept(name[len(models_prefix):], wanted)}
    if not keep_samples:
        files = {n: p for n, p in files.items() if not n.startswith(f"{DIST}/{SAMPLES}/")}
    if f"{DIST}/__init__.py" not in files:
        raise BundleError(f"no edgecell package files found (looked in {checkout or shipped_path()})")
    return sorted(files.items())


def _model_kept(filename: str, wanted: set[str]) -> bool:
    if model_family(filename) in wanted:
        return True
    # companion files named in a kept model's sidecar settings (the X-ray Grad-CAM head)
    for name in wanted:
        for side in shipped_path(MODELS).glob(f"{name}_*.json"):
            if model_family(side.name) == name and any(c.name == filename for c in companion_files(side)):
                return True
    return False


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_edgecell_wheel(dest: Path, *, keep_models: Collection[str] | bool = False,
                         keep_samples: bool = True) -> Path:
    """Pack the installed edgecell as `dest/edgecell-<version>-py3-none-any.whl` (see the module
    docstring). Without `keep_models` the shipped models are left out (a bundle carries the models
    it runs in its own models/ folder); the sample images (180 kB) stay, so `edgecell run` with no
    source works on the device as it does here."""
    dist = _distribution()
    files = package_files(keep_models, keep_samples)
    version = dist.version
    info = f"{DIST}-{version}.dist-info"
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{DIST}-{version}-py3-none-any.whl"
    metadata = {
        "METADATA": dist.read_text("METADATA"),
        "entry_points.txt": dist.read_text("entry_points.txt"),
        "top_level.txt": DIST + "\n",
        "WHEEL": f"Wheel-Version: 1.0\nGenerator: edgecell {__version__} (bundle)\nRoot-Is-Purelib: true\n"
                 "Tag: py3-none-any\n",
    }
    record: list[str] = []
    tmp = target.with_name(f".{target.name}.part")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, path in files:
                data = path.read_bytes()
                _write(zf, name, data)
                record.append(f"{name},{_record_hash(data)},{len(data)}")
            for filename, text in metadata.items():
                if text is None:
                    continue
                data = text.encode()
                _write(zf, f"{info}/{filename}", data)
                record.append(f"{info}/{filename},{_record_hash(data)},{len(data)}")
            record.append(f"{info}/RECORD,,")
            _write(zf, f"{info}/RECORD", ("\n".join(record) + "\n").encode())
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"writing the edgecell wheel {target} failed: {exc}") from None
    return target


def _write(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    """A member with a fixed date and mode, so the same files pack to the same wheel."""
    info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)
