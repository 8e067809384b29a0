from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecell.errors import ModelError
from edgecell.modelinfo import ModelInfo
from edgecell.tasks import rbc

# two stumps on feature 1 (x <= 0.5: -1, else +2) and feature 0 (x <= 0.25: +0.5, else -0.5),
# nodes concatenated, children global, as train_rbc.export_trees writes them
TREES = {"init": 0.25, "learning_rate": 0.1, "depth": 1, "roots": [0, 3],
         "feature": [1, -1, -1, 0, -1, -1], "threshold": [0.5, 0, 0, 0.25, 0, 0],
         "left": [1, -1, -1, 4, -1, -1], "right": [2, -1, -1, 5, -1, -1],
         "value": [0, -1.0, 2.0, 0, 0.5, -0.5]}


def test_trees_decision_sums_the_leaf_of_every_tree():
    x = np.array([[0.1, 0.4], [0.3, 0.9], [0.25, 0.5]], np.float32)
    expected = 0.25 + 0.1 * np.array([-1 + 0.5, 2 - 0.5, -1 + 0.5])  # a value equal to the threshold goes left
    np.testing.assert_allclose(rbc.trees_decision(x, TREES), expected, atol=1e-12)
    np.testing.assert_allclose(rbc.trees_probability(x, TREES), 1 / (1 + np.exp(-expected)), atol=1e-6)


def test_cut_patches_centres_the_cell_and_pads_the_border_grey():
    image = np.zeros((120, 160, 3), np.uint8)
    image[58:62, 78:82] = 255  # a bright dot at (80, 60)
    patches = rbc.cut_patches(image, np.array([[80, 60], [0, 0]]), crop=40, size=20)
    assert patches.shape == (2, 20, 20, 3) and patches.dtype == np.uint8
    assert np.unravel_index(patches[0, :, :, 0].argmax(), (20, 20)) in {(9, 9), (9, 10), (10, 9), (10, 10)}
    assert (patches[1, :5, :5] == rbc.PAD_VALUE).all()  # above and left of the field: grey
    assert rbc.cut_patches(image, np.zeros((0, 2))).shape == (0, rbc.PATCH_SIZE, rbc.PATCH_SIZE, 3)


def test_centres_in_patches_is_a_square_of_the_crop():
    centres = np.array([[100, 100]], np.float32)
    others = np.array([[100, 100], [139, 139], [141, 100], [60.5, 100]], np.float32)
    assert rbc.centres_in_patches(centres, others, crop=80).tolist() == [[True, True, False, True]]


def test_model_without_rbc_settings_is_refused_with_the_fix():
    info = ModelInfo(task="rbc", name="bare", labels=["normal"])
    with pytest.raises(ModelError, match="re-export it with edgecell.convert.train_rbc"):
        rbc.check_info(info)


def test_a_cell_holds_the_types_that_reach_their_own_threshold():
    info = ModelInfo(task="rbc", name="t", labels=["normal", "microcyte"],
                     settings={"detector": "x", "classes": ["normal", "microcyte"], "abnormal_trees": TREES,
                               "type_thresholds": {"microcyte": 0.8}})  # normal: no threshold chosen, 0.5
    type_probs = np.array([[0.6, 0.7], [0.4, 0.9]])
    logits = np.hstack([np.log(type_probs / (1 - type_probs)), [[2, 0], [0, 2]]])  # type logits, own-class logits
    outputs = {"centres": np.zeros((2, 2), np.float32), "scores": np.ones(2, np.float32), "logits": logits}
    cells = rbc.postprocess(outputs, None, info).cells
    assert [c.present for c in cells] == [["normal"], ["microcyte"]]


def _outputs(abnormal_logit: list[float]) -> dict:
    """Two-type model outputs whose abnormal trees give sigmoid(0.25 + 0.1 * leaf) per cell."""
    n = len(abnormal_logit)
    logits = np.hstack([np.tile([[-3.0, 3.0]], (n, 1)) * np.sign(np.array(abnormal_logit))[:, None], np.zeros((n, 2))])
    return {"centres": np.zeros((n, 2), np.float32), "scores": np.ones(n, np.float32), "logits": logits}


