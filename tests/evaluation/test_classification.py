import json

import numpy as np
import pytest

from edgecell.evaluation.classification import (classification_metrics, confusion_matrix, evaluate_classifier,
                                                folder_label_map)
from edgecell.errors import EdgecellError


def test_metrics_on_hand_made_predictions():
    # class 0: 2 of 3 found, both predictions right; class 1: 1 of 2, 1 of 2 predictions right;
    # class 2: 1 of 1 found, 1 of 2 predictions right
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["top1"] == pytest.approx(4 / 6)
    pc = m["per_class"]
    assert (pc["a"]["precision"], pc["a"]["recall"], pc["a"]["f1"]) == pytest.approx((1.0, 2 / 3, 0.8))
    assert (pc["b"]["precision"], pc["b"]["recall"], pc["b"]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (pc["c"]["precision"], pc["c"]["recall"], pc["c"]["f1"]) == pytest.approx((0.5, 1.0, 2 / 3))
    assert m["macro"]["precision"] == pytest.approx(2 / 3)
    assert m["macro"]["recall"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert m["macro"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted"]["recall"] == pytest.approx(m["top1"])  # support-weighted recall = accuracy


def test_zero_division_and_absent_class():
    # class "c" never true and never predicted: 0, and left out of the macro average
    m = classification_metrics([0, 1], [1, 1], ["a", "b", "c"])
    assert m["per_class"]["a"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0}
    assert m["per_class"]["c"]["support"] == 0
    assert m["macro"]["recall"] == pytest.approx(0.5)
    assert confusion_matrix([], [], 2).sum() == 0


def test_folder_label_map():
    labels = ["trouser", "jacket"]
    assert folder_label_map(labels, {"dataset_folders": ["pants", "outwear"]}, None) == {"pants": 0, "outwear": 1}
    assert folder_label_map(labels, {}, None) == {"trouser": 0, "jacket": 1}
    assert folder_label_map(labels, {}, {"outwear": "jacket"}) == {"outwear": 1}
    with pytest.raises(EdgecellError):
        folder_label_map(labels, {}, {"bags": "bag"})


def _tiny_colour_model(path):
    """ONNX model: mean colour of an 8x8 RGB input -> softmax over (red, green, blue)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
             helper.make_node("Mul", ["mean", "k"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    graph = helper.make_graph(nodes, "colour", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 8, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor("k", TensorProto.FLOAT, [], [20.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_evaluate_classifier_end_to_end(tmp_path):
    import cv2

    from edgecell.modelinfo import ModelInfo, write_sidecar

    model = tmp_path / "colour_fp32.onnx"
    _tiny_colour_model(model)
    write_sidecar(model, ModelInfo(task="classify", labels=["red", "green", "blue"], input_size=(8, 8), mean=[0.0],
                                   std=[255.0], settings={"dataset_folders": ["r", "g", "b"]}))
    colours = {"r": (255, 0, 0), "g": (0, 255, 0), "b": (0, 0, 255)}
    # test split: 2 red, 2 green (one of them really blue-ish: a wrong label), 1 blue
    layout = {"r": [colours["r"], colours["r"]], "g": [colours["g"], (0, 40, 255)], "b": [colours["b"]]}
    for folder, pixels in layout.items():
        (tmp_path / "data" / "test" / folder).mkdir(parents=True)
        for i, rgb in enumerate(pixels):
            img = np.zeros((20, 30, 3), np.uint8) + np.array(rgb[::-1], np.uint8)  # BGR for cv2
            cv2.imwrite(str(tmp_path / "data" / "test" / folder / f"{i}.png"), img)
    report = evaluate_classifier([model], tmp_path / "data", tmp_path / "out", split="test")
    r = report["models"]["onnxruntime-fp32"]
    assert r["top1"] == pytest.approx(0.8)
    assert r["confusion"] == [[2, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert r["per_class"]["blue"]["precision"] == pytest.approx(0.5)
    saved = json.loads((tmp_path / "out" / "classification.json").read_text())
    assert saved["support"] == {"red": 2, "green": 2, "blue": 1}
    md = (tmp_path / "out" / "classification.md").read_text()
    assert "| green | 100.0 | 50.0 | 66.7 | 2 |" in md
    pytest.importorskip("matplotlib")
    assert (tmp_path / "out" / "confusion_onnxruntime-fp32.png").stat().st_size > 1000
    assert (tmp_path / "out" / "confusion_matrices.png").is_file()
