import pytest

from edgecell.errors import ModelError
from edgecell.modelinfo import ModelInfo, read_model_info, sidecar_path, write_sidecar


def test_sidecar_round_trip(tmp_path):
    model = tmp_path / "cells_int8.tflite"
    info = ModelInfo(task="cells", labels=["RBC", "WBC", "Platelets"], input_size=(416, 320),
                     settings={"thresholds": {"RBC": 0.55}})
    write_sidecar(model, info)
    assert sidecar_path(model).name == "cells_int8.json"
    back = read_model_info(model)
    assert back.input_size == (416, 320) and back.settings["thresholds"]["RBC"] == 0.55


def test_embedded_metadata_used_without_sidecar(tmp_path):
    info = read_model_info(tmp_path / "m.onnx", embedded=ModelInfo(task="products").to_json())
    assert info.task == "products"


def test_no_metadata_gives_raw_model(tmp_path):
    assert read_model_info(tmp_path / "m.tflite").task == "raw"


def test_unknown_task_is_refused_with_the_valid_choices(tmp_path):
    with pytest.raises(ModelError, match="expected one of cells, classify"):
        read_model_info(tmp_path / "m.onnx", embedded='{"task": "segmentation"}')


def test_broken_sidecar_is_one_line_error(tmp_path):
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_model_info(tmp_path / "m.tflite")
