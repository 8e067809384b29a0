"""Do two runs of one model give the same answer? The one definition of "the backends agree",
shared by the every-model x every-backend test and `edgecell bench` (which marks a row that
disagrees with the reference backend `wrong`).

An answer is compared as a user reads it, not to the last bit (INT8 kernels differ between
backends by a rounding step): the same top-1 label, the same gate decision, and cell counts
within `COUNT_TOLERANCE` per class.
"""

from __future__ import annotations

from typing import Any

#: the backend every other one is compared with, for the files it reads
REFERENCE_BACKEND = "litert"
#: how many cells of one class two backends may count differently on one image
COUNT_TOLERANCE = 1


def _answer(result: Any) -> dict:
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def disagreement(reference: Any, other: Any, *, count_tolerance: int = COUNT_TOLERANCE) -> str | None:
    """None when `other` gives the answer `reference` gives; else one line saying how it differs.
    Results are task results (or their `to_dict()`): counts, a top-1 label, a gate decision."""
    ref, got = _answer(reference), _answer(other)
    problems = []
    if "counts" in ref or "counts" in got:
        ref_counts, got_counts = ref.get("counts", {}), got.get("counts", {})
        for name in sorted(set(ref_counts) | set(got_counts)):
            a, b = ref_counts.get(name, 0), got_counts.get(name, 0)
            if abs(a - b) > count_tolerance:
                problems.append(f"{name} {b} vs {a}")
    for key in ("label", "useful"):
        if (key in ref or key in got) and ref.get(key) != got.get(key):
            problems.append(f"{key} {got.get(key)!r} vs {ref.get(key)!r}")
    if not problems and not ({"counts", "label", "useful"} & set(ref)):
        return "no comparable answer (counts, label or useful) in the result"
    return "; ".join(problems) or None
