"""Classification metrics through the device pipeline (product classifier, X-ray classifier).

`evaluate_classifier(model_paths, data_dir, out_dir, split="test")` runs every model file with
the same code a device runs (`load_model` + `pipeline.predict`)
on a class-folder split (`DATA/<split>/<class>/<image>`) and writes, side by side for FP32 and
INT8 per backend:

- `classification.json`: everything (per-class precision/recall/F1/support, confusion matrices,
  top-1, macro and weighted averages, INT8-vs-FP32 top-1 agreement, model sizes, ms per image);
- `classification.md`: the summary table and per-class tables (the layout of the paper's
  Tables I-V);
- `confusion_<key>.png` per model and `confusion_matrices.png` with all of them (matplotlib,
  optional: skipped with a note when it is not installed).

Folder names map to the model's labels with `folder_to_label`, else the sidecar's
`settings["dataset_folders"]` (folder names in label order), else folder name == label.
No TensorFlow needed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecell.calibration.folders import folder_label_map  # noqa: F401 (part of this module's API)
from edgecell.errors import EdgecellError
from edgecell.evaluation.flags import FlagTally, flags_markdown

# ----------------------------------------------------------------------------- metrics


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (scikit-learn's zero_division=0)."""
    num = num.astype(np.float64)
    den = den.astype(np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Per-class precision, recall, F1, support; top-1 accuracy; macro and weighted averages.

    Macro averages are over the classes that have test samples (a class absent from the split
    would otherwise count as 0 recall); zero divisions count as 0, as scikit-learn does."""
    n = len(labels)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = support > 0
    total = int(support.sum())
    per_class = {label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                         "support": int(support[i]), "predicted": int(predicted[i])}
                 for i, label in enumerate(labels)}

    def avg(v: np.ndarray, weights: np.ndarray | None = None) -> float:
        if not present.any():
            return 0.0
        return float(np.average(v[present], weights=None if weights is None else weights[present]))

    return {
        "n": total,
        "top1": float(tp.sum() / total) if total else 0.0,
        "macro": {"precision": avg(precision), "recall": avg(recall), "f1": avg(f1)},
        "weighted": {"precision": avg(precision, support), "recall": avg(recall, support), "f1": avg(f1, support)},
        "per_class": per_class,
        "labels": list(labels),
        "confusion": cm.tolist(),
    }


# ----------------------------------------------------------------------------- running models


def sha256(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_bytes(path: Path) -> int:
    """File size; an OpenVINO IR counts its .xml and .bin."""
    size = path.stat().st_size
    if path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file():
        size += path.with_suffix(".bin").stat().st_size
    return size


def classify_images(model, images: Sequence[Path], *, top_k: int = 3,
                    flags: FlagTally | None = None) -> tuple[np.ndarray, float]:
    """Run a loaded model on image files through the device pipeline (`pipeline.predict`).
    Returns (predicted class indices (N,), mean seconds per image of the model call alone: the
    report's "ms/img (run only)" column); `flags` counts the results' unfamiliar/uncertain flags."""
    from edgecell.images import decode_image
    from edgecell.pipeline import predict

    preds, run_s = [], 0.0
    for path in images:
        # gradcam off: an X-ray model's class comes from its scores; the heatmap costs time only
        result, timings = predict(model, decode_image(path), top_k=top_k, gradcam=False)
        run_s += timings.infer / 1e3
        preds.append(result.index)
        if flags is not None:
            flags.add(result)
    return np.asarray(preds, np.int64), run_s / max(1, len(images))


def result_key(backend: str, precision: str, path: Path, taken: set[str]) -> str:
    key = f"{backend}-{precision}"
    if key in taken:
        key = f"{key}-{path.stem}"
    return key


def evaluate_classifier(model_paths: Sequence[str | os.PathLike], data_dir: str | os.PathLike,
                        out_dir: str | os.PathLike, *, split: str = "test", backend: str = "auto",
                        folder_to_label: dict[str, str] | None = None, threads: int | None = None,
                        title: str = "") -> dict:
    """Evaluate each model on `data_dir/<split>` (joined splits with "+"); write JSON, Markdown
    and confusion-matrix PNGs to `out_dir`; return the JSON's content.

    `backend="auto"` runs each file on its own format's backend (.tflite LiteRT, .xml OpenVINO,
    .onnx ONNX Runtime), so a list of FP32 and INT8 files in three formats gives the six
    columns of the side-by-side table. The FP32/INT8 pairing is by format (same backend)."""
    from edgecell.backends import resolve_backend
    from edgecell.calibration.folders import list_split
    from edgecell.model import load_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not model_paths:
        raise EdgecellError("no model files to evaluate")
    results: dict[str, dict] = {}
    labels_ref: list[str] | None = None
    y_true = np.zeros(0, np.int64)
    t_all = time.perf_counter()
    for raw in model_paths:
        path = Path(raw)
        name = resolve_backend(path, backend)
        model = load_model(path, name, threads=threads)
        info = model.info
        labels = list(info.labels)  # (sidecar, else embedded metadata) decide the class order of the split
        if not labels:
            raise EdgecellError(f"{path}: model has no labels in its metadata; cannot match class folders")
        if labels_ref is None:
            labels_ref = labels
        elif labels != labels_ref:
            raise EdgecellError(f"{path}: labels {labels} differ from the first model's {labels_ref}")
        fmap = folder_label_map(labels, info.settings, folder_to_label)
        folders = sorted(fmap, key=lambda f: fmap[f])
        samples = list_split(data_dir, split, folders)
        if not samples:
            raise EdgecellError(f"{Path(data_dir) / split}: no images")
        images = [p for p, _ in samples]
        y_true = np.asarray([fmap[folders[i]] for _, i in samples], np.int64)
        flags = FlagTally()
        preds, sec = classify_images(model, images, flags=flags)
        metrics = classification_metrics(y_true, preds, labels)
        key = result_key(name, info.precision, path, set(results))
        results[key] = {
            "path": str(path), "file": path.name, "backend": name, "precision": info.precision,
            "bytes": model_bytes(path), "sha256": sha256(path), "ms_per_image_run": round(sec * 1000, 2),
            "input_size": list(info.input_size), **metrics,
            "predictions": preds.tolist(), "flags": flags.as_dict(),
        }
    # INT8 vs FP32 of the same backend: top-1 change and prediction agreement
    for key, r in results.items():
        if r["precision"] != "int8":
            continue
        ref = next((k for k, v in results.items() if v["backend"] == r["backend"] and v["precision"] == "fp32"), None)
        if ref is None:
            continue
        a, b = np.asarray(results[ref]["predictions"]), np.asarray(r["predictions"])
        r["vs_fp32"] = {"fp32": ref, "top1_delta_points": round(100 * (r["top1"] - results[ref]["top1"]), 2),
                        "macro_f1_delta_points": round(100 * (r["macro"]["f1"] - results[ref]["macro"]["f1"]), 2),
                        "agreement": float((a == b).mean())}
    report = {
        "title": title or f"classification on {Path(data_dir).name}/{split}",
        "dataset": str(Path(data_dir).name), "split": split, "n": len(y_true) if results else 0,
        "labels": labels_ref, "support": {l: int(v) for l, v in zip(labels_ref, np.bincount(y_true, minlength=len(labels_ref)))},
        "seconds": round(time.perf_counter() - t_all, 1),
        "models": results,
    }
    (out_dir / "classification.json").write_text(json.dumps(report, indent=1) + "\n")
    plots = write_confusion_pngs(report, out_dir)
    (out_dir / "classification.md").write_text(markdown_report(report, plots))
    return report


# ----------------------------------------------------------------------------- reports


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def summary_table(report: dict) -> list[str]:
    rows = ["| model | backend | precision | size | top-1 % | macro P % | macro R % | macro F1 % | INT8-FP32 top-1 (points) | agreement with FP32 | ms/img (run only) |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, r in report["models"].items():
        vs = r.get("vs_fp32")
        delta = f"{vs['top1_delta_points']:+.1f}" if vs else ""
        agree = f"{100 * vs['agreement']:.1f} %" if vs else ""
        rows.append(f"| {r['file']} | {r['backend']} | {r['precision']} | {r['bytes'] / 1e6:.2f} MB | {_pct(r['top1'])} | "
                    f"{_pct(r['macro']['precision'])} | {_pct(r['macro']['recall'])} | {_pct(r['macro']['f1'])} | "
                    f"{delta} | {agree} | {r['ms_per_image_run']:.1f} |")
    return rows


def per_class_table(report: dict, key: str) -> list[str]:
    r = report["models"][key]
    rows = ["| category | precision % | recall % | F1 % | support |", "|---|---:|---:|---:|---:|"]
    for label in report["labels"]:
        c = r["per_class"][label]
        rows.append(f"| {label} | {_pct(c['precision'])} | {_pct(c['recall'])} | {_pct(c['f1'])} | {c['support']} |")
    m = r["macro"]
    rows.append(f"| **macro average** | **{_pct(m['precision'])}** | **{_pct(m['recall'])}** | **{_pct(m['f1'])}** | {r['n']} |")
    return rows


def f1_side_by_side(report: dict) -> list[str]:
    keys = list(report["models"])
    rows = ["| category | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for label in report["labels"]:
        rows.append(f"| {label} | " + " | ".join(_pct(report["models"][k]["per_class"][label]["f1"]) for k in keys) + " |")
    rows.append("| **top-1** | " + " | ".join(f"**{_pct(report['models'][k]['top1'])}**" for k in keys) + " |")
    return rows


def markdown_report(report: dict, plots: dict[str, str] | None = None) -> str:
    lines = [f"# {report['title']}", "",
             f"{report['n']} images, split `{report['split']}` of `{report['dataset']}`; support per class: "
             + ", ".join(f"{k} {v}" for k, v in report["support"].items()) + ".",
             "Device pipeline: `load_model` + `pipeline.predict` (the model's own task), batch 1.", "",
             "## Summary", "", *summary_table(report), "",
             *flags_markdown(report["models"]),
             "## Per-class F1 %, side by side", "", *f1_side_by_side(report), ""]
    for key in report["models"]:
        lines += [f"## {key}: per-class precision, recall, F1 ({report['models'][key]['file']})", "",
                  *per_class_table(report, key), ""]
        if plots and key in plots:
            lines += [f"![confusion matrix {key}]({plots[key]})", ""]
    if plots is not None and not plots:
        lines += ["(confusion-matrix PNGs skipped: matplotlib is not installed; the matrices are in the JSON)", ""]
    return "\n".join(lines)


def plot_confusion(ax, cm: np.ndarray, labels: Sequence[str], title: str) -> None:
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title(title, fontsize=9)


def write_confusion_pngs(report: dict, out_dir: Path) -> dict[str, str]:
    """One PNG per model plus a grid of all; {} when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    labels = report["labels"]
    out: dict[str, str] = {}
    for key, r in report["models"].items():
        fig, ax = plt.subplots(figsize=(5.2, 4.8))
        plot_confusion(ax, np.asarray(r["confusion"]), labels, f"{key}  top-1 {_pct(r['top1'])} %")
        fig.tight_layout()
        name = f"confusion_{key}.png"
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        out[key] = name
    keys = list(report["models"])
    cols = min(len(keys), 2 if len(keys) in (2, 4) else 3)
    nrows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        r = report["models"][key]
        plot_confusion(ax, np.asarray(r["confusion"]), labels, f"{key}  top-1 {_pct(r['top1'])} %")
    fig.suptitle(report["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "confusion_matrices.png", dpi=100)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """python -m edgecell.evaluation.classification MODEL... --data DATASET_DIR --out DIR [--split test]"""
    import argparse

    p = argparse.ArgumentParser(prog="python -m edgecell.evaluation.classification",
                                description="Per-class precision/recall/F1, top-1 and confusion matrices of "
                                            "classifier files on a class-folder split, through the device pipeline.")
    p.add_argument("models", nargs="+", help=".tflite / .xml / .onnx files (with their sidecar JSON)")
    p.add_argument("--data", required=True, help="dataset folder holding <split>/<class>/<image>")
    p.add_argument("--split", default="test", help="split folder, or several joined with +")
    p.add_argument("--out", required=True)
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    try:
        report = evaluate_classifier(args.models, args.data, args.out, split=args.split, backend=args.backend,
                                     threads=args.threads)
    except EdgecellError as exc:
        print(f"error: {exc}")
        return 2
    print("\n".join(summary_table(report)))
    print(f"written: {Path(args.out) / 'classification.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
