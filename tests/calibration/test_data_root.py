"""Where the datasets are found: --data, then $EDGECELL_DATA, then ../shared/data; relative paths
become absolute (links made from them stay valid); a miss says what was tried."""

import os

import pytest

from edgecell.calibration import data_root, dataset_dir
from edgecell.errors import EdgecellError


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "datasets"
    (root / "cbc_bccd_cleaned").mkdir(parents=True)
    return root


def test_relative_data_folder_becomes_absolute(data, monkeypatch):
    monkeypatch.chdir(data.parent)
    found = data_root("datasets")
    assert found.is_absolute() and found == data


def test_environment_variable_is_used_without_data_option(data, monkeypatch):
    monkeypatch.setenv("EDGECELL_DATA", str(data))
    assert dataset_dir("cbc_bccd_cleaned") == data / "cbc_bccd_cleaned"


def test_explicit_folder_wins_over_the_environment(data, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("EDGECELL_DATA", str(other))
    assert data_root(data) == data


def test_missing_explicit_folder_is_an_error_not_a_fall_back(data, monkeypatch):
    monkeypatch.setenv("EDGECELL_DATA", str(data))
    with pytest.raises(EdgecellError, match="--data nowhere: no such folder"):
        data_root("nowhere")


def test_shared_data_beside_the_current_folder(tmp_path, monkeypatch):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "repo").mkdir()
    monkeypatch.delenv("EDGECELL_DATA", raising=False)
    monkeypatch.chdir(tmp_path / "repo")
    assert data_root() == tmp_path / "shared" / "data"


def test_a_miss_names_every_place_tried(tmp_path, monkeypatch):
    import edgecell.calibration as calibration

    monkeypatch.delenv("EDGECELL_DATA", raising=False)
    monkeypatch.setattr(calibration, "source_checkout", lambda: None)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with pytest.raises(EdgecellError) as err:
        data_root()
    message = str(err.value)
    assert "$EDGECELL_DATA (not set)" in message and os.path.join(str(tmp_path), "shared", "data") in message
