"""Files that ship inside the edgecell package: the models, the sample images, package data.

Every lookup of a shipped file goes through `shipped_path`, which asks `importlib.resources`
where the installed package is. Climbing from `__file__` to `<checkout>/edge/models` works in a
source checkout only: after `pip install .` the package lives in site-packages as `edgecell/`,
with no `edge/` folder above it, and such a lookup finds nothing.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from edgecell.errors import EdgecellError, ModelError

PACKAGE = "edgecell"
#: sub-folders of the package that hold shipped files
MODELS = "models"
SAMPLES = "samples"
#: the file a shipped model name stands for: 'cells' -> models/cells_int8.tflite
SHIPPED_MODEL_SUFFIX = "_int8.tflite"


def shipped_path(*parts: str, package: str = PACKAGE) -> Path:
    """The file or folder `parts` shipped inside `package`, e.g. `shipped_path("models")`,
    `shipped_path("samples", "bccd")`, `shipped_path("claims.json", package="edgecell.benchmarks")`.

    The path may not exist (an install without the shipped models); callers check. edgecell is
    always installed as files on disk (a wheel, an editable install, a bundle's venv), so a
    package that is not (a zip import) is refused with one line rather than half-working."""
    target = resources.files(package)
    for part in parts:
        target = target.joinpath(part)
    if not isinstance(target, Path):
        raise EdgecellError(f"{package} is not installed as files on disk ({type(target).__name__}); "
                            "install it with pip from a wheel or a checkout")
    return target


def shipped_models() -> dict[str, Path]:
    """Shipped model names -> files: 'cells' -> .../models/cells_int8.tflite (INT8 TFLite)."""
    folder = shipped_path(MODELS)
    if not folder.is_dir():
        return {}
    return {p.name[: -len(SHIPPED_MODEL_SUFFIX)]: p for p in sorted(folder.glob("*" + SHIPPED_MODEL_SUFFIX))}


def shipped_samples(subfolder: str | None = None) -> Path:
    """The shipped sample images (all of them, or one set such as 'bccd')."""
    return shipped_path(SAMPLES, subfolder) if subfolder else shipped_path(SAMPLES)


def resolve_model_path(model: str, backend: str = "auto") -> Path:
    """A model file path, or the name of a shipped model ('cells', 'products', ...). A shipped
    name with a named backend gives the sibling in the file type that backend is made for, where
    one ships ('cells' with openvino -> models/cells_int8.xml), else the INT8 .tflite."""
    path = Path(model)
    if path.exists():
        return path
    shipped = shipped_models()
    if model in shipped:
        from edgecell.backends import BACKENDS

        made_for = BACKENDS[backend].reads if backend in BACKENDS else ()
        return next((s for s in (shipped[model].with_suffix(x) for x in made_for) if s.is_file()), shipped[model])
    names = ", ".join(shipped) or f"none installed in {shipped_path(MODELS)}"
    raise ModelError(f"{model}: no such model file, and not a shipped model name (shipped: {names})")


def source_checkout() -> Path | None:
    """The source checkout edgecell is imported from (an editable install or the repository
    itself), or None for an installed wheel. Only development conveniences use it (the datasets
    beside the checkout, the git revision of a bundle); shipped files never do."""
    package = shipped_path()
    root = package.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if 'name = "edgecell"' in text else None
