"""Forecasts of a function's request rate, for scaling out before the load arrives.

Two models, both a few lines of arithmetic a reader can check by hand:

* **Holt's linear trend** (double exponential smoothing). Each one-second sample ``y``
  updates a level and a trend::

      level_t = alpha * y_t + (1 - alpha) * (level_{t-1} + trend_{t-1})
      trend_t = beta * (level_t - level_{t-1}) + (1 - beta) * trend_{t-1}
      forecast_{t+h} = level_t + h * trend_t

  ``alpha = 0.5`` follows a change of level within a few seconds; ``beta = 0.2`` needs
  a rise to last several seconds before it counts as a trend, so one noisy second does
  not. For load that ramps up or down.
* **Seasonal naive**: the rate exactly one season (``seasonSeconds``) ago, for load that
  repeats (a daily cycle, compressed to a minute in the experiments). Until a whole
  season has been seen it falls back to Holt.

The autoscaler provisions for the *largest* forecast over the next ``horizonSeconds``
(:func:`peak_forecast`), never for less than the current rate, and only ever adds
replicas to what the reactive algorithm asks for (``hpa.decide``'s ``forecast``).
Samples are per-second rates built from the gateway's cumulative request counters
(:class:`RateHistory`), so a missed scrape loses no requests, only resolution.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "HOLT_ALPHA",
    "HOLT_BETA",
    "Forecast",
    "RateHistory",
    "holt",
    "peak_forecast",
    "seasonal_naive",
]

HOLT_ALPHA = 0.5
HOLT_BETA = 0.2
SAMPLE_S = 1.0  # one sample per second
HISTORY_S = 3600  # at most an hour of samples (one season of the longest allowed)


@dataclass(frozen=True)
class Forecast:
    """The largest expected rate over the horizon, and how it was made (for status)."""

    rate: float
    model: str
    samples: int
    level: float | None = None
    trend: float | None = None

    def describe(self) -> str:
        text = f"{self.model} forecast {self.rate:.3g}/s"
        if self.trend is not None:
            text += f" (level {self.level:.3g}/s, trend {self.trend:+.3g}/s per s)"
        return f"{text} from {self.samples} s of history"


def holt(
    series: Sequence[float], alpha: float = HOLT_ALPHA, beta: float = HOLT_BETA
) -> tuple[float, float]:
    """Level and trend after smoothing ``series`` (oldest first, at least one value)."""
    if not series:
        raise ValueError("holt needs at least one sample")
    if not (0 < alpha <= 1 and 0 <= beta <= 1):
        raise ValueError("alpha must lie in (0, 1] and beta in [0, 1]")
    level, trend = float(series[0]), 0.0
    for value in series[1:]:
        previous = level
        level = alpha * value + (1 - alpha) * (level + trend)
        trend = beta * (level - previous) + (1 - beta) * trend
    return level, trend


def seasonal_naive(series: Sequence[float], season: int, horizon: int) -> list[float] | None:
    """The values one season before each of the next ``horizon`` steps, or None while
    less than a season has been seen."""
    if season < 1 or horizon < 1:
        raise ValueError("season and horizon must be at least 1")
    if len(series) < season:
        return None
    n = len(series)
    # Step t + h (h = 1..horizon) repeats step t + h - season; past the end of the known
    # series (a horizon longer than the season) it repeats that step's own forecast.
    out: list[float] = []
    for h in range(1, horizon + 1):
        index = n + h - 1 - season
        while index >= n:
            index -= season
        out.append(float(series[index]))
    return out


def peak_forecast(
    series: Sequence[float],
    horizon_s: int,
    *,
    model: str = "Holt",
    season_s: int | None = None,
) -> Forecast | None:
    """The largest rate expected within ``horizon_s`` seconds, never below the latest
    smoothed level (a falling forecast must not hide the load of now). None without
    samples."""
    if not series:
        return None
    if model == "SeasonalNaive" and season_s:
        ahead = seasonal_naive(series, season_s, horizon_s)
        if ahead is not None:
            return Forecast(max(0.0, max(ahead), float(series[-1])), model, len(series))
    level, trend = holt(series)
    peak = level + max(0.0, trend) * horizon_s
    return Forecast(max(0.0, peak, level), "Holt", len(series), level=level, trend=trend)


@dataclass
class RateHistory:
    """Per-second request rates of one function, from cumulative counter readings.

    ``add(t, count)`` takes a reading of the gateway's cumulative request counter at
    monotonic time ``t``; every whole second between readings becomes one sample, the
    requests spread evenly over the time they arrived in. A counter that went backwards
    (the gateway restarted) starts the history over.
    """

    capacity: int = HISTORY_S
    samples: deque[float] = field(default_factory=deque)
    _last: tuple[float, float] | None = None  # (t, count) of the latest reading
    _partial: float = 0.0  # requests counted into the second under way
    _second_started: float | None = None

    def add(self, t: float, count: float) -> None:
        if self._last is None or count < self._last[1] or t < self._last[0]:
            self.samples.clear()
            self._last = (t, count)
            self._partial = 0.0
            self._second_started = t
            return
        last_t, last_count = self._last
        self._last = (t, count)
        if t == last_t:
            self._partial += count - last_count
            return
        rate = (count - last_count) / (t - last_t)
        assert self._second_started is not None
        cursor = last_t
        while self._second_started + SAMPLE_S <= t:
            boundary = self._second_started + SAMPLE_S
            self._partial += rate * (boundary - cursor)
            self._append(self._partial / SAMPLE_S)
            self._partial = 0.0
            cursor = boundary
            self._second_started = boundary
        self._partial += rate * (t - cursor)

    def _append(self, value: float) -> None:
        self.samples.append(value)
        while len(self.samples) > self.capacity:
            self.samples.popleft()

    def series(self) -> list[float]:
        return list(self.samples)

    def forecast(
        self, horizon_s: int, model: str = "Holt", season_s: int | None = None
    ) -> Forecast | None:
        return peak_forecast(self.series(), horizon_s, model=model, season_s=season_s)


def replicas_for_rate(rate: float, per_replica: float) -> int:
    """Replicas that serve ``rate`` at ``per_replica`` each (at least 0)."""
    if per_replica <= 0:
        raise ValueError("the per-replica target must be positive")
    return max(0, math.ceil(rate / per_replica - 1e-9))
