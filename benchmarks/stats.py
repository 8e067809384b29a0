"""Pure statistics on a list of timings (no I/O, no backend, no numpy needed).

Definitions (stated here because percentiles have several):

* **percentile p** (0..100): linear interpolation between closest ranks, the "type 7" estimator of
  Hyndman & Fan (1996), which is also numpy's default (`np.percentile(..., method="linear")`):
  sort the n samples x[0..n-1]; h = (n - 1) * p / 100; result = x[floor(h)] + (h - floor(h)) *
  (x[floor(h) + 1] - x[floor(h)]).  median = p50, p90, p99 the same way.
* **IQR**: p75 - p25 with the same definition.
* **noise**: IQR / median (relative spread of a row; on a shared machine it is the number to look
  at before believing a difference between two rows).
* **mean / std**: arithmetic mean and the sample standard deviation (n - 1).

Every function takes timings in any unit and returns the same unit; `summarize` is usually called
with milliseconds.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence


def _sorted(values: Iterable[float]) -> list[float]:
    data = sorted(float(v) for v in values)
    if not data:
        raise ValueError("no timings: need at least one sample")
    if any(math.isnan(v) for v in data):
        raise ValueError("timings contain NaN")
    return data


def percentile(values: Iterable[float], p: float) -> float:
    """The p-th percentile (0 <= p <= 100), linear interpolation between closest ranks (type 7)."""
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    data = _sorted(values)
    return _percentile_sorted(data, p)


def _percentile_sorted(data: Sequence[float], p: float) -> float:
    h = (len(data) - 1) * p / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (h - lo) * (data[hi] - data[lo])


def median(values: Iterable[float]) -> float:
    return percentile(values, 50.0)


def iqr(values: Iterable[float]) -> float:
    data = _sorted(values)
    return _percentile_sorted(data, 75.0) - _percentile_sorted(data, 25.0)


def mean(values: Iterable[float]) -> float:
    data = _sorted(values)
    return math.fsum(data) / len(data)


def stdev(values: Iterable[float]) -> float:
    """Sample standard deviation (n - 1); 0.0 for a single sample."""
    data = _sorted(values)
    if len(data) < 2:
        return 0.0
    m = math.fsum(data) / len(data)
    return math.sqrt(math.fsum((x - m) ** 2 for x in data) / (len(data) - 1))


def summarize(values: Iterable[float]) -> dict[str, float]:
    """n, median, p90, p99, min, max, mean, std, q1 (p25), q3 (p75), iqr, noise (iqr / median)."""
    data = _sorted(values)
    q1, q3 = _percentile_sorted(data, 25.0), _percentile_sorted(data, 75.0)
    med = _percentile_sorted(data, 50.0)
    m = math.fsum(data) / len(data)
    sd = math.sqrt(math.fsum((x - m) ** 2 for x in data) / (len(data) - 1)) if len(data) > 1 else 0.0
    return {
        "n": len(data),
        "median": med,
        "p90": _percentile_sorted(data, 90.0),
        "p99": _percentile_sorted(data, 99.0),
        "min": data[0],
        "max": data[-1],
        "mean": m,
        "std": sd,
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "noise": (q3 - q1) / med if med > 0 else 0.0,
    }


def throughput(count: int, elapsed: float, unit: float = 1.0) -> float:
    """Items per second: `count` items in `elapsed` time units (`unit` seconds each, e.g. 1e-3 for ms)."""
    if elapsed <= 0:
        return 0.0
    return count / (elapsed * unit)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero (for ours/raw, INT8/FP32, measured/claimed)."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def relative_difference(a: float, b: float) -> float:
    """(a - b) / b: +0.05 means a is 5 % above b."""
    return (a - b) / b


def within(a: float, b: float, tolerance: float) -> bool:
    """|a - b| / b <= tolerance (e.g. our median vs benchmark_app's, tolerance 0.10)."""
    return abs(relative_difference(a, b)) <= tolerance
