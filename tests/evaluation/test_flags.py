"""The eval report counts the images each model flagged (unfamiliar, uncertain)."""

import shutil
from pathlib import Path

import pytest

from edgecell.evaluation.classification import evaluate_classifier, markdown_report
from edgecell.evaluation.flags import FlagTally, flag_lines

SAMPLES = Path(__file__).resolve().parents[2] / "edge" / "samples"
PRODUCTS = SAMPLES.parent / "models" / "products_int8.tflite"


@pytest.fixture()
def products_split_with_a_smear(tmp_path):
    """A test split of three shipped-dataset product photos and the shipped hat sample, plus one
    blood smear filed under "hat": the smear is the one image unlike the model's training photos."""
    from edgecell.calibration import dataset_dir

    test = dataset_dir("clothing_small_subset") / "test"
    for folder in ("shoes", "pants"):
        (tmp_path / "data" / "test" / folder).mkdir(parents=True)
        for image in sorted((test / folder).glob("*.jpg"))[:1 + (folder == "shoes")]:
            shutil.copy(image, tmp_path / "data" / "test" / folder / image.name)
    (tmp_path / "data" / "test" / "hat").mkdir()
    shutil.copy(next((SAMPLES / "products").glob("hat_*.jpg")), tmp_path / "data" / "test" / "hat")
    shutil.copy(sorted((SAMPLES / "bccd").glob("*.jpg"))[0], tmp_path / "data" / "test" / "hat" / "smear.jpg")
    return tmp_path / "data"


def test_products_eval_counts_the_smear_as_the_one_unfamiliar_image(products_split_with_a_smear, tmp_path):
    report = evaluate_classifier([PRODUCTS], products_split_with_a_smear, tmp_path / "out")
    flags = report["models"]["litert-int8"]["flags"]
    assert (flags["images"], flags["unfamiliar"]) == (5, 1)
    assert flags["uncertain"] >= 1  # an unfamiliar image is uncertain too


def test_markdown_report_says_how_many_images_were_flagged_unfamiliar(products_split_with_a_smear, tmp_path):
    report = evaluate_classifier([PRODUCTS], products_split_with_a_smear, tmp_path / "out")
    assert "flagged unfamiliar: 1 of 5 images (20.0 %)" in markdown_report(report)


def test_a_flag_the_results_do_not_carry_is_left_out():
    class RbcLike:
        uncertain = True

    tally = FlagTally()
    tally.add(RbcLike())
    tally.add(RbcLike())
    assert tally.as_dict() == {"images": 2, "uncertain": 2}
    assert flag_lines(tally.as_dict()) == ["flagged uncertain: 2 of 2 images (100.0 %)"]
