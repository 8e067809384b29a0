"""Counting red cells as the slide holds them: the cells counter against complete labels, a second
lab, and another lab's optics (issue 18).

- `against_both_truths`: one set of detections on the 60 Testing smears scored against TXL-PBC's
  complete labels (every cell boxed: the headline) and against the CBC labels (the paper's Table 2,
  which box only part of the red cells), side by side: counting accuracy on totals, mean absolute
  count error per image, mAP@0.5.
- `chula_counts`: red-cell counts on Chula RBC-12's held-out images against their centre points,
  on all of them and on those whose labels cover the field (`label_coverage`; Chula labels the
  cells of interest for morphology, many fields have 4-8 points for ~60 cells).
- `lab_shift_frames` / `lab_shift_sweep`: the Testing smears under another microscope:
  magnification 0.5x-1.6x (the same 640 x 480 frame at another magnification: zoomed in = a
  centre crop of the upscaled smear, zoomed out = the downscaled smears tiled side by side),
  colour / stain shifts, blur, JPEG, noise; ground truth = the complete labels moved with the
  pixels, an edge-cut cell counted while >= 20 % of its box is inside the frame (as TXL boxes
  edge-cut cells down to ~1/4 of a cell).

Detections come from `detect(image) -> (boxes, classes, scores)` at a low floor (the device
pipeline: `edgecell.evaluation.detection.run_model` or `detector`); counts apply the model's class
thresholds on top. No TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from edgecell.evaluation.detection import count_matrix, counting_accuracy, counting_metrics, map50

Detections = tuple[np.ndarray, np.ndarray, np.ndarray]
#: an edge-cut cell is counted while at least this share of its box lies inside the frame
MIN_VISIBLE = 0.2
#: grey pixels between the tiled smears of a zoomed-out frame (letterbox grey)
GUTTER = 8


def against_both_truths(predictions: list[Detections], complete: list, cbc: list, thresholds: np.ndarray,
                        labels) -> dict:
    """Counts and mAP of one model's detections (one per Testing smear, same order as both
    annotation lists, matched by stem) against the complete and the CBC labels."""
    if [a.stem for a in complete] != [a.stem for a in cbc]:
        raise ValueError("complete and CBC annotations must list the same images in the same order")
    est = count_matrix(predictions, thresholds, len(labels))
    out = {}
    for name, anns in (("complete", complete), ("cbc", cbc)):
        gt = np.array([[int((a.labels == k).sum()) for k in range(len(labels))] for a in anns])
        m = map50(predictions, [(a.boxes, a.labels) for a in anns], labels)
        out[name] = {"counting": counting_metrics(est, gt, labels), "map50": {"per_class": m["ap"], "mean": m["map"]}}
    return out


def found_points(boxes: np.ndarray, points: np.ndarray, radius: float) -> int:
    """Labelled centre points with a detection centre within `radius` pixels, one detection per
    point (greedy, nearest pairs first): how many labelled cells the counter found. Unaffected
    by cells the labels leave out."""
    if len(boxes) == 0 or len(points) == 0:
        return 0
    centres = (np.asarray(boxes, np.float32)[:, :2] + np.asarray(boxes, np.float32)[:, 2:]) / 2
    d = np.linalg.norm(np.asarray(points, np.float32)[:, None] - centres[None], axis=2)
    used_p, used_d, n = set(), set(), 0
    for k in np.argsort(d, axis=None):
        i, j = divmod(int(k), d.shape[1])
        if d[i, j] > radius:
            break
        if i not in used_p and j not in used_d:
            used_p.add(i), used_d.add(j)
            n += 1
    return n


def chula_counts(predictions: list[Detections], points: list, coverage: list[float], rbc_threshold: float,
                 complete_coverage: float, rbc_index: int = 0, radius: float = 22.5) -> dict:
    """Red-cell counts against Chula centre points, on all held-out images and on the fully and
    sparsely labelled ones: counting accuracy on totals, MAE per image, and the labelled cells
    found (a detection centre within `radius`, half a typical Chula cell)."""
    est = np.array([int(((c == rbc_index) & (s >= rbc_threshold)).sum()) for _, c, s in predictions])
    gt = np.array([len(p.points) for p in points])
    found = np.array([found_points(b[(c == rbc_index) & (s >= rbc_threshold)], p.points, radius)
                      for (b, c, s), p in zip(predictions, points)])
    full = np.asarray(coverage) >= complete_coverage

    def summary(mask):
        if not mask.any():
            return {"images": 0}
        return {"images": int(mask.sum()), "estimated": int(est[mask].sum()), "ground_truth": int(gt[mask].sum()),
                "accuracy": counting_accuracy(est[mask].sum(), gt[mask].sum()),
                "mae_per_image": float(np.mean(np.abs(est[mask] - gt[mask]))),
                "found": int(found[mask].sum()), "found_share": float(found[mask].sum() / max(gt[mask].sum(), 1))}

    return {"all": summary(np.ones(len(gt), bool)), "fully_labelled": summary(full),
            "sparsely_labelled": summary(~full), "complete_coverage": complete_coverage,
            "per_image": [{"stem": p.stem, "estimated": int(e), "labelled": int(g), "coverage": round(float(c), 3)}
                          for p, e, g, c in zip(points, est, gt, coverage)]}


# ----------------------------------------------------------------------------- lab shift
@dataclass(frozen=True)
class Condition:
    """One imaging condition of the sweep: magnification, then colour, blur, noise, JPEG."""

    name: str
    scale: float = 1.0
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per RGB channel
    hue: float = 0.0  # OpenCV hue units (0..180)
    saturation: float = 1.0
    blur: float = 0.0  # Gaussian sigma, pixels of the 640 x 480 frame
    noise: float = 0.0  # grey levels
    jpeg: int = 0  # quality, 0 = none


#: the sweep reported in the model card (magnifications as the issue asks, 0.5x-1.6x)
CONDITIONS = (
    Condition("original"),
    *(Condition(f"scale {s:g}x", scale=s) for s in (0.5, 0.6, 0.7, 0.8, 0.9, 1.25, 1.6)),
    Condition("stain: warm (R x1.15, B x0.85)", gains=(1.15, 1.0, 0.85)),
    Condition("stain: cool (R x0.85, B x1.15)", gains=(0.85, 1.0, 1.15)),
    Condition("stain: hue +10, saturation x0.6", hue=10, saturation=0.6),
    Condition("stain: saturation x1.5", saturation=1.5),
    Condition("blur sigma 1.5 px", blur=1.5),
    Condition("blur sigma 3 px", blur=3.0),
    Condition("noise sigma 10", noise=10),
    Condition("JPEG quality 30", jpeg=30),
    Condition("JPEG quality 10", jpeg=10),
    Condition("another lab: 0.6x + cool stain + blur 1 + JPEG 40", scale=0.6, gains=(0.85, 1.0, 1.15), blur=1.0, jpeg=40),
    Condition("another lab: 1.6x + warm stain + blur 2 + JPEG 40", scale=1.6, gains=(1.15, 1.0, 0.85), blur=2.0, jpeg=40),
)


def _keep_visible(boxes: np.ndarray, labels: np.ndarray, w: int, h: int, x0: float = 0, y0: float = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Boxes moved by (-x0, -y0), clipped to w x h; kept while >= MIN_VISIBLE of their area is inside."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4) - np.array([x0, y0, x0, y0], np.float32)
    area0 = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6)
    c = b.copy()
    c[:, [0, 2]] = np.clip(c[:, [0, 2]], 0, w)
    c[:, [1, 3]] = np.clip(c[:, [1, 3]], 0, h)
    area = np.clip(c[:, 2] - c[:, 0], 0, None) * np.clip(c[:, 3] - c[:, 1], 0, None)
    keep = area >= MIN_VISIBLE * area0
    return c[keep], np.asarray(labels)[keep]


def magnify(images: list[np.ndarray], annotations: list, index: int, scale: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame `index` at `scale` x the magnification, same frame size. Zoomed in: the centre crop of
    the upscaled smear. Zoomed out: the downscaled smears index, index+1, ... tiled row by row
    (wrapping round the list) with GUTTER grey pixels between them (each smear's own frame edges
    stay edges: its edge-cut cells are not glued to another smear's), and the frame cut from the
    top-left of that mosaic."""
    h, w = images[index].shape[:2]
    if scale >= 1:
        big = cv2.resize(images[index], None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        x0, y0 = (big.shape[1] - w) // 2, (big.shape[0] - h) // 2
        b, lab = _keep_visible(annotations[index].boxes * scale, annotations[index].labels, w, h, x0, y0)
        return np.ascontiguousarray(big[y0 : y0 + h, x0 : x0 + w]), b, lab
    tw, th = int(round(w * scale)), int(round(h * scale))
    nx, ny = -(-w // (tw + GUTTER)), -(-h // (th + GUTTER))
    canvas = np.full((ny * (th + GUTTER), nx * (tw + GUTTER), 3), 114, np.uint8)
    boxes, labels = [], []
    for k in range(nx * ny):
        j = (index + k) % len(images)
        gx, gy = (k % nx) * (tw + GUTTER), (k // nx) * (th + GUTTER)
        canvas[gy : gy + th, gx : gx + tw] = cv2.resize(images[j], (tw, th), interpolation=cv2.INTER_AREA)
        boxes.append(annotations[j].boxes * np.float32(scale) + np.array([gx, gy, gx, gy], np.float32))
        labels.append(annotations[j].labels)
    b, lab = _keep_visible(np.concatenate(boxes), np.concatenate(labels), w, h)
    return np.ascontiguousarray(canvas[:h, :w]), b, lab


def degrade(image: np.ndarray, cond: Condition, seed: int = 0) -> np.ndarray:
    """Colour, blur, noise and JPEG of `cond` on an RGB uint8 image (deterministic)."""
    out = image
    if cond.gains != (1.0, 1.0, 1.0):
        out = np.clip(out.astype(np.float32) * np.asarray(cond.gains, np.float32), 0, 255).astype(np.uint8)
    if cond.hue or cond.saturation != 1.0:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + cond.hue) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * cond.saturation, 0, 255)
        out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    if cond.blur:
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=cond.blur, sigmaY=cond.blur)
    if cond.noise:
        rng = np.random.default_rng(seed)
        out = np.clip(out + rng.normal(0, cond.noise, out.shape), 0, 255).astype(np.uint8)
    if cond.jpeg:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, cond.jpeg])
        out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(out)


