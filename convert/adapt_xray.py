"""Adapt the X-ray model to one site on its local films (`edgecell commission --adapt`): the training
side of commissioning, so it may use TensorFlow; `edgecell commission` starts it as a separate
process (`python -m edgecell.convert.adapt_xray ...`) and the runtime never imports it.

    python -m edgecell.convert.adapt_xray MODEL DIR --labels labels.csv -o OUT [--train N]

What it does:
1. splits the labelled films (stratified by label, seeded): `--train` of them to adapt on, the rest
   to judge the result on (never seen by the adaptation);
2. loads the float Keras model that ships beside MODEL (`settings["training"]["float_model"]`), and computes
   the pooled features of each training film and of `--copies` augmented copies of it (the same
   film preparation and augmentation as training; the backbone stays fixed: with a few dozen
   films, retraining it would learn the films, not the site);
3. refits the dense head (softmax regression started at the shipped weights, L2-tied to them, so
   a handful of films moves it only as far as they agree), and adds the site's class means to the
   unfamiliar-film statistics (the site's own films are familiar from now on);
4. re-quantizes through the shared converter (`edgecell.convert.quantize.export_model`: INT8 TFLite,
   calibrated on the site's films) and writes its OpenVINO IR sibling for the x86 cart
   (`edgecell.convert.siblings`: the same INT8 arithmetic, float ports);
5. scores the held-back films with the shipped model and with the site model through the device
   pipeline and writes OUT/<stem>_site.tflite, .xml/.bin, the head file and one sidecar recording
   the site data's hash, size and the before/after figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from edgecell.commission import (LabelledFilm, commission_report, paired_change, read_labels, site_data_hash)
from edgecell.errors import EdgecellError, script_main


def split_films(films: Sequence[LabelledFilm], n_train: int, seed: int) -> tuple[list[LabelledFilm], list[LabelledFilm]]:
    """`n_train` films to adapt on, as even over the labels as the films allow (round-robin over
    labels in a seeded order); the rest to evaluate on."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[LabelledFilm]] = {}
    for f in films:
        by_label.setdefault(f.label, []).append(f)
    queues = {k: [v[i] for i in rng.permutation(len(v))] for k, v in sorted(by_label.items())}
    train: list[LabelledFilm] = []
    while len(train) < n_train and any(queues.values()):
        for k in list(queues):
            if queues[k] and len(train) < n_train:
                train.append(queues[k].pop(0))
    chosen = {id(f) for f in train}
    return train, [f for f in films if id(f) not in chosen]


