"""The task contract, the same for every registered task: a real model of that task goes through
`load_model` + `pipeline.predict` and gives a typed result that serialises, summarises, flattens to
a CSV row and draws an overlay; the registry is the one list of tasks; a new task is one class
plus one registry entry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgecell.errors import ModelError
from edgecell.images import decode_image
from edgecell.model import load_model
from edgecell.modelinfo import ModelInfo
from edgecell.pipeline import predict, run_frames
from edgecell.sources import Frame
from edgecell.tasks import TASKS, Task, TaskResult, get_task

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "edge" / "models"
FIXTURES = REPO / "tests" / "fixtures" / "models"

#: one real model per registered task (shipped where one ships, else a tiny fixture)
MODEL_FOR_TASK = {
    "cells": MODELS / "cells_int8.tflite",
    "products": MODELS / "products_int8.tflite",
    "xray": MODELS / "xray_int8.tflite",
    "gate": MODELS / "gate_products_int8.tflite",
    "classify": FIXTURES / "tiny_classifier_int8.tflite",
    "rbc": MODELS / "rbc_int8.tflite",
    "raw": None,  # the tiny classifier without its sidecar (see `model_for`)
}


def model_for(task: str, tmp_path: Path):
    path = MODEL_FOR_TASK[task]
    if path is None:
        path = tmp_path / "no_metadata.tflite"
        shutil.copy(FIXTURES / "tiny_classifier_int8.tflite", path)
    if not path.is_file():  # a task whose model is still being trained: runs as soon as it ships
        pytest.skip(f"{path.name} is not shipped yet")
    return load_model(path)


def test_every_registered_task_has_a_model_in_this_test():
    assert set(MODEL_FOR_TASK) == set(TASKS), "a new task needs a model in MODEL_FOR_TASK"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_meets_the_contract(name, real_jpeg, tmp_path):
    model = model_for(name, tmp_path)
    assert model.info.task == name
    task = get_task(name)
    assert isinstance(task, Task) and task.name == name
    image = decode_image(real_jpeg)
    result, timings = predict(model, image)
    assert isinstance(result, TaskResult)
    json.dumps(result.to_dict())  # JSON-ready
    assert isinstance(result.summary(), str) and result.summary()
    assert all(not isinstance(v, (list, dict)) for v in result.csv_row().values())
    assert isinstance(result.needs_attention, bool)
    overlay = task.annotate(image, result)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    totals = task.summary()
    totals.add(result)
    assert totals.results == 1 and json.dumps(totals.to_dict())
    assert timings.total > 0


def test_model_metadata_accepts_exactly_the_registered_tasks():
    for name in TASKS:
        assert ModelInfo.from_dict({"task": name}).task == name
    with pytest.raises(ModelError) as exc:
        ModelInfo.from_dict({"task": "segmentation"})
    assert all(name in str(exc.value) for name in TASKS)


class _Brightness(TaskResult):
    def __init__(self, value: float):
        self.value = value

    def to_dict(self) -> dict:
        return {"brightness": self.value}

    def summary(self) -> str:
        return f"brightness {self.value:.2f}"


class _BrightnessTask(Task):
    """A new task written against the contract only: mean model output as 'brightness'."""

    name = "brightness"

    def preprocess(self, image, info):
        from edgecell.tasks.common import to_input_tensor

        return to_input_tensor(image, info)[0], None

    def postprocess(self, outputs, context, info, **options):
        return _Brightness(float(np.mean(next(iter(outputs.values())))))

    def annotate(self, image, result):
        return image.copy()


def test_a_new_task_is_one_class_and_one_registry_entry(monkeypatch, real_jpeg, tmp_path):
    monkeypatch.setitem(TASKS, "brightness", _BrightnessTask())
    path = tmp_path / "m.tflite"
    shutil.copy(FIXTURES / "tiny_classifier_int8.tflite", path)
    info = json.loads((FIXTURES / "tiny_classifier_int8.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**info, "task": "brightness"}))
    model = load_model(path)
    records = list(run_frames(model, [Frame("a.jpg", 0, decode_image(real_jpeg))]))
    assert records[0].ok and records[0].to_dict()["result"]["brightness"] >= 0