def lab_shift_sweep(detect: Callable[[np.ndarray], Detections], images: list[np.ndarray], annotations: list,
                    thresholds: np.ndarray, labels, conditions=CONDITIONS) -> dict:
    """Counting accuracy (totals) and MAE per image, per class, under each condition, against the
    complete labels moved with the pixels."""
    out = {}
    for cond in conditions:
        preds, gts = [], []
        for i in range(len(images)):
            img, b, lab = magnify(images, annotations, i, cond.scale) if cond.scale != 1.0 else (
                images[i], annotations[i].boxes, annotations[i].labels)
            preds.append(detect(degrade(img, cond, seed=i)))
            gts.append([int((lab == k).sum()) for k in range(len(labels))])
        est = count_matrix(preds, thresholds, len(labels))
        out[cond.name] = counting_metrics(est, np.array(gts), labels)
    return out


# ----------------------------------------------------------------------------- the whole report
def detector(model_path, backend: str = "auto", threads: int | None = None):
    """(detect(image) -> floor-threshold detections in image pixels, model info, backend name):
    the device pipeline with every class threshold at the floor, so counts can apply any threshold."""
    from edgecell.evaluation.detection import FLOOR
    from edgecell.model import load_model
    from edgecell.pipeline import predict
    from edgecell.tasks import cells

    model = load_model(model_path, backend, threads=threads)
    info = model.info
    cells.check_info(info)
    floor = [FLOOR] * len(cells.labels_of(info))

    def detect(image: np.ndarray) -> Detections:
        r, _ = predict(model, image, thresholds=floor)
        detect.last = r  # the whole result (unfamiliar score) of the latest call
        return r.boxes, r.classes, r.scores

    return detect, info, model.session.backend


