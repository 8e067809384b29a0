"""The plain words the page shows for each kind of record."""

from edgecell.live.words import CHECK, ERROR, OK, RETAKE, describe, source_label

CELLS = {"source": "a/smear.jpg", "ok": True, "task": "cells",
         "result": {"counts": {"RBC": 18, "WBC": 1, "Platelets": 3}, "total": 22}}
XRAY = {"source": "film.png", "ok": True, "task": "xray",
        "result": {"label": "Normal", "confidence": 0.91, "probabilities": {"Normal": 0.91, "COVID-19": 0.06,
                   "Viral Pneumonia": 0.03}, "uncertain": False, "retake": False, "message": "",
                   "gradcam": {"class": "Normal"}}}


def test_counts_are_the_headline_and_tiles():
    words = describe(CELLS)
    assert (words.headline, words.level) == ("RBC 18   WBC 1   Platelets 3", OK)
    assert words.figures == [("RBC", 18), ("WBC", 1), ("Platelets", 3)]


def test_xray_class_with_percent_and_heatmap_line():
    words = describe(XRAY)
    assert words.headline == "Normal  91 %"
    assert "Others: COVID-19 6 %, Viral Pneumonia 3 %" in words.details
    assert any(line.startswith("Heatmap") for line in words.details)


def test_retake_comes_first_and_colours_red():
    record = {**XRAY, "result": {**XRAY["result"], "retake": True, "message": "underexposed: retake the film"}}
    words = describe(record)
    assert words.level == RETAKE
    assert words.flags[0] == "Retake the image: underexposed: retake the film"


def test_uncertain_and_unfamiliar_ask_for_a_check():
    record = {**CELLS, "result": {**CELLS["result"], "unfamiliar": True}}
    assert describe(record).level == CHECK
    assert describe(record).flags[0].startswith("Unfamiliar image")
    uncertain = {**XRAY, "result": {**XRAY["result"], "uncertain": True, "retake": True}}
    assert describe(uncertain).flags[1] == "Uncertain: check by hand"


def test_gate_rejection_says_retake_with_the_reason():
    record = {"source": "x.jpg", "ok": True, "task": "xray", "result": None, "action": "rejected",
              "gate": {"utility": 0.2, "threshold": 0.5, "useful": False, "reason": "utility 0.20 < 0.50"}}
    words = describe(record)
    assert (words.headline, words.level, words.flags) == ("Retake: image not usable", RETAKE, ["utility 0.20 < 0.50"])


def test_gate_flag_keeps_the_result_and_asks_for_a_check():
    record = {**CELLS, "action": "flagged", "gate": {"utility": 0.3, "threshold": 0.5, "useful": False}}
    words = describe(record)
    assert words.level == CHECK and words.headline.startswith("RBC 18") and words.flags[0].startswith("Image may be")


def test_unreadable_frame_is_an_error_with_its_message():
    words = describe({"source": "bad.jpg", "ok": False, "error": "bad.jpg: truncated JPEG"})
    assert (words.level, words.flags) == (ERROR, ["bad.jpg: truncated JPEG"])


def test_source_label_names_file_and_frame():
    assert source_label("/data/run/smear.jpg") == "smear.jpg"
    assert source_label("camera0#12") == "camera0 frame 12"
