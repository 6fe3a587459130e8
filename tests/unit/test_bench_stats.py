"""Confidence intervals: the percentile bootstrap for statistics, Wilson for proportions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from wasmop.bench.stats import (
    MIN_BOOTSTRAP_N,
    STATISTICS,
    bootstrap_intervals,
    describe,
    proportion,
    wilson_interval,
)


def test_every_statistic_gets_an_interval_around_it() -> None:
    values = np.random.default_rng(7).lognormal(mean=5, sigma=0.4, size=300)
    stats = describe(values, ci=True)
    for name in STATISTICS:
        low, high = stats[f"{name}_ci_low"], stats[f"{name}_ci_high"]
        assert low <= high, name
        if name not in ("min", "max"):
            assert low < stats[name] < high, name
    # The median of 300 values is known to within a few per cent, not exactly.
    assert stats["p50_ci_high"] / stats["p50_ci_low"] < 1.2


def test_the_bootstrap_is_seeded_and_does_not_touch_global_randomness() -> None:
    values = list(range(50))
    np.random.seed(1)
    before = np.random.random()
    np.random.seed(1)
    assert bootstrap_intervals(values) == bootstrap_intervals(values)
    assert np.random.random() == before


def test_the_interval_narrows_as_observations_grow() -> None:
    rng = np.random.default_rng(3)
    few = describe(rng.normal(100, 10, size=20), ci=True)
    many = describe(rng.normal(100, 10, size=2000), ci=True)
    width = lambda s: s["p50_ci_high"] - s["p50_ci_low"]  # noqa: E731
    assert width(many) < width(few) / 4


def test_the_mean_interval_covers_the_true_mean_about_95_times_in_100() -> None:
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(200):
        sample = rng.exponential(scale=10.0, size=60)
        low, high = bootstrap_intervals(sample, resamples=400)["mean"]
        covered += low <= 10.0 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_too_few_observations_get_no_interval() -> None:
    stats = describe(range(MIN_BOOTSTRAP_N - 1), ci=True)
    assert stats["n"] == MIN_BOOTSTRAP_N - 1 and not math.isnan(stats["p50"])
    assert math.isnan(stats["p50_ci_low"]) and math.isnan(stats["max_ci_high"])
    assert bootstrap_intervals([]) == {}
    assert not any(key.endswith("_ci_low") for key in describe([1.0, 2.0]))


def test_wilson_interval_known_values() -> None:
    # 8 of 10: Wilson gives [0.490, 0.943] (the normal approximation would reach 1.05).
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    # No failure in 1,000 still leaves room for about 4 in 1,000.
    low, high = wilson_interval(1000, 1000)
    assert high == 1.0 and low == pytest.approx(0.99617, abs=1e-5)
    low, high = wilson_interval(0, 1000)
    assert low == 0.0 and high == pytest.approx(0.00383, abs=1e-5)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_proportion_is_value_n_and_interval() -> None:
    described = proportion(999, 1000)
    assert described["value"] == 0.999 and described["n"] == 1000
    assert described["value_ci_low"] < 0.999 < described["value_ci_high"]