def evaluate_counter(model_paths, data=None, backend: str = "auto", threads: int | None = None,
                     sweep: bool = True, limit: int | None = None, other_images: dict | None = None) -> dict:
    """Every model: both ground truths on Testing, Chula held-out counts and (sweep=True) the lab-shift
    sweep, at each model's stored thresholds; how often the unfamiliar flag fires on Testing, on
    Chula and on each list of `other_images` ({name: paths}, e.g. non-smear photos).
    `limit`: first N Testing images and Chula fields (quick checks)."""
    from edgecell.calibration import dataset_dir
    from edgecell.calibration.cell_labels import (COMPLETE_COVERAGE, chula_split, label_coverage,
                                                  load_chula_points, load_txl)
    from edgecell.calibration.voc import parse_voc
    from edgecell.images import decode_image
    from edgecell.tasks import cells

    complete = load_txl("Testing", data)[:limit]
    cbc_dir = dataset_dir("cbc_bccd_cleaned", data)
    cbc = [parse_voc(cbc_dir / "Testing" / "Annotations" / f"{a.stem}.xml") for a in complete]
    images = [decode_image(a.image_path) for a in complete]
    _, held = chula_split(load_chula_points(data))
    held = held[:limit]
    chula_images = [decode_image(p.image_path) for p in held]
    coverage = [label_coverage(p, img) for p, img in zip(held, chula_images)]
    report = {"testing_images": len(complete), "chula_held_out_images": len(held), "models": {}}
    for path in model_paths:
        detect, info, backend_name = detector(path, backend, threads)
        labels = cells.labels_of(info)
        thr = cells.thresholds_of(info)
        preds, familiar = [], {"testing": [], "chula_held_out": []}
        for img in images:
            preds.append(detect(img))
            familiar["testing"].append(detect.last.unfamiliar)
        chula_preds = []
        for img in chula_images:
            chula_preds.append(detect(img))
            familiar["chula_held_out"].append(detect.last.unfamiliar)
        for name, paths in (other_images or {}).items():
            familiar[name] = []
            for p in paths:
                detect(decode_image(p))
                familiar[name].append(detect.last.unfamiliar)
        entry = {"path": str(path), "backend": backend_name, "precision": info.precision,
                 "thresholds": dict(zip(labels, thr.tolist())), "counting_settings": cells.counting_settings(info),
                 "testing": against_both_truths(preds, complete, cbc, thr, labels),
                 "chula": chula_counts(chula_preds, held, coverage, float(thr[0]), COMPLETE_COVERAGE),
                 "unfamiliar": {k: {"flagged": int(np.sum(v)), "images": len(v)} for k, v in familiar.items()}}
        if sweep:
            entry["lab_shift"] = lab_shift_sweep(detect, images, complete, thr, labels)
        report["models"][f"{backend_name}-{info.precision}-{len(report['models'])}"] = entry
    report["int8_vs_fp32"] = int8_vs_fp32(report["models"])
    return report


