"""Give the shipped product classifier an unfamiliar-image flag without retraining it.

The INT8 .tflite gets a second output, "features": its global-average-pooled last feature map (the
input of its Dense layer, already a tensor of the graph), by adding that tensor to the subgraph's
outputs in the flatbuffer (TFLite schema, `tensorflow.lite.tools.flatbuffer_utils`). No weight,
scale or operator changes, so the class scores, and the card's accuracy figures, stay the same
(checked here: same top-1 on every test photo). The pooled features' mean and precision are fitted
on the training split's fit part (the 938 images the model was trained on), the threshold is the
`--quantile` percentile of the scores of the 235-image early-stopping holdout (the split every
choice of this model was made on); the dataset's `test` and `validation` folders and foreign images
(blood smears, chest X-rays, single red-cell patches) are only measured. The form of the score
(square root of the features, one mean per class, shrinkage 0.3) was chosen among 12 (no transform
or sqrt; one mean or per class; shrinkage 0.01, 0.1, 0.3) by the share flagged of two foreign
sources only, BCCD smears and the 3-class X-ray set; the other foreign sources are held out from
that choice.

    python -m edgecell.convert.products_unfamiliar --out artifacts/products/unfamiliar
    python -m edgecell.convert.siblings artifacts/products/unfamiliar/products_int8.tflite --out edge/models \\
        --images ../shared/data/clothing_small_subset/test
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecell.errors import script_main
from edgecell.resources import shipped_path

FEATURES = "features"
PROBS = "products_probs"
#: the statistics' arrays, beside the sidecar (`settings["unfamiliar_arrays"]`; see `edgecell.tasks.familiarity`)
UNFAMILIAR_ARRAYS = "products_unfamiliar.npz"


def with_features_output(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` with the Dense layer's input tensor added as output "features" (and the
    class-score output named "products_probs")."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(src))
    graph = model.subgraphs[0]
    codes = {i: max(c.builtinCode, c.deprecatedBuiltinCode) for i, c in enumerate(model.operatorCodes)}
    fully_connected = 9  # BuiltinOperator.FULLY_CONNECTED
    dense = [op for op in graph.operators if codes[op.opcodeIndex] == fully_connected]
    if len(dense) != 1:
        raise SystemExit(f"{src}: expected one FULLY_CONNECTED operator, found {len(dense)}")
    pooled = int(dense[0].inputs[0])
    if list(graph.tensors[pooled].shape) != [1, int(graph.tensors[pooled].shape[-1])]:
        raise SystemExit(f"{src}: the Dense input has shape {list(graph.tensors[pooled].shape)}, not 1 x K")
    probs = int(graph.outputs[0])
    graph.tensors[pooled].name = FEATURES.encode()
    graph.tensors[probs].name = PROBS.encode()
    graph.outputs = np.array([probs, pooled], np.int32)
    for signature in model.signatureDefs or []:  # rebuilt whole: running it on its own output changes nothing
        kind = type(signature.outputs[0])
        signature.outputs = []
        for name, index in ((PROBS, probs), (FEATURES, pooled)):
            entry = kind()
            entry.name, entry.tensorIndex = name.encode(), index
            signature.outputs.append(entry)
    flatbuffer_utils.write_model(model, str(dst))


def run_all(model, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(features N x K, class scores N x C) of every image through the device path."""
    from edgecell.images import decode_image
    from edgecell.tasks import classify
    from edgecell.tasks.familiarity import features_of

    feats, probs = [], []
    for p in paths:
        outputs = model.session.run(classify.preprocess(decode_image(p), model.info)[0])
        feats.append(features_of(outputs, model.info))
        probs.append(classify.probabilities(outputs, model.info))
    return np.array(feats), np.array(probs)


def foreign_sets(data: Path) -> dict[str, list[Path]]:
    """Images the product classifier should call unfamiliar, by source."""
    def jpgs(folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))

    return {
        "bccd_smears": jpgs(data / "cbc_bccd_cleaned" / "Testing") + jpgs(data / "cbc_bccd_cleaned" / "Training"),
        "chula_smears": jpgs(data / "chula_rbc12" / "images"),
        "xray_covid19_radiography_val": jpgs(data / "covid19_radiography_db_subset" / "val"),
        "xray_3class": jpgs(data / "chest_xray_covid19_3class"),
        "red_cell_patches": jpgs(data / "erythrocytesIDB1_patches" / "images"),
        "shipped_samples_bccd_chula": jpgs(shipped_path("samples", "bccd")) + jpgs(shipped_path("samples", "chula")),
    }


