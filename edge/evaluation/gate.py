"""Utility-gate evaluation (issue 7; Khan et al., EUSIPCO 2022): does the gate keep the images the
task model can still use, and does the task model's accuracy rise on what the gate accepts?

    python -m edgecell.benchmarks.gate_eval --gate-dir OUT/export --task-model edge/models/products_int8.tflite \\
        --labels LABELS.csv --split OUT/gate_split.json --data DIR --out OUT/eval

On the held-out ORIGINAL images (`gate_split.json`, written by `edgecell.convert.train_gate`;
none of their degraded copies was trained on), every degraded copy is rebuilt from the labels
CSV (spec + seed) and goes through the device pipeline (`load_model` + `pipeline.predict`):

- gate accuracy on the labelled copies (the paper's Table I metric, 87.5-93.3 %), balanced
  accuracy and confusion, for every gate file given (FP32 and INT8 per backend), plus the
  INT8-vs-FP32 decision agreement per backend;
- the task model's top-1 accuracy on ALL degraded copies (labelled or not) against its accuracy
  on the copies each gate accepts, and the share rejected (the paper's Fig. 2), overall and per
  degradation; how many rejected copies the task model would in fact have got right;
- end-to-end time gated vs ungated (`edgecell.benchmarks.gate_overhead`, added by the script
  `edgecell.benchmarks.gate_eval`: the runtime never imports the benchmarks), each gate with the
  task model of the same format and precision;
- `gate.json`, `gate.md`, `gate_accuracy_vs_jpeg.png` (task accuracy vs JPEG quality with and
  without the gate, share rejected on the second axis). No TensorFlow needed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgecell.errors import EdgecellError

# ----------------------------------------------------------------------------- arithmetic


def gate_metrics(y_true: Sequence[int], p_useful: Sequence[float], threshold: float) -> dict:
    """Accuracy, balanced accuracy and confusion [[TN, FP], [FN, TP]] (1 = useful) of a gate."""
    y = np.asarray(y_true, np.int64)
    pred = (np.asarray(p_useful, np.float64) >= threshold).astype(np.int64)
    cm = np.zeros((2, 2), np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class = [float(cm[c, c] / cm[c].sum()) for c in (0, 1) if cm[c].sum()]
    n = int(cm.sum())
    return {"n": n, "accuracy": float(np.trace(cm) / n) if n else 0.0,
            "balanced_accuracy": float(np.mean(per_class)) if per_class else 0.0,
            "recall_useful": float(cm[1, 1] / cm[1].sum()) if cm[1].sum() else 0.0,
            "recall_not_useful": float(cm[0, 0] / cm[0].sum()) if cm[0].sum() else 0.0,
            "confusion": cm.tolist(), "threshold": float(threshold)}


def task_with_gate(correct: Sequence[bool], accepted: Sequence[bool]) -> dict:
    """Task top-1 on all images vs on the accepted ones, share rejected, and how many rejected
    images the task model would have got right (the gate's cost: needless retakes)."""
    c = np.asarray(correct, bool)
    a = np.asarray(accepted, bool)
    n, na = int(c.size), int(a.sum())
    return {"n": n, "n_accepted": na,
            "accuracy_all": float(c.mean()) if n else 0.0,
            "accuracy_accepted": float(c[a].mean()) if na else None,
            "share_rejected": float(1 - na / n) if n else 0.0,
            "rejected_but_correct": int((c & ~a).sum()),
            "accepted_but_wrong": int((~c & a).sum())}


def by_group(groups: Sequence[str], correct: Sequence[bool], accepted: Sequence[bool]) -> dict[str, dict]:
    g = np.asarray(groups)
    c = np.asarray(correct, bool)
    a = np.asarray(accepted, bool)
    return {str(k): task_with_gate(c[g == k], a[g == k]) for k in dict.fromkeys(g.tolist())}


def agreement(p_a: Sequence[float], p_b: Sequence[float], threshold: float) -> float:
    """Share of images on which two gates take the same decision."""
    a = np.asarray(p_a) >= threshold
    b = np.asarray(p_b) >= threshold
    return float((a == b).mean()) if a.size else 0.0


def jpeg_quality(spec: str) -> int | None:
    """"jpeg:10" -> 10; "none" -> 100 (pristine, plotted at the right end); others -> None."""
    if spec == "none":
        return 100
    if spec.startswith("jpeg:"):
        return int(spec.split(":")[1])
    return None


# ----------------------------------------------------------------------------- running


def _key(model, taken: set) -> str:
    key = f"{model.session.backend}-{model.info.precision}"
    while key in taken:
        key += "+"
    taken.add(key)
    return key


def heldout_rows(labels_csv: str | Path, split_json: str | Path, limit: int = 0) -> list[dict]:
    """The labels CSV's rows of the gate's held-out originals (`gate_split.json`)."""
    from edgecell.calibration.gate_data import read_labels

    held = set(json.loads(Path(split_json).read_text())["test_images"])
    rows = [r for r in read_labels(labels_csv) if r["image"] in held]
    if limit:
        keep = set(sorted(held)[:limit])
        rows = [r for r in rows if r["image"] in keep]
    if not rows:
        raise EdgecellError(f"{labels_csv}: no rows for the held-out images of {split_json}")
    return rows


def evaluate_gate(gate_paths: Sequence[str | Path], task_model: str | Path, labels_csv: str | Path | None,
                  split_json: str | Path | None, data_dir: str | Path, out_dir: str | Path, *,
                  threads: int | None = None, limit: int = 0, rows: Sequence[dict] | None = None) -> dict:
    """Gate and task accuracy through the device pipeline; writes gate.json, gate.md and the JPEG
    curve PNG into `out_dir`. `rows` (image, truth, degradation, seed, label) replace the labels
    CSV + split: e.g. the task model's own held-out images, unlabelled
    (`calibration.gate_data.degraded_rows`). Latency (gated vs ungated) is the benchmarks' part:
    `python -m edgecell.benchmarks.gate_eval` adds it to the report."""
    from edgecell.calibration import degrade
    from edgecell.evaluation.classification import model_bytes, sha256
    from edgecell.images import decode_image
    from edgecell.model import load_model
    from edgecell.pipeline import predict

    data, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = list(rows) if rows is not None else heldout_rows(labels_csv, split_json, limit)
    task = load_model(task_model, threads=threads)
    taken: set = set()
    gates = {}
    for p in gate_paths:
        m = load_model(p, threads=threads)
        gates[_key(m, taken)] = m
    options = {"top_k": len(task.info.labels), "gradcam": False}  # Grad-CAM plays no part in top-1
    p_useful = {k: np.zeros(len(rows), np.float32) for k in gates}
    correct = np.zeros(len(rows), bool)
    t0 = time.perf_counter()
    cache_key, cache_img = None, None
    order = sorted(range(len(rows)), key=lambda i: rows[i]["image"])
    for n, i in enumerate(order):
        r = rows[i]
        if r["image"] != cache_key:
            cache_key, cache_img = r["image"], decode_image(data / r["image"])
        img = degrade.apply(cache_img, r["degradation"], r["seed"])
        res, _ = predict(task, img, **options)
        correct[i] = res.index == r["truth"]
        for k, g in gates.items():
            p_useful[k][i] = predict(g, img)[0].utility
        if (n + 1) % 500 == 0:
            print(f"  {n + 1}/{len(rows)} images ({time.perf_counter() - t0:.0f} s)", flush=True)
    run_s = time.perf_counter() - t0

    specs = [r["degradation"] for r in rows]
    degraded = np.array([s != "none" for s in specs])
    labelled = np.array([r["label"] is not None for r in rows])
    y = np.array([r["label"] if r["label"] is not None else -1 for r in rows])
    report: dict = {"task_model": {"file": Path(task_model).name, "sha256": sha256(task_model),
                                   "backend": task.session.backend, "precision": task.info.precision},
                    "labels_csv": Path(labels_csv).name if labels_csv else None, "test_originals": len({r["image"] for r in rows}),
                    "test_samples": len(rows), "test_labelled": int(labelled.sum()),
                    "test_label_counts": {"useful": int((y == 1).sum()), "not_useful": int((y == 0).sum()),
                                          "left_out": int((~labelled).sum())},
                    "gates": {}, "gate_accuracy": {}, "task_accuracy": {}, "share_rejected": {},
                    "int8_vs_fp32_agreement": {}, "per_degradation": {}, "jpeg_curve": {}, "latency": {},
                    "eval_s": round(run_s, 1)}
    for k, g in gates.items():
        thr = float(g.info.settings.get("threshold", 0.5))
        accepted = p_useful[k] >= thr
        report["gates"][k] = {"file": g.path.name, "sha256": sha256(g.path), "bytes": model_bytes(g.path),
                              "threshold": thr}
        if labelled.any():  # none when the rows are a task split's unlabelled copies
            report["gate_accuracy"][k] = gate_metrics(y[labelled], p_useful[k][labelled], thr)
        tw = task_with_gate(correct[degraded], accepted[degraded])
        report["task_accuracy"][k] = tw
        report["share_rejected"][k] = tw["share_rejected"]
        report["task_accuracy"][k]["pristine"] = task_with_gate(correct[~degraded], accepted[~degraded])
        report["per_degradation"][k] = by_group(specs, correct, accepted)
        curve = {}
        for spec, v in report["per_degradation"][k].items():
            q = jpeg_quality(spec)
            if q is not None:
                curve[q] = v
        report["jpeg_curve"][k] = {str(q): curve[q] for q in sorted(curve)}
    for k in gates:
        if k.endswith("-int8"):
            twin = k[: -len("-int8")] + "-fp32"
            if twin in gates:
                thr = report["gates"][k]["threshold"]
                report["int8_vs_fp32_agreement"][k.split("-")[0]] = agreement(p_useful[k], p_useful[twin], thr)
    write_report(report, out)
    return report


def write_report(report: dict, out: Path, latency_table: Callable[[list], str] | None = None) -> None:
    """gate.json, gate_accuracy_vs_jpeg.png and gate.md into `out`."""
    (out / "gate.json").write_text(json.dumps(report, indent=2) + "\n")
    png = plot_accuracy_vs_jpeg(report, out / "gate_accuracy_vs_jpeg.png")
    (out / "gate.md").write_text(markdown_report(report, png, latency_table))


# ----------------------------------------------------------------------------- report


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def markdown_report(report: dict, png: str | None = None, latency_table: Callable[[list], str] | None = None) -> str:
    """The report as Markdown; `latency_table` renders the latency section's rows (the gate_overhead
    benchmark's table) when the report has one."""
    lines = [f"# Utility gate evaluation: guarding {report['task_model']['file']}", "",
             f"Held-out originals: {report['test_originals']} (all their degraded copies: {report['test_samples']}; "
             f"labelled {report['test_labelled']}: {report['test_label_counts']})", "",
             "## Gate accuracy on labelled held-out copies (paper, Table I: 87.5-93.3 %)", "",
             "| gate | file | threshold | accuracy | balanced acc. | recall useful | recall not useful | n |",
             "|---|---|---|---|---|---|---|---|"]
    for k, g in report["gate_accuracy"].items():
        lines.append(f"| {k} | {report['gates'][k]['file']} | {g['threshold']:.2f} | {_pct(g['accuracy'])} | "
                     f"{_pct(g['balanced_accuracy'])} | {_pct(g['recall_useful'])} | {_pct(g['recall_not_useful'])} | {g['n']} |")
    if report["int8_vs_fp32_agreement"]:
        lines += ["", "INT8 vs FP32 decision agreement: " + ", ".join(
            f"{b} {_pct(v)}" for b, v in report["int8_vs_fp32_agreement"].items())]
    lines += ["", "## Task accuracy on ALL degraded held-out copies vs on those the gate accepts (paper, Fig. 2)", "",
              "| gate | task acc., all | task acc., accepted | share rejected | rejected but task right | accepted but task wrong |",
              "|---|---|---|---|---|---|"]
    for k, t in report["task_accuracy"].items():
        lines.append(f"| {k} | {_pct(t['accuracy_all'])} (n={t['n']}) | {_pct(t['accuracy_accepted'])} "
                     f"(n={t['n_accepted']}) | {_pct(t['share_rejected'])} | {t['rejected_but_correct']} | "
                     f"{t['accepted_but_wrong']} |")
    first = next((k for k in report["per_degradation"] if k.startswith("litert-int8")),
                 next(iter(report["per_degradation"]), None))
    if first:
        lines += ["", f"## Per degradation ({first})", "",
                  "| degradation | n | task acc., all | task acc., accepted | share rejected |", "|---|---|---|---|---|"]
        for spec, t in report["per_degradation"][first].items():
            lines.append(f"| {spec} | {t['n']} | {_pct(t['accuracy_all'])} | {_pct(t['accuracy_accepted'])} | "
                         f"{_pct(t['share_rejected'])} |")
    lat = report.get("latency") or {}
    if lat and "gates" not in lat and latency_table is not None:  # older reports: skipped
        lines += ["", "## End-to-end time, gated vs ungated (decode + pipeline; `edgecell.benchmarks.gate_overhead`)",
                  "", latency_table(list(lat.values())).rstrip()]
    if png:
        lines += ["", f"![task accuracy vs JPEG quality]({png})"]
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_jpeg(report: dict, path: Path, key: str | None = None) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    curves = report["jpeg_curve"]
    if not curves:
        return None
    key = key or next((k for k in curves if k.startswith("litert-int8")), next(iter(curves)))
    curve = curves[key]
    qs = [int(q) for q in curve]
    labels = [("orig." if q == 100 else str(q)) for q in qs]
    xs = np.arange(len(qs))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(xs, [100 * curve[str(q)]["accuracy_all"] for q in qs], "o-", color="tab:red", label="without gate (all images)")
    acc = [curve[str(q)]["accuracy_accepted"] for q in qs]
    ax.plot(xs, [np.nan if a is None else 100 * a for a in acc], "s-", color="tab:green",
            label=f"with gate ({key}): accepted images")
    ax.set_xticks(xs, labels)
    ax.set_xlabel("JPEG quality")
    ax.set_ylabel("task top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax2 = ax.twinx()
    ax2.bar(xs, [100 * curve[str(q)]["share_rejected"] for q in qs], width=0.5, alpha=0.2, color="grey",
            label="share rejected by gate")
    ax2.set_ylabel("rejected (%)")
    ax2.set_ylim(0, 100)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
    ax.set_title(f"{report['task_model']['file']}: accuracy vs JPEG quality, held-out images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path).name
