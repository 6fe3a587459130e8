"""The request-rate predictor on synthetic series: Holt's trend, the seasonal naive
forecast, and per-second rates from cumulative counters."""

from __future__ import annotations

import math
import random

import pytest
from wasmop.operator.predictor import (
    RateHistory,
    holt,
    peak_forecast,
    replicas_for_rate,
    seasonal_naive,
)


def test_holt_on_a_constant_series_has_no_trend() -> None:
    level, trend = holt([20.0] * 30)
    assert level == pytest.approx(20.0)
    assert trend == pytest.approx(0.0)


def test_holt_learns_a_linear_ramp() -> None:
    """A ramp of 2 requests/s per second: after a while the trend is the slope and the
    forecast 10 s ahead is where the ramp will be (within a few percent)."""
    ramp = [5.0 + 2.0 * t for t in range(60)]
    _, trend = holt(ramp)
    assert trend == pytest.approx(2.0, rel=0.02)
    forecast = peak_forecast(ramp, 10)
    assert forecast is not None
    assert forecast.rate == pytest.approx(ramp[-1] + 2.0 * 10, rel=0.03)
    assert forecast.model == "Holt"


def test_holt_forecast_beats_the_last_value_on_a_noisy_ramp() -> None:
    """On a noisy ramp the 10-second-ahead forecast errs far less than assuming the load
    stays where it is (what a purely reactive scaler provisions for)."""
    rng = random.Random(7)
    truth = [10.0 + 1.5 * t for t in range(120)]
    noisy = [max(0.0, v + rng.gauss(0, 3)) for v in truth]
    errors_holt, errors_naive = [], []
    for end in range(30, 110):
        forecast = peak_forecast(noisy[:end], 10)
        assert forecast is not None
        actual = truth[end - 1 + 10]
        errors_holt.append(abs(forecast.rate - actual))
        errors_naive.append(abs(noisy[end - 1] - actual))
    assert sum(errors_holt) < 0.4 * sum(errors_naive)


def test_a_falling_trend_never_forecasts_below_the_level() -> None:
    falling = [100.0 - 2 * t for t in range(40)]
    forecast = peak_forecast(falling, 10)
    assert forecast is not None
    assert forecast.trend is not None and forecast.trend < 0
    assert forecast.rate == pytest.approx(forecast.level)


def test_seasonal_naive_repeats_the_last_season() -> None:
    season = [0.0, 10.0, 20.0, 10.0]
    series = season * 3
    assert seasonal_naive(series, 4, 4) == season
    # A horizon longer than the season repeats the forecast itself.
    assert seasonal_naive(series, 4, 6) == [*season, 0.0, 10.0]
    assert seasonal_naive(series[:3], 4, 2) is None


def test_seasonal_forecast_anticipates_the_next_peak() -> None:
    """A sine of period 60 s: 5 s before the peak the seasonal forecast already sees it,
    while Holt (trend only) sees less."""
    period = 60

    def rate(t: int) -> float:
        return 30 + 25 * math.sin(2 * math.pi * t / period)

    series = [rate(t) for t in range(2 * period + 10)]  # now: 10 s into the third season
    peak = max(rate(t) for t in range(len(series), len(series) + 10))
    seasonal = peak_forecast(series, 10, model="SeasonalNaive", season_s=period)
    assert seasonal is not None and seasonal.model == "SeasonalNaive"
    assert seasonal.rate == pytest.approx(peak, rel=0.01)


def test_seasonal_falls_back_to_holt_until_a_season_is_seen() -> None:
    forecast = peak_forecast([1.0, 2.0, 3.0], 5, model="SeasonalNaive", season_s=60)
    assert forecast is not None and forecast.model == "Holt"
    assert peak_forecast([], 5) is None


def test_rate_history_turns_counter_readings_into_per_second_rates() -> None:
    history = RateHistory()
    count = 0.0
    # 10 requests/s for 5 s, then 40/s for 5 s, read every 250 ms.
    for step in range(41):
        t = step * 0.25
        history.add(t, count)
        count += (10 if t < 5 else 40) * 0.25
    assert history.series() == pytest.approx([10] * 5 + [40] * 5)


def test_rate_history_spreads_a_sparse_reading_over_its_seconds() -> None:
    history = RateHistory()
    history.add(0.0, 0)
    history.add(3.0, 30)  # a missed scrape or two: 30 requests over 3 s
    assert history.series() == pytest.approx([10, 10, 10])


def test_rate_history_starts_over_when_the_counter_goes_back() -> None:
    history = RateHistory()
    history.add(0.0, 100)
    history.add(2.0, 120)
    history.add(3.0, 5)  # the gateway restarted
    assert history.series() == []
    history.add(4.0, 15)
    assert history.series() == pytest.approx([10])


def test_rate_history_is_bounded() -> None:
    history = RateHistory(capacity=5)
    for t in range(20):
        history.add(float(t), float(t))
    assert len(history.series()) == 5


def test_replicas_for_rate() -> None:
    assert replicas_for_rate(0, 10) == 0
    assert replicas_for_rate(10, 10) == 1
    assert replicas_for_rate(10.5, 10) == 2
    with pytest.raises(ValueError):
        replicas_for_rate(1, 0)
