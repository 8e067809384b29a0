"""Statistics on known samples. Percentile definition: linear interpolation between closest
ranks (Hyndman-Fan type 7, numpy's default): h = (n - 1) p / 100, x[floor h] + frac(h) * gap."""

import math

import numpy as np
import pytest

from edgecell.benchmarks import stats

TEN = [7.0, 3.0, 10.0, 1.0, 5.0, 2.0, 9.0, 4.0, 8.0, 6.0]  # 1..10, shuffled


def test_known_sample_one_to_ten():
    s = stats.summarize(TEN)
    assert s["n"] == 10
    assert s["median"] == pytest.approx(5.5)
    assert s["p90"] == pytest.approx(9.1)  # h = 8.1 -> 9 + 0.1 * (10 - 9)
    assert s["p99"] == pytest.approx(9.91)  # h = 8.91
    assert s["q1"] == pytest.approx(3.25)  # h = 2.25
    assert s["q3"] == pytest.approx(7.75)  # h = 6.75
    assert s["iqr"] == pytest.approx(4.5)
    assert s["min"] == 1.0 and s["max"] == 10.0
    assert s["mean"] == pytest.approx(5.5)
    assert s["std"] == pytest.approx(math.sqrt(82.5 / 9))
    assert s["noise"] == pytest.approx(4.5 / 5.5)


def test_odd_count_and_single_sample():
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.percentile([3.0, 1.0, 2.0], 90) == pytest.approx(2.8)
    one = stats.summarize([4.2])
    assert one["median"] == one["p90"] == one["p99"] == one["min"] == one["max"] == 4.2
    assert one["iqr"] == 0.0 and one["std"] == 0.0


def test_long_tail_p99_sees_outlier_median_does_not():
    data = [1.0] * 98 + [50.0, 100.0]
    s = stats.summarize(data)
    assert s["median"] == 1.0 and s["p90"] == 1.0
    assert s["p99"] == pytest.approx(50.0 + 0.01 * 50.0)  # h = 98.01
    assert s["max"] == 100.0


@pytest.mark.parametrize("p", [0, 10, 25, 50, 75, 90, 99, 100])
def test_agrees_with_numpy_linear(p):
    rng = np.random.default_rng(3)
    data = rng.lognormal(1.0, 0.5, 257).tolist()
    assert stats.percentile(data, p) == pytest.approx(float(np.percentile(data, p, method="linear")))


def test_bad_input():
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)
    with pytest.raises(ValueError):
        stats.median([1.0, float("nan")])


def test_ratios_and_throughput():
    assert stats.ratio(2.0, 4.0) == 0.5
    assert stats.ratio(None, 4.0) is None and stats.ratio(1.0, 0.0) is None
    assert stats.throughput(100, 500.0, 1e-3) == pytest.approx(200.0)  # 100 runs in 500 ms
    assert stats.within(1.09, 1.0, 0.10) and not stats.within(1.11, 1.0, 0.10)
