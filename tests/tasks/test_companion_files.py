"""Task.companion_files: a setting that names a file beside the sidecar is a companion (a bundle
copies it); a long note in the settings (the cells counter's `thresholds_chosen_on`) is not a file
name and must not break the bundle (it used to raise 'File name too long')."""

from __future__ import annotations

import json

from edgecell.tasks import get_task


def test_long_note_in_the_settings_is_skipped_a_file_beside_is_found(tmp_path):
    (tmp_path / "head.npz").write_bytes(b"x")
    meta = {"task": "cells", "settings": {"thresholds_chosen_on": "held-out smears, " * 20, "head": "head.npz"}}
    sidecar = tmp_path / "m.json"
    sidecar.write_text(json.dumps(meta))
    assert get_task("cells").companion_files(sidecar, meta) == [tmp_path / "head.npz"]
