"""`edgecell bench`: latency of every model, backend, precision and thread count on this device,
beside the papers' timing claims.

    from edgecell.benchmarks import run_bench
    result = run_bench([Path("edge/models/cells_int8.tflite")], out_dir=Path("bench"), iterations=100)

Modules: `stats` (percentiles, IQR), `harness` (one row, in-process), `row` (one row as a
subprocess printing JSON), `matrix` (the matrix and `run_bench`), `report` (table, JSON, CSV,
Markdown, PNG), `claims` (claims.json), `profiles` (device profiles), `vendor` (benchmark_app and
bare-loop checks). Imports here are lazy so that `python -m edgecell.benchmarks.row` starts fast.
"""

from __future__ import annotations

from typing import Any


def run_bench(*args: Any, **kwargs: Any) -> dict:
    from edgecell.benchmarks.matrix import run_bench as _run_bench

    return _run_bench(*args, **kwargs)


def _doc() -> str:
    from edgecell.benchmarks.matrix import run_bench as _run_bench

    return _run_bench.__doc__ or ""


try:  # the CLI owner copies option help from this docstring
    run_bench.__doc__ = _doc()
except Exception:  # pragma: no cover - never break the import for a docstring
    pass

__all__ = ["run_bench"]
