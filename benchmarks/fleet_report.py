"""The report of `edgecell fleet bench`: every device's bench rows in one table (device x model x
backend x precision x threads), each device's description (board, CPU, ISA, temperature,
throttling), the papers' claims beside them, as JSON, CSV, Markdown and a PNG comparing devices."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from edgecell.benchmarks.report import CSV_FIELDS, add_plot, device_line, flat_row

FLEET_FIELDS = ["device", *CSV_FIELDS]


def fleet_result(benches: list[Any]) -> dict[str, Any]:
    """DeviceBench list -> one document: devices (info or error), rows (each with its `fleet_device`;
    a row's own `device` is the backend's, e.g. OpenVINO CPU), claims."""
    devices, rows, claims = [], [], {}
    for b in benches:
        info = (b.result or {}).get("device") or {}
        devices.append({"device": b.device, "ok": b.ok, "error": b.error, "info": info, "line": device_line(info)
                        if info else None, "counts": (b.result or {}).get("counts")})
        rows += [{**r, "fleet_device": b.device} for r in (b.result or {}).get("rows", [])]
        claims = claims or (b.result or {}).get("claims") or {}
    return {"devices": devices, "rows": rows, "claims": claims}


def _three(v: Any) -> str:
    """Three significant figures, '-' for none."""
    return "-" if v is None else f"{v:.3g}"


def markdown(result: dict[str, Any]) -> str:
    lines = ["# edgecell fleet bench", "", "| device | description |", "|---|---|"]
    lines += [f"| {d['device']} | {d['line'] if d['ok'] else 'NOT MEASURED: ' + str(d['error'])} |"
              for d in result["devices"]]
    lines += ["", "| device | model | format | backend | precision | threads | status | median ms | p90 ms | fps |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        f = flat_row(r)
        lines.append(f"| {r['fleet_device']} | {f['name']} | {f['format']} | {f['backend']} | {f['precision']} | "
                     f"{f['threads']} | {f['status']} | {_three(f['median_ms'])} | {_three(f['p90_ms'])} | "
                     f"{'-' if f['sync_fps'] is None else round(f['sync_fps'], 1)} |")
    if result.get("claims"):
        lines += ["", "## The papers' claims (as in `edgecell bench`)", "", "```",
                  json.dumps(result["claims"], indent=1, default=str)[:4000], "```"]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Median latency per row (model, backend, precision, threads), one bar per device."""
    ok = [r for r in result["rows"] if r.get("status") == "ok" and (r.get("latency_ms") or {}).get("median")]
    if not ok:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = list(dict.fromkeys(r["fleet_device"] for r in ok))
    keys = list(dict.fromkeys((r["name"], r["backend"], r["precision"], r["threads"]) for r in ok))
    median = {(r["fleet_device"], (r["name"], r["backend"], r["precision"], r["threads"])): r["latency_ms"]["median"]
              for r in ok}
    width = 0.8 / len(devices)
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.3 * len(keys) * len(devices) + 1.2)))
    for i, dev in enumerate(devices):
        ax.barh([k + i * width for k in range(len(keys))], [median.get((dev, key), 0) for key in keys],
                height=width, label=dev)
    ax.set_yticks([k + 0.4 - width / 2 for k in range(len(keys))],
                  [f"{n} {b} {p} t{t}" for n, b, p, t in keys], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("median latency per call, ms (shorter is faster)")
    ax.set_title("edgecell fleet bench", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def write(result: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """fleet-bench.json, .csv, .md and .png in `out_dir`; returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "fleet-bench.json", "csv": out_dir / "fleet-bench.csv", "md": out_dir / "fleet-bench.md"}
    files["json"].write_text(json.dumps(result, indent=2, default=str))
    with open(files["csv"], "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=FLEET_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in result["rows"]:
            w.writerow({"device": r["fleet_device"], **flat_row(r)})
    files["md"].write_text(markdown(result))
    written = {k: str(v) for k, v in files.items()}
    add_plot(written, plot, result, out_dir / "fleet-bench.png")
    return written