def _info(**settings) -> ModelInfo:
    return ModelInfo(task="rbc", name="t", labels=["normal", "burr"],
                     settings={"detector": "x", "classes": ["normal", "burr"], "abnormal_trees": TREES,
                               "abnormal_types": ["burr"], **settings})


def test_mean_probability_smear_score_is_the_mean_of_the_cells_abnormal_probabilities():
    result = rbc.postprocess(_outputs([1, -1, -1]), None, _info(smear_score="mean_probability"))
    assert abs(result.abnormal_score - np.mean([c.abnormal for c in result.cells])) < 1e-9


def test_smear_score_near_the_cut_is_borderline_and_needs_attention():
    probe = rbc.postprocess(_outputs([1, -1, -1]), None, _info(smear_score="mean_probability")).abnormal_score
    result = rbc.postprocess(_outputs([1, -1, -1]), None, _info(smear_score="mean_probability",
                                                                  smear_min_fraction=probe + 0.01, smear_borderline=0.02))
    assert result.borderline and not result.abnormal and result.needs_attention and "borderline" in result.summary()


def _score(precision: str, **settings) -> float:
    info = _info(smear_score="mean_probability", **settings)
    info.precision = precision
    return rbc.postprocess(_outputs([1, -1, -1]), None, info).abnormal_score


def test_int8_smear_offset_is_added_to_an_int8_files_score():
    assert abs(_score("int8", int8_smear_offset=-0.1) - (_score("int8") - 0.1)) < 1e-9


def test_int8_smear_offset_is_ignored_for_an_fp32_file():
    assert _score("fp32", int8_smear_offset=-0.1) == _score("fp32")


def test_int8_smear_offset_decides_the_flag():
    base = _score("int8")
    info = _info(smear_score="mean_probability", smear_min_fraction=base - 0.02, int8_smear_offset=-0.05)
    info.precision = "int8"
    assert not rbc.postprocess(_outputs([1, -1, -1]), None, info).abnormal


def _smear(n_cells: int = 0, radius: int = 20) -> np.ndarray:
    """A flat light background with `n_cells` pink discs on a grid."""
    image = np.full((480, 640, 3), (200, 205, 215), np.uint8)
    for k in range(n_cells):
        cx, cy = 60 + (k % 6) * 100, 60 + (k // 6) * 90
        cv2.circle(image, (cx, cy), radius, (170, 90, 120), -1)
    return image


def test_smear_whose_stain_the_found_cells_explain_is_familiar():
    check = rbc.check_smear(_smear(24), n_cells=24, radius=20)
    assert check.familiar and 0.8 < check.coverage < 1.3


def test_stained_area_without_found_cells_is_unfamiliar():
    check = rbc.check_smear(_smear(24), n_cells=2, radius=20)
    assert not check.familiar and "stained area" in check.reason


def test_varying_background_is_unfamiliar():
    photo = np.tile(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], (480, 1, 3))
    check = rbc.check_smear(photo, n_cells=0, radius=20)
    assert not check.familiar and "background varies" in check.reason


def test_field_without_cells_is_familiar_and_empty():
    assert rbc.check_smear(_smear(0), n_cells=0, radius=20).familiar


# ----------------------------------------------------------------------------- the shipped model

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "edge" / "models" / "rbc_int8.tflite"
SAMPLES = REPO / "edge" / "samples"


@pytest.fixture(scope="module")
def shipped():
    from edgecell.model import load_model

    if not SHIPPED.is_file():
        pytest.skip("rbc model not shipped")
    return load_model(SHIPPED)


def _run(model, image):
    from edgecell.pipeline import predict

    return predict(model, image)[0]


def _run_with(model, image, **options):
    from edgecell.pipeline import predict

    return predict(model, image, **options)[0]


def test_stomatocyte_smear_is_flagged_with_its_type(shipped):
    from edgecell.images import decode_image

    result = _run(shipped, decode_image(SAMPLES / "chula" / "chula_302.jpg"))
    assert result.abnormal and not result.uncertain and "stomatocyte" in result.reason
    cell = result.to_dict()["cells"][0]
    assert 0 <= cell["x"] < 640 and 0 <= cell["y"] < 480 and set(cell["types"]) == set(shipped.info.labels)


