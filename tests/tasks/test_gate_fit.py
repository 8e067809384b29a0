"""A gate is trained for one task model (its sidecar records that file's SHA-256): in front of
another model the run says so, rather than letting the user trust unmeasured decisions."""

from __future__ import annotations

from edgecell.modelinfo import read_model_info
from edgecell.resources import shipped_path
from edgecell.tasks.gate import task_model_mismatch


def gate_info(name: str):
    return read_model_info(shipped_path("models", f"{name}_int8.tflite"))


def test_gate_in_front_of_the_model_it_was_trained_for_fits():
    assert task_model_mismatch(gate_info("gate_products"), shipped_path("models", "products_int8.tflite")) is None


def test_gate_in_front_of_another_model_is_named_a_mismatch():
    message = task_model_mismatch(gate_info("gate_products"), shipped_path("models", "cells_int8.tflite"))
    assert message is not None and "cells_int8.tflite" in message and "unmeasured" in message


def test_gate_in_front_of_a_sibling_of_its_task_model_fits():
    """`edgecell run products -b openvino --gate gate_products` runs products_int8.xml, made from the
    .tflite the gate was trained for: no warning that would make every OpenVINO run look unmeasured."""
    for suffix in (".xml", ".onnx"):
        assert task_model_mismatch(gate_info("gate_products"), shipped_path("models", "products_int8" + suffix)) is None
