"""The fleet deploy benchmark's arithmetic (the deploys themselves need sshd devices: see tests/fleet)."""

from __future__ import annotations

import pytest

from edgecell.benchmarks.fleet_deploy import KindResult, main


def test_summary_compares_medians_with_the_targets():
    result = KindResult("pi", "raspberry-pi", 76.9, 21, venv_built=False, one_s=[20.0, 16.0, 18.0],
                        three_s=[27.0, 30.0, 26.0], redeploy_s=[9.0, 12.0, 9.5])
    summary = result.summary()
    assert (summary["one_median_s"], summary["three_median_s"], summary["redeploy_median_s"]) == (18.0, 27.0, 9.5)
    assert summary["three_over_one"] == 1.5 and summary["ratio_target_met"] is True
    assert summary["three_over_one_per_run"] == [1.35, 1.88, 1.44] and summary["three_over_one_per_run_median"] == 1.44
    assert summary["redeploy_target_met"] is True


def test_unknown_kind_is_refused_before_anything_is_built(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--kinds", "jetson"])
    assert exc.value.code == 2 and "--kinds" in capsys.readouterr().err
