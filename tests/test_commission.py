"""edgecell.commission: local validation on a site's labelled films (runtime side, no TensorFlow),
on the tiny fixture classifier and synthetic films whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecell import commission as cm
from edgecell.errors import EdgecellError

FIXTURE = Path(__file__).parent / "fixtures" / "models" / "tiny_classifier_int8.tflite"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture()
def site(tmp_path):
    """Nine films (three per colour) and a labels.csv that gets one of them wrong on purpose."""
    films = tmp_path / "films"
    films.mkdir()
    rows = ["file,label,comment"]
    rng = np.random.default_rng(0)
    for label, rgb in COLOURS.items():
        for k in range(3):
            image = np.clip(np.array(rgb) + rng.normal(0, 10, (40, 40, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(films / f"{label}{k}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            rows.append(f"{label}{k}.png,{'red' if (label, k) == ('blue', 2) else label},x")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return films, tmp_path / "labels.csv"


def test_report_counts_the_wrong_film_and_writes_its_files(site, tmp_path):
    from edgecell.model import load_model

    films, labels = site
    model = load_model(FIXTURE)
    report = cm.commission_report(model, cm.read_labels(labels, films, model.info.labels))
    assert report.films == 9 and report.accuracy == pytest.approx(8 / 9)
    assert [w["file"] for w in report.wrong] == ["blue2.png"] and report.wrong[0]["answer"] == "blue"
    assert report.accuracy_ci95[0] < 8 / 9 < report.accuracy_ci95[1]
    assert np.asarray(report.confusion).sum() == 9 and report.confusion[0][2] == 1
    paths = cm.write_report(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["films"] == 9
    assert "blue2.png" in paths["wrong"].read_text() and "Accuracy 88.9 %" in paths["md"].read_text()
    assert paths["png"].stat().st_size > 1000


@pytest.mark.parametrize("csv_text, words", [
    ("name,finding\nred0.png,red\n", "columns file,label"),
    ("file,label\nred0.png,purple\n", "label 'purple' is not one of the model's labels"),
    ("file,label\nnothere.png,red\n", "film 'nothere.png' not found"),
    ("file,label\n", "no films listed"),
])
def test_bad_labels_file_is_one_clear_error(site, tmp_path, csv_text, words):
    films, _ = site
    bad = tmp_path / "bad.csv"
    bad.write_text(csv_text)
    with pytest.raises(EdgecellError) as err:
        cm.read_labels(bad, films, ["red", "green", "blue"])
    assert words in str(err.value) and "\n" not in str(err.value)


def test_wilson_interval_is_sound_at_the_edges():
    lo, hi = cm.wilson_interval(10, 10)
    assert hi == 1.0 and 0.69 < lo < 0.73  # 10/10: 95 % interval about 0.72-1
    lo, hi = cm.wilson_interval(8, 10)
    assert lo == pytest.approx(0.490, abs=0.002) and hi == pytest.approx(0.943, abs=0.002)
    assert cm.wilson_interval(0, 0) == (0.0, 1.0)


def _outcome(correct: bool, score: float, confidence: float) -> cm.FilmOutcome:
    return cm.FilmOutcome("f", "a", "a" if correct else "b", confidence, False, False, score, "")


def test_site_thresholds_keep_three_quarters_of_right_answers_unflagged():
    outcomes = [_outcome(True, s, 0.9) for s in range(1, 9)] + [_outcome(False, 20, 0.5), _outcome(False, 3, 0.95)]
    t = cm.site_thresholds(outcomes, {"unfamiliar_threshold": 5.0})
    right_scores = np.arange(1, 9)
    assert (right_scores > t["suggested_unfamiliar_threshold"]).mean() <= 0.25
    assert t["wrong_caught_at_suggested_unfamiliar"] == 0.5  # the far one, not the near one
    assert t["wrong_caught_at_suggested_min_confidence"] == 0.5



def _report(wrong: list[str], films: int = 100) -> cm.CommissionReport:
    return cm.CommissionReport(model="m", films=films, labels=["a", "b"], accuracy=1 - len(wrong) / films,
                               accuracy_ci95=(0.0, 1.0), confusion=[[0, 0], [0, 0]], flagged={}, site_thresholds={},
                               wrong=[{"file": f} for f in wrong])


@pytest.mark.parametrize("before, after, verdict", [
    ([f"f{i}" for i in range(30)], [f"f{i}" for i in range(10)], "better"),
    ([f"f{i}" for i in range(10)], [f"f{i}" for i in range(30)], "worse"),
    ([f"f{i}" for i in range(10)], [f"f{i}" for i in range(2, 12)], "no clear change"),
])
def test_site_model_is_judged_by_the_films_that_change_answer(before, after, verdict):
    change = cm.paired_change(_report(before), _report(after))
    assert change.verdict == verdict and verdict.split()[0].upper() in change.message.upper()
    assert change.gained - change.lost == len(before) - len(after)
