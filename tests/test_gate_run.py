"""`edgecell run --gate`: the gate runs first and its policy decides. The gate here is the tiny
fixture classifier relabelled as a gate (utility = its last class score), a real model run."""

import json

import pytest

from test_cli import edgecell


@pytest.fixture()
def gate_and_task(tmp_path, classifier):
    gate = tmp_path / "gate_int8.tflite"
    gate.write_bytes(classifier.read_bytes())
    meta = json.loads(classifier.with_suffix(".json").read_text())
    meta.update(task="gate", labels=["not_useful", "useful"], settings={"threshold": 0.5, "for_task": "classify"})
    gate.with_suffix(".json").write_text(json.dumps(meta))
    return gate, classifier


from test_cli import classifier  # noqa: E402,F401  (module fixture reused)


def _records(folder):
    return [json.loads(l) for l in (folder / "results.jsonl").read_text().splitlines()]


def test_reject_policy_lists_the_image_with_its_reason(gate_and_task, real_jpeg, tmp_path):
    gate, task = gate_and_task
    out = edgecell("run", task, real_jpeg, "--gate", gate, "--gate-threshold", "1.01", "-o", tmp_path / "o")
    assert out.returncode == 0, out.stderr
    (record,) = _records(tmp_path / "o")
    assert record["action"] == "rejected" and record["result"] is None
    assert "retake" in record["gate"]["reason"] and 0.0 <= record["gate"]["utility"] <= 1.0


def test_flag_policy_runs_the_task_and_marks_it(gate_and_task, real_jpeg, tmp_path):
    gate, task = gate_and_task
    out = edgecell("run", task, real_jpeg, "--gate", gate, "--gate-threshold", "1.01", "--gate-policy", "flag",
                   "-o", tmp_path / "o")
    (record,) = _records(tmp_path / "o")
    assert out.returncode == 0 and record["action"] == "flagged" and record["result"]["label"]
    assert record["timings"]["gate_ms"] > 0


def test_useful_image_runs_normally_and_carries_its_score(gate_and_task, real_jpeg, tmp_path):
    gate, task = gate_and_task
    edgecell("run", task, real_jpeg, "--gate", gate, "--gate-threshold", "0", "-o", tmp_path / "o")
    (record,) = _records(tmp_path / "o")
    assert record["action"] == "ran" and record["gate"]["useful"] and record["result"]["label"]


def test_a_task_model_given_as_gate_is_refused(classifier, real_jpeg):
    out = edgecell("run", classifier, real_jpeg, "--gate", classifier)
    assert out.returncode == 2 and "expects a 'gate' model" in out.stderr


def test_unknown_policy_lists_the_choices(gate_and_task, real_jpeg):
    gate, task = gate_and_task
    out = edgecell("run", task, real_jpeg, "--gate", gate, "--gate-policy", "drop")
    assert out.returncode == 2 and "expected one of reject, flag, pass" in out.stderr
