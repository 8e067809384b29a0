"""Product classifier building blocks; no training (builders on a tiny input, random weights)."""

import numpy as np
import pytest

from edgecell.convert import products as P


def test_label_mapping_in_one_place():
    assert P.FOLDER_TO_CATEGORY == {"pants": "trouser", "shorts": "shorts", "longsleeve": "long-sleeved shirt",
                                    "shirt": "shirt", "t-shirt": "t-shirt", "shoes": "shoes", "hat": "hat",
                                    "outwear": "jacket"}
    assert P.LABELS == tuple(P.FOLDER_TO_CATEGORY.values()) and len(set(P.LABELS)) == 8
    assert set(P.ABSENT_CATEGORIES) == {"bag", "sandal"} and not set(P.ABSENT_CATEGORIES) & set(P.LABELS)
    assert set(P.PAPER_ROW) == set(P.LABELS)
    assert P.category("outwear") == "jacket"
    with pytest.raises(Exception, match="unknown product folder"):
        P.category("dress")


def test_model_info_sidecar_fields():
    info = P.model_info("v1")
    assert info.task == "products" and info.labels == list(P.LABELS)
    assert info.input_size == (224, 224) and info.mean == [127.5] * 3 and info.std == [127.5] * 3
    assert info.settings["dataset_folders"] == list(P.FOLDERS)
    assert info.settings["absent_categories"] == ["bag", "sandal"]


def test_frozen_boundary():
    assert P.v1_frozen_boundary(2) == "conv_dw_12"
    assert P.v1_frozen_boundary(13) == "conv_dw_1"
    with pytest.raises(ValueError):
        P.v1_frozen_boundary(14)


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def test_build_v1_frozen_layers_and_output(keras):
    model, n_frozen = P.build_v1(8, size=32, weights=None, trainable_blocks=2)
    assert model.output_shape == (None, 8)
    # Keras 3: 86 backbone layers (no conv1_pad); the paper's "first 75 of 87" = first 74 here
    assert n_frozen == 74
    backbone = [l for l in model.layers if not l.name.startswith("products_")]
    assert len(backbone) == 86
    assert [l.trainable for l in backbone].index(True) == 74 and backbone[74].name == "conv_dw_12"
    assert all(l.trainable for l in backbone[74:])
    assert all(l.trainable for l in model.layers if l.name.startswith("products_"))
    probs = model(np.zeros((2, 32, 32, 3), np.float32)).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_build_v2_all_trainable(keras):
    model, n_frozen = P.build_v2(8, size=32)
    assert n_frozen == 0 and model.output_shape == (None, 8)
    assert all(l.trainable for l in model.layers)
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(l.momentum == 0.9 for l in bns)  # not Keras' 0.999: too slow for ~30 steps/epoch


def test_distillation_loss(keras):
    loss = P.make_distillation_loss(3, alpha=0.5, temperature=2.0)
    y = np.array([[1.0, 0.0, 0.0]], np.float32)
    s = np.array([[0.7, 0.2, 0.1]], np.float32)
    # teacher == student: the KL term is 0, what is left is (1 - alpha) * CE
    same = float(np.asarray(loss(y, np.concatenate([s, s], 1)))[0])
    assert same == pytest.approx(0.5 * -np.log(0.7), rel=1e-4)
    other = float(np.asarray(loss(y, np.concatenate([s, s[:, ::-1]], 1)))[0])
    assert other > same


def test_augment_identity_and_shape(keras):
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    none = {"rotation_deg": 0.0, "shift": 0.0, "shear": 0.0, "zoom": 0.0, "hflip": False}
    np.testing.assert_allclose(P.augment_batch(tf, tf.constant(x), aug=none).numpy(), x, atol=1e-5)
    out = P.augment_batch(tf, tf.constant(x)).numpy()
    assert out.shape == x.shape and out.min() >= -1 - 1e-5 and out.max() <= 1 + 1e-5


def test_ship_copies_the_int8_file_with_its_measured_metrics(tmp_path):
    import argparse
    import json
    import shutil
    from pathlib import Path

    from edgecell.modelinfo import read_model_info

    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "models"
    export = tmp_path / "out" / "export"
    export.mkdir(parents=True)
    for suffix in (".tflite", ".json"):
        shutil.copyfile(fixtures / f"tiny_classifier_int8{suffix}", export / f"products_v1_int8{suffix}")
    (tmp_path / "out" / "eval_test").mkdir()
    report = {"models": {"litert-int8": {"n": 345, "top1": 0.82029, "macro": {"f1": 0.8087}}}}
    (tmp_path / "out" / "eval_test" / "classification.json").write_text(json.dumps(report))
    target = P.ship(argparse.Namespace(out=str(tmp_path / "out"), arch="v1"), tmp_path / "models")
    assert target.name == "products_int8.tflite"
    assert target.read_bytes() == (export / "products_v1_int8.tflite").read_bytes()
    assert read_model_info(target).metrics["test_int8"] == {"n": 345, "top1": 0.8203, "macro_f1": 0.8087}
