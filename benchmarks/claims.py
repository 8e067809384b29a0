"""The papers' timing claims (`claims.json`): load, validate, and match to measured rows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edgecell.resources import shipped_path, source_checkout

CLAIMS_FILE = shipped_path("claims.json", package="edgecell.benchmarks")
#: where the plain-text papers live in the development checkout (not shipped in the wheel)
SEEDS_DIR = ((source_checkout() or Path.cwd()).parent / "shared" / "seeds").absolute()

REQUIRED = ("id", "model", "matches", "value_ms", "bound", "what", "measure", "hardware", "source",
            "citation", "quote")
WHAT = ("inference", "per image", "detection")
MEASURE = ("latency", "pipeline")
BOUND = ("=", "<")


class ClaimsError(ValueError):
    pass


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def validate(data: dict[str, Any], seeds_dir: Path | None = None) -> list[dict[str, Any]]:
    """The claims list, checked: required fields, known values, positive times, and (when the
    papers are at hand in `seeds_dir`) each quote found verbatim in its source paper."""
    claims = data.get("claims")
    if not isinstance(claims, list) or not claims:
        raise ClaimsError("claims.json: 'claims' must be a non-empty list")
    seen = set()
    for i, c in enumerate(claims):
        where = f"claims.json claim {i} ({c.get('id', '?')})"
        missing = [k for k in REQUIRED if c.get(k) in (None, "") and k != "matches"]
        if "matches" not in c:
            missing.append("matches")
        if missing:
            raise ClaimsError(f"{where}: missing {', '.join(missing)}")
        if c["id"] in seen:
            raise ClaimsError(f"{where}: duplicate id")
        seen.add(c["id"])
        if not isinstance(c["value_ms"], (int, float)) or c["value_ms"] <= 0:
            raise ClaimsError(f"{where}: value_ms must be a positive number")
        for key, allowed in (("what", WHAT), ("measure", MEASURE), ("bound", BOUND)):
            if c[key] not in allowed:
                raise ClaimsError(f"{where}: {key} {c[key]!r} not one of {', '.join(allowed)}")
        if not isinstance(c["matches"], list):
            raise ClaimsError(f"{where}: matches must be a list of model family names")
        if seeds_dir is not None:
            paper = Path(seeds_dir) / c["source"]
            if not paper.is_file():
                raise ClaimsError(f"{where}: source paper {c['source']} not found in {seeds_dir}")
            text = _norm(paper.read_text(encoding="utf-8", errors="replace"))
            if _norm(c["quote"]) not in text:
                raise ClaimsError(f"{where}: quote not found verbatim in {c['source']}")
            if c.get("table") and _norm(c["table"]) not in text:
                raise ClaimsError(f"{where}: table row not found in {c['source']}")
    return claims


def load_claims(path: Path | None = None, *, check_sources: bool | None = None) -> list[dict[str, Any]]:
    """Claims from `path` (default: the shipped claims.json). Quotes are checked against the papers
    when `check_sources` is true, or when None and the papers are present."""
    path = Path(path) if path else CLAIMS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ClaimsError(f"{path}: cannot read claims ({exc})") from None
    seeds = SEEDS_DIR if (check_sources or (check_sources is None and SEEDS_DIR.is_dir())) else None
    return validate(data, seeds)


def compare(claims: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each claim beside the best matching configuration measured on this device.

    Rows are first pooled per configuration (model file, backend, threads) over repeats: the value
    of a configuration is the median of its rows' medians, so one lucky row does not set the
    figure. A 'latency' claim takes the row medians, a 'pipeline' claim the pipeline totals. The
    claim gets the best (lowest) configuration, and beside it the best FP32 one (the papers ran
    FP32 models). ratio = measured / claimed (< 1: faster than the paper; for a '<' bound,
    meets = ratio < 1).
    """
    out = []
    for c in claims:
        entry = {k: c.get(k) for k in ("id", "model", "value_ms", "bound", "what", "measure", "hardware",
                                       "accelerator", "source", "citation", "quote")}
        configs: dict[tuple, list] = {}
        for r in rows:
            if r.get("status") != "ok" or not c["matches"]:
                continue
            fam = r.get("family") or r.get("name", "")
            if not any(fam == m or fam.startswith(m + "_") for m in c["matches"]):
                continue
            if c["measure"] == "pipeline":
                value = ((r.get("pipeline_ms") or {}).get("total") or {}).get("median")
            else:
                value = (r.get("latency_ms") or {}).get("median")
            if value is None:
                continue
            key = (r.get("name"), r.get("format"), r.get("backend"), r.get("threads"), r.get("precision"))
            configs.setdefault(key, []).append(value)
        if not configs:
            entry.update(measured_ms=None, ratio=None, meets=None,
                         note="not measured: no edgecell model of this architecture in this run"
                         if not c["matches"] else f"not measured: no ok row of {', '.join(c['matches'])} in this run")
            out.append(entry)
            continue
        pooled = {k: sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2
                  for k, v in configs.items()}
        best = min(pooled, key=pooled.get)
        value = pooled[best]
        ratio = value / c["value_ms"]
        entry.update(measured_ms=value, ratio=ratio, meets=(ratio < 1.0) if c["bound"] == "<" else None,
                     repeats=len(configs[best]),
                     row=f"{best[0]}.{best[1]} {best[2]} t{best[3]}")
        fp32 = {k: v for k, v in pooled.items() if k[4] == "fp32"}
        if fp32:
            bf = min(fp32, key=fp32.get)
            entry.update(fp32_ms=fp32[bf], fp32_ratio=fp32[bf] / c["value_ms"], fp32_row=f"{bf[0]}.{bf[1]} {bf[2]} t{bf[3]}")
        out.append(entry)
    return out
