"""The wheel must carry every subpackage and the shipped models: a folder with an __init__.py that
pyproject does not list is silently missing from `pip install .` and from deploy bundles."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = {"edge": "edgecell", "convert": "edgecell.convert", "calibration": "edgecell.calibration",
         "benchmarks": "edgecell.benchmarks"}


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for folder, package in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((package, *rel)))
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert config["package-dir"] == {v: k for k, v in ROOTS.items()}