def fit_head(x: np.ndarray, y: np.ndarray, w0: np.ndarray, b0: np.ndarray, *, tie: float = 1e-2,
             lr: float = 1.0, steps: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression on pooled features, from (w0, b0), minimising cross-entropy +
    tie / 2 * |w - w0|^2 by full-batch gradient descent (a few hundred rows: milliseconds); the
    step is scaled by the mean squared feature norm so it does not depend on the feature scale."""
    w, b = w0.astype(np.float64).copy(), b0.astype(np.float64).copy()
    x = np.asarray(x, np.float64)
    onehot = np.eye(w.shape[1])[y]
    step = lr / (float((x * x).sum(axis=1).mean()) + 1.0)
    for _ in range(steps):
        z = x @ w + b
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / len(x)
        w -= step * (x.T @ g + tie * (w - w0))
        b -= lr * g.sum(axis=0)
    return w.astype(np.float32), b.astype(np.float32)


def film_features(cam, films: Sequence[LabelledFilm], size: int, prep: dict, copies: int, seed: int):
    """(pooled features, label index rows, tensors of the originals) for the films and `copies`
    augmented copies of each."""
    from edgecell.convert.train_xray_mobilenet import augment, to_tensor
    from edgecell.images import decode_image
    from edgecell.tasks.xray import film_crop, film_grey

    rng = np.random.default_rng(seed)
    originals, tensors = [], []
    for f in films:
        grey, _ = film_grey(decode_image(f.path), prep)
        originals.append(to_tensor(film_crop(grey, size, prep)))
        tensors.append(originals[-1])
        tensors += [to_tensor(film_crop(augment(grey, rng), size, prep)) for _ in range(copies)]
    _, fmap = cam.predict(np.stack(tensors), batch_size=32, verbose=0)
    return fmap.mean(axis=(1, 2)), np.stack(originals)


def adapt(model_path: Path, films_dir: Path, labels_csv: Path, out: Path, *, n_train: int, seed: int = 0,
          copies: int = 8, tie: float = 1e-2, keras_path: Path | None = None,
          formats: Sequence[str] = ("tflite", "openvino")) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from edgecell.convert.quantize import export_model
    from edgecell.convert.train_xray_mobilenet import add_feature_correction, with_feature_output
    from edgecell.model import load_model
    from edgecell.modelinfo import read_model_info, write_sidecar
    from edgecell.tasks.xray import film_prep_of, load_head

    t0 = time.time()
    info = read_model_info(model_path)
    if info.task != "xray" or not info.settings.get("film_prep"):
        raise EdgecellError(f"{model_path}: --adapt works on the MobileNet X-ray model (task xray with film_prep); "
                            f"this is {info.task} {info.name}")
    keras_path = keras_path or model_path.parent / str((info.settings.get("training") or {}).get("float_model", ""))
    if not keras_path.is_file():
        raise EdgecellError(f"{keras_path}: the float Keras model to adapt is not there (it ships beside the "
                            "X-ray model; pass --keras PATH)")
    films = read_labels(labels_csv, films_dir, info.labels)
    if n_train >= len(films):
        raise EdgecellError(f"--train {n_train}: needs fewer than the {len(films)} films listed (the rest judge the result)")
    train, held = split_films(films, n_train, seed)
    labels = list(info.labels)
    keras.utils.set_random_seed(seed)
    model = keras.models.load_model(keras_path, compile=False)
    cam = with_feature_output(model)
    size = int(info.input_size[0])
    feats, originals = film_features(cam, train, size, film_prep_of(info), copies, seed)
    y = np.repeat([labels.index(f.label) for f in train], copies + 1)
    dense = model.get_layer("scores")
    w0, b0 = (np.asarray(v, np.float32) for v in dense.get_weights())
    w, b = fit_head(feats, y, w0, b0, tie=tie)
    dense.set_weights([w, b])
    head = {k: v for k, v in load_head(model_path.parent / info.settings["gradcam_head"]).items() if k != "kind"}
    head.update({"kind": np.asarray("gap_dense"), "w": w, "b": b})
    head.pop("correction_matrix", None)  # the shipped INT8 file's; the site file gets its own correction
    if "maha_means" in head:
        plain = feats[:: copies + 1]
        y_plain = y[:: copies + 1]
        present = [c for c in range(len(labels)) if (y_plain == c).any()]
        local = [plain[y_plain == c].mean(axis=0) for c in present]
        rows = head.get("maha_classes", np.arange(len(head["maha_means"])))
        head["maha_classes"] = np.concatenate([np.asarray(rows, np.int32), np.asarray(present, np.int32)])
        head["maha_means"] = np.concatenate([head["maha_means"], np.stack(local)]).astype(np.float32)
    stem = model_path.stem.replace("_int8", "").replace("_fp32", "") + "_site"
    out.mkdir(parents=True, exist_ok=True)
    head_name = f"{stem}_head.npz"
    np.savez(out / head_name, **head)
    site_info = read_model_info(model_path)
    site_info.name = info.name + "-site"
    site_info.settings["gradcam_head"] = head_name
    site_info.settings.pop("training", None)
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_model(cam, site_info, list(originals), tmp, stem, formats=("tflite",), precisions=("int8",))
        shutil.copyfile(paths["tflite-int8"], out / f"{stem}.tflite")
    write_sidecar(out / f"{stem}.tflite", site_info)
    if "feature_correction" in info.settings:  # re-quantized on the site films: its own correction
        add_feature_correction(out / f"{stem}.tflite", model, list(originals))
        site_info = read_model_info(out / f"{stem}.tflite")
    if "openvino" in formats:  # the same INT8 arithmetic in OpenVINO IR (the x86 cart profile's format)
        from edgecell.convert.siblings import openvino_ir_from_tflite

        openvino_ir_from_tflite(out / f"{stem}.tflite", out / f"{stem}.xml")
    before = commission_report(load_model(model_path), held)
    after = commission_report(load_model(out / f"{stem}.tflite"), held)
    figures = lambda r: {"accuracy": round(r.accuracy, 4), "ci95": [round(v, 4) for v in r.accuracy_ci95],  # noqa: E731
                         "films": r.films, "flagged": r.flagged}
    site_info.metrics = {"site": {"data_sha256": site_data_hash(train), "films_adapted_on": len(train),
                                  "films_evaluated": len(held), "adapted_from": model_path.name,
                                  "before": figures(before), "after": figures(after), "seed": seed,
                                  "change": asdict(paired_change(before, after)),
                                  "method": f"dense head refit on pooled features ({copies} augmented copies per "
                                            f"film, L2 tie {tie}); backbone fixed; site class means added to "
                                            "the unfamiliar statistics; INT8 re-quantized on the site films"}}
    write_sidecar(out / f"{stem}.tflite", site_info)
    summary = {"model": str(out / f"{stem}.tflite"),
               "openvino": str(out / f"{stem}.xml") if (out / f"{stem}.xml").exists() else None,
               "seconds": round(time.time() - t0, 1), **site_info.metrics["site"]}
    (out / f"{stem}_adapt.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


@script_main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgecell.convert.adapt_xray", description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="the shipped X-ray model (.tflite with its sidecar, head and float model)")
    p.add_argument("films", type=Path, help="folder of local films")
    p.add_argument("--labels", type=Path, required=True, help="labels.csv: file,label")
    p.add_argument("-o", "--out", type=Path, required=True)
    p.add_argument("--train", type=int, default=25, help="films to adapt on (the rest judge the result)")
    p.add_argument("--copies", type=int, default=8, help="augmented copies per film")
    p.add_argument("--tie", type=float, default=1e-2, help="L2 pull of the head to the shipped weights")
    p.add_argument("--keras", type=Path, help="float Keras model (default: settings float_model beside MODEL)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    summary = adapt(args.model, args.films, args.labels, args.out, n_train=args.train, seed=args.seed,
                    copies=args.copies, tie=args.tie, keras_path=args.keras)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