def int8_vs_fp32(models: dict) -> list[dict]:
    """Per backend, each INT8 file against the FP32 file run there: counting accuracy against the
    complete labels (points, INT8 - FP32) per class and the mAP@0.5 change. Quantization alone only
    when both sidecars carry the same counting rules (`same_counting_settings`; the export shares
    the INT8 file's); otherwise the delta also holds a second threshold choice."""
    out = []
    for key, q in models.items():
        if q["precision"] != "int8":
            continue
        for fkey, f in models.items():
            if f["precision"] != "fp32" or f["backend"] != q["backend"]:
                continue
            qc, fc = q["testing"]["complete"], f["testing"]["complete"]
            out.append({"int8": key, "fp32": fkey, "backend": q["backend"],
                        "same_counting_settings": q["counting_settings"] == f["counting_settings"],
                        "accuracy_delta_points": {c: 100 * (m["accuracy"] - fc["counting"][c]["accuracy"])
                                                  for c, m in qc["counting"].items()},
                        "map50_delta": qc["map50"]["mean"] - fc["map50"]["mean"]})
    return out


def non_smear_images(data=None, per_set: int = 60, seed: int = 0) -> dict[str, list]:
    """Images that are not blood smears, for the unfamiliar flag: product photos (clothing test
    split) and chest X-rays (validation splits), `per_set` of each drawn with a fixed seed."""
    from edgecell.calibration import dataset_dir

    rng = np.random.default_rng(seed)
    out = {}
    for name, ds, pattern in (("product photos", "clothing_small_subset", "test/*/*.jpg"),
                              ("chest X-rays", "covid19_radiography_db_subset", "val/*/*.png"),
                              ("chest X-rays (3-class set)", "chest_xray_covid19_3class", "*/val/*/*")):
        try:
            files = sorted(dataset_dir(ds, data).glob(pattern))
        except Exception:  # a dataset not present here: that set is left out
            continue
        if files:
            out[name] = [files[i] for i in sorted(rng.permutation(len(files))[:per_set])]
    return out


