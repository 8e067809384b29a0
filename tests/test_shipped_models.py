"""What edgecell ships: every model has a sidecar, a model card that states its SHA-256 and its
measured metrics, is small, and really runs on a shipped sample image."""

import hashlib
from pathlib import Path

import pytest

from edgecell.images import decode_image
from edgecell.model import load_model
from edgecell.pipeline import predict

MODELS = Path(__file__).resolve().parent.parent / "edge" / "models"
SAMPLES = Path(__file__).resolve().parent.parent / "edge" / "samples"
SHIPPED = sorted(MODELS.glob("*_int8.tflite"))
#: every shipped model file: the INT8 .tflite files and their OpenVINO IR (.xml + .bin) and ONNX siblings
MODEL_FILES = sorted(p for p in MODELS.iterdir() if p.suffix in (".tflite", ".xml", ".bin", ".onnx"))
SAMPLE_FOR = {"cells": "bccd", "products": "products", "gate": "products", "xray": None, "rbc": "chula"}


def test_the_default_cell_counter_ships():
    assert MODELS / "cells_int8.tflite" in SHIPPED
    assert MODELS / "cells_tinyyolov2_int8.tflite" in SHIPPED  # the paper's reproduction


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.name)
def test_model_card_states_the_files_sha256(path):
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cards = [c for c in MODELS.glob("*MODEL_CARD.md") if digest in c.read_text()]
    assert cards, f"no model card in {MODELS} states {path.name}'s SHA-256 {digest}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_model_is_small_int8_and_described(path):
    assert path.stat().st_size < 5_000_000
    model = load_model(path)
    assert model.info.task in SAMPLE_FOR and model.info.labels and model.info.metrics
    assert model.session.inputs[0].dtype == "int8"


@pytest.mark.parametrize("path", [p for p in SHIPPED if SAMPLE_FOR.get(load_model(p).info.task)], ids=lambda p: p.name)
def test_model_runs_on_a_shipped_sample(path):
    model = load_model(path)
    folder = SAMPLES / SAMPLE_FOR[model.info.task]
    image = decode_image(sorted(folder.glob("*.jpg"))[0])
    result, timings = predict(model, image)
    assert result.to_dict() and timings.infer > 0


def test_samples_carry_their_licence():
    for folder in (p for p in SAMPLES.iterdir() if p.is_dir()):
        assert (folder / "LICENSE_AND_SOURCE.md").is_file(), folder