def test_smear_without_red_cells_gives_no_cells_and_no_flag(shipped):
    result = _run(shipped, _smear(0))
    assert result.cells == [] and not result.abnormal and not result.uncertain


def test_product_photo_is_uncertain_not_invented_cells(shipped):
    from edgecell.images import decode_image

    photo = next((SAMPLES / "products").glob("hat_*.jpg"))
    result = _run(shipped, decode_image(photo))
    assert result.uncertain and result.cells == [] and "not a smear" in result.uncertain_reason


def test_product_photo_is_unfamiliar_as_every_task_says_it(shipped):
    from edgecell.images import decode_image

    result = _run(shipped, decode_image(next((SAMPLES / "products").glob("hat_*.jpg"))))
    assert result.unfamiliar and result.message.startswith("not assessed") and result.verdict() == "not assessed"


def test_stomatocyte_smear_verdict_names_the_type(shipped):
    from edgecell.images import decode_image

    result = _run(shipped, decode_image(SAMPLES / "chula" / "chula_302.jpg"))
    assert result.verdict() == "ABNORMAL (stomatocyte)" and not result.unfamiliar


def test_blood_counts_come_from_the_shipped_counter_on_the_same_field(shipped):
    from edgecell.images import decode_image

    result = _run_with(shipped, decode_image(SAMPLES / "chula" / "chula_1.jpg"), blood_counts=True)
    assert set(result.blood_counts.counts) == {"RBC", "WBC", "Platelets"} and result.blood_counts.counts["RBC"] > 50
    assert result.csv_row()["blood_counts_RBC"] == result.blood_counts.counts["RBC"]


def test_without_blood_counts_the_counter_does_not_run(shipped):
    from edgecell.images import decode_image

    result = _run(shipped, decode_image(SAMPLES / "chula" / "chula_1.jpg"))
    assert result.blood_counts is None and "blood_counts" not in result.to_dict()


def test_rbc_bundle_files_include_the_cell_counter():
    from edgecell.modelinfo import sidecar_path
    from edgecell.tasks import get_task
    import json

    side = sidecar_path(SHIPPED)
    files = get_task("rbc").companion_files(side, json.loads(side.read_text()))
    assert any(p.name == "cells_int8.tflite" for p in files) and any(p.name == "rbc_centres_int8.tflite" for p in files)


def test_patches_are_classified_independently_of_their_batch_neighbours(shipped):
    from edgecell.images import decode_image

    image = decode_image(SAMPLES / "chula" / "chula_12.jpg")
    centres = np.array([[100 + 20 * k, 200] for k in range(rbc.patch_batch(shipped.info) + 1)], np.float32)
    patches = rbc.cut_patches(image, centres, crop=int(shipped.info.settings.get("patch_crop", rbc.PATCH_CROP)),
                              size=int(shipped.info.input_size[0]))
    together = rbc.patch_outputs(shipped.session, patches, shipped.info)
    last_alone = rbc.patch_outputs(shipped.session, patches[-1:], shipped.info)
    for all_, one in zip(together, last_alone):  # the logits output, and the pooled features where there are
        if one is not None:
            np.testing.assert_allclose(all_[-1], one[0], atol=1e-6)


def test_context_head_replaces_its_types_with_the_field_relative_logistic():
    head = {"features": 2, "weights": [[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]], "bias": [0.0, 0.0, 0.0],
            "context": {"types": ["b"], "mean": [0, 0, 0, 0], "std": [1, 1, 1, 1], "weights": [[0], [0], [2.0], [0]],
                        "bias": [0.5]}}
    info = ModelInfo(task="rbc", name="t", labels=["a", "b"], settings={"classes": ["c"], "patch_head": head})
    features = np.array([[1.0, 3.0], [3.0, 1.0]], np.float32)  # field mean feature 0: 2.0
    logits = rbc.head_logits(features, info)
    np.testing.assert_allclose(logits[:, 0], [1.0, 3.0])  # "a": the CNN's own head
    np.testing.assert_allclose(logits[:, 1], [2 * (1 - 2) + 0.5, 2 * (3 - 2) + 0.5])  # "b": relative to the field
    np.testing.assert_allclose(logits[:, 2], [2.0, 2.0])  # own class: the CNN's head