@script_main
def main(argv: Sequence[str] | None = None) -> int:
    from edgecell.calibration import data_root, dataset_dir
    from edgecell.calibration.folders import list_split, stratified_split
    from edgecell.convert.products import DATASET, FOLDERS
    from edgecell.convert.unfamiliar import save_arrays, unfamiliar_scores, unfamiliar_stats
    from edgecell.model import load_model
    from edgecell.modelinfo import read_model_info, write_sidecar

    p = argparse.ArgumentParser(prog="python -m edgecell.convert.products_unfamiliar", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="the INT8 product classifier (default: the shipped one)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--data", default=None)
    p.add_argument("--quantile", type=float, default=99.5, help="percentile of the holdout's scores (default 99.5)")
    p.add_argument("--shrink", type=float, default=0.3, help="covariance shrinkage towards its mean variance")
    p.add_argument("--transform", default="sqrt", help="feature transform before the distance ('' for none)")
    p.add_argument("--shared-mean", action="store_true", help="one mean for all images, not one per class")
    p.add_argument("--val-split", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    src = Path(args.model) if args.model else shipped_path("models", "products_int8.tflite")
    data = dataset_dir(DATASET, args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    dst = args.out / "products_int8.tflite"
    with_features_output(src, dst)
    info = read_model_info(src)
    for key in ("unfamiliar", UNFAMILIAR_ARRAYS):  # the source's statistics are made again below
        info.settings.pop(key, None)
    info.settings["probs_output"] = PROBS
    info.settings["features_output"] = FEATURES
    write_sidecar(dst, info)

    model, old = load_model(dst, "litert", threads=1), load_model(src, "litert", threads=1)
    fit, hold = stratified_split(list_split(data, "train", FOLDERS), args.val_split, seed=args.seed)
    f_fit, _ = run_all(model, [s[0] for s in fit])
    f_hold, _ = run_all(model, [s[0] for s in hold])
    stats = unfamiliar_stats(f_fit, args.quantile, args.shrink, threshold_features=f_hold,
                             classes=None if args.shared_mean else np.array([s[1] for s in fit]),
                             transform=args.transform or None,
                             threshold_on=f"the {len(hold)}-image early-stopping holdout of the train split "
                                          f"(seed {args.seed}), LiteRT INT8")
    report: dict = {"threshold": stats["threshold"], "quantile": args.quantile, "fit_n": len(fit), "holdout_n": len(hold)}
    for split in ("test", "validation"):
        samples = list_split(data, split, FOLDERS)
        f_new, p_new = run_all(model, [s[0] for s in samples])
        _, p_old = run_all(old, [s[0] for s in samples])
        scores = unfamiliar_scores(f_new, stats)
        flagged = scores > stats["threshold"]
        right = p_new.argmax(1) == np.array([s[1] for s in samples])
        report[split] = {"n": len(samples), "flagged": int(flagged.sum()), "share_flagged": round(float(flagged.mean()), 4),
                         "top1_same_as_original": int((p_new.argmax(1) == p_old.argmax(1)).sum()),
                         "max_abs_prob_change": float(np.abs(p_new - p_old).max()),
                         "flagged_wrong": int((flagged & ~right).sum()), "flagged_right": int((flagged & right).sum())}
        print(split, report[split], flush=True)
    total, hit = 0, 0
    for name, paths in foreign_sets(data_root(args.data)).items():
        if not paths:
            continue
        f, pr = run_all(model, paths)
        scores = unfamiliar_scores(f, stats)
        flagged = scores > stats["threshold"]
        confident = pr.max(1) >= float(info.settings.get("min_confidence", 0.5))
        report.setdefault("foreign", {})[name] = {
            "n": len(paths), "flagged": int(flagged.sum()), "share_flagged": round(float(flagged.mean()), 4),
            "confident_before": int(confident.sum()), "median_score": round(float(np.median(scores)), 1)}
        total, hit = total + len(paths), hit + int(flagged.sum())
        print(name, report["foreign"][name], flush=True)
    report["foreign_all"] = {"n": total, "flagged": hit, "share_flagged": round(hit / max(total, 1), 4)}
    print("foreign, all:", report["foreign_all"], flush=True)
    info.settings["unfamiliar"] = save_arrays(stats, args.out / UNFAMILIAR_ARRAYS)
    info.settings["unfamiliar_arrays"] = UNFAMILIAR_ARRAYS
    info.metrics["unfamiliar"] = {k: v for k, v in report.items() if k not in ("threshold",)}
    write_sidecar(dst, info)
    (args.out / "unfamiliar_report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
