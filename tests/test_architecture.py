"""The layering ARCHITECTURE.md describes, checked on the source: imports only point down, no
private name is imported from another module, and `edgecell --help` loads no heavy library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: folder -> package it becomes (pyproject's package-dir)
PACKAGES = {"edge": "edgecell", "convert": "edgecell.convert", "calibration": "edgecell.calibration",
            "benchmarks": "edgecell.benchmarks"}
#: the command line is the top of the runtime: it may reach the tools (`edgecell bench`) lazily
CLI = ("edge/cli.py", "edge/commands/", "edge/cli_bundle.py", "edge/__main__.py")
#: arrows that still run up, not yet cleaned up (remove entries, never add): the bundle builder
#: checks `--run` options against the real `run` command
KNOWN_UPWARD: set = set()  # was bundle/build.py -> edgecell.cli; keep it empty
#: private names imported across files that are not yet cleaned up (remove entries, never add)
KNOWN_PRIVATE: set = set()


def imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))]


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in imports(path):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}  # `from edgecell import cli`
    return out


def files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_runtime_never_imports_training_or_benchmarks():
    bad = [(rel(p), m) for p in files("edge") if not rel(p).startswith(CLI)
           for m in imported_modules(p) if m.startswith(("edgecell.convert", "edgecell.benchmarks"))]
    assert bad == []


def test_device_runtime_never_imports_the_datasets_at_module_level():
    """Dataset readers sit above the runtime; a task's `evaluate` hook may reach them lazily."""
    above = ("edge/evaluation/", "edge/fleet/", *CLI)
    bad = [(rel(p), n.module) for p in files("edge") if not rel(p).startswith(above)
           for n in ast.parse(p.read_text()).body
           if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("edgecell.calibration")]
    assert bad == []


def test_datasets_never_import_evaluation_training_or_benchmarks():
    bad = [(rel(p), m) for p in files("calibration") for m in imported_modules(p)
           if m.startswith(("edgecell.evaluation", "edgecell.convert", "edgecell.benchmarks", "edgecell.cli",
                            "edgecell.commands"))]
    assert bad == []


def test_nothing_below_the_command_line_imports_it():
    bad = [(rel(p), m) for folder in PACKAGES for p in files(folder) if not rel(p).startswith(CLI)
           for m in imported_modules(p) if m == "edgecell.cli" or m.startswith("edgecell.commands")]
    assert set(bad) <= KNOWN_UPWARD


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for folder in PACKAGES:
        for p in files(folder):
            if rel(p) in KNOWN_PRIVATE:
                continue
            for node in imports(p):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgecell"):
                    bad += [(rel(p), a.name) for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert bad == []


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["eval", "--help"], ["bench", "--help"]])
def test_help_loads_no_heavy_library(argv):
    code = ("import sys; from edgecell.cli import app\n"
            f"try: app({argv!r})\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'openvino', 'onnxruntime', 'matplotlib', 'sklearn', "
            "'cv2', 'edgecell.benchmarks', 'edgecell.convert') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stderr, out.stderr[-500:]