def markdown(report: dict) -> str:
    """The report as Markdown tables (the model card copies them)."""
    lines = [f"# Cells counter: {report['testing_images']} Testing smears, {report['chula_held_out_images']} "
             "Chula held-out fields", ""]
    for key, e in report["models"].items():
        lines += [f"## {key} ({e['path']}), thresholds " + "/".join(f"{v:.2f}" for v in e["thresholds"].values()), "",
                  "| ground truth | class | estimated / truth | accuracy % | MAE per image | AP@0.5 |", "|---|---|---|---|---|---|"]
        for truth in ("complete", "cbc"):
            t = e["testing"][truth]
            for c, m in t["counting"].items():
                lines.append(f"| {truth} | {c} | {m['estimated']}/{m['ground_truth']} | {100 * m['accuracy']:.2f} | "
                             f"{m['mae_per_image']:.2f} | {t['map50']['per_class'][c]:.3f} |")
            lines.append(f"| {truth} | mAP@0.5 | | | | **{t['map50']['mean']:.3f}** |")
        ch = e["chula"]
        lines += ["", "| Chula held-out | images | RBC estimated / labelled | accuracy % | MAE per image | labelled cells found |",
                  "|---|---|---|---|---|---|"]
        for part in ("all", "fully_labelled", "sparsely_labelled"):
            m = ch[part]
            if m.get("images"):
                lines.append(f"| {part} | {m['images']} | {m['estimated']}/{m['ground_truth']} | {100 * m['accuracy']:.2f} | "
                             f"{m['mae_per_image']:.2f} | {m['found']}/{m['ground_truth']} ({100 * m['found_share']:.1f} %) |")
        if "unfamiliar" in e:
            lines += ["", "| unfamiliar flag on | flagged / images |", "|---|---|"]
            lines += [f"| {k} | {v['flagged']}/{v['images']} |" for k, v in e["unfamiliar"].items()]
        if "lab_shift" in e:
            names = list(e["thresholds"])
            lines += ["", "| condition | " + " | ".join(f"{c} acc %" for c in names) + " | RBC est/gt | RBC MAE |",
                      "|---" * (len(names) + 3) + "|"]
            for cond, m in e["lab_shift"].items():
                lines.append(f"| {cond} | " + " | ".join(f"{100 * m[c]['accuracy']:.1f}" for c in names) +
                             f" | {m[names[0]]['estimated']}/{m[names[0]]['ground_truth']} | {m[names[0]]['mae_per_image']:.2f} |")
        lines.append("")
    pairs = report.get("int8_vs_fp32") or []
    if pairs:
        names = list(pairs[0]["accuracy_delta_points"])
        lines += ["## INT8 against FP32, complete labels (points, INT8 - FP32)", "",
                  "| backend | INT8 | FP32 | " + " | ".join(names) + " | mAP@0.5 | same counting rules |",
                  "|---" * (len(names) + 5) + "|"]
        for d in pairs:
            lines.append(f"| {d['backend']} | {d['int8']} | {d['fp32']} | " +
                         " | ".join(f"{d['accuracy_delta_points'][c]:+.2f}" for c in names) +
                         f" | {d['map50_delta']:+.4f} | {'yes' if d['same_counting_settings'] else 'no: includes a threshold choice'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def add_complete_labels(report: dict, model_paths, data, out_dir, backend: str = "auto") -> None:
    """`edgecell eval cells`: beside the CBC report, each model's counts against the complete
    labels, on Chula's held-out fields and the unfamiliar flag on non-smear images (no sweep;
    `python -m edgecell.evaluation.cell_counts` runs it), in cell_counts.json/.md and in each
    report entry under "complete_labels". Left out, with a note, when TXL or Chula data is absent."""
    import json
    from pathlib import Path

    from edgecell.errors import EdgecellError

    try:
        counter = evaluate_counter(model_paths, data, backend=backend, sweep=False,
                                   other_images=non_smear_images(data, per_set=20))
    except EdgecellError as exc:
        report["complete_labels_note"] = f"not evaluated: {exc}"
        return
    out_dir = Path(out_dir)  # cells_eval.json is written again below, with these entries
    (out_dir / "cell_counts.json").write_text(json.dumps(counter, indent=1, default=float))
    (out_dir / "cell_counts.md").write_text(markdown(counter))
    for entry, extra in zip(report["models"].values(), counter["models"].values()):
        entry["complete_labels"] = {"testing": extra["testing"]["complete"], "chula": {
            k: v for k, v in extra["chula"].items() if k != "per_image"}, "unfamiliar": extra["unfamiliar"]}
    (out_dir / "cells_eval.json").write_text(json.dumps(report, indent=1, default=float))


def main(argv=None) -> int:
    """python -m edgecell.evaluation.cell_counts MODEL... [-o DIR] [--no-sweep]: the whole report."""
    import argparse
    import json
    from pathlib import Path

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("models", nargs="+")
    p.add_argument("-o", "--out", default="cell-counts")
    p.add_argument("--data")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--no-sweep", action="store_true")
    a = p.parse_args(argv)
    r = evaluate_counter(a.models, a.data, a.backend, a.threads, sweep=not a.no_sweep,
                         other_images=non_smear_images(a.data))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cell_counts.json").write_text(json.dumps(r, indent=1, default=float))
    (out / "cell_counts.md").write_text(markdown(r))
    print(markdown(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
