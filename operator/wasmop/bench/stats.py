"""Exact summary statistics of raw observations, each with its 95 % confidence interval.

Locust and Prometheus histograms round their percentiles to buckets; every figure the
harness reports is computed here from the raw values instead, with the same
(linear-interpolation) quantile definition everywhere.

Intervals (:data:`INTERVALS` says the same in ``summary.json``):

* a statistic of observations (mean, a quantile, min, max): the **percentile bootstrap**,
  2,000 resamples of the observations with replacement, drawn from a generator seeded with
  0, so the same values always give the same interval; the interval is the 2.5th and
  97.5th percentile of the statistic over the resamples. Below :data:`MIN_BOOTSTRAP_N`
  observations no interval is given (NaN): it would only restate the smallest and largest
  value. A resample cannot reach past the largest observation, so the interval of ``max``
  (and of ``p99`` on few values) says how much the worst case rests on single
  observations, not how bad an unseen one could be.
* a proportion (success rate, error rate, ready ratio): the **Wilson score interval**,
  which stays inside [0, 1] and is not empty at 0 or 1 failures, unlike the normal
  approximation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from statistics import NormalDist
from typing import Any

import numpy as np

QUANTILES: Mapping[str, float] = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
STATISTICS = ("mean", "min", *QUANTILES, "max")  # each gets an interval in describe(ci=True)

CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
MIN_BOOTSTRAP_N = 10
INTERVALS: Mapping[str, Any] = {
    "level": CI_LEVEL,
    "statistics": f"percentile bootstrap over the observations: {BOOTSTRAP_RESAMPLES} resamples,"
    f" seed {BOOTSTRAP_SEED}, none below n={MIN_BOOTSTRAP_N}",
    "proportions": "Wilson score interval over the requests (or functions) counted",
    "keys": "<statistic>_ci_low and <statistic>_ci_high beside each statistic",
}


def _finite(values: Iterable[float]) -> np.ndarray:
    data = np.asarray([v for v in values if v is not None], dtype=float)
    return data[np.isfinite(data)]


def _point(data: np.ndarray, axis: int | None = None) -> dict[str, Any]:
    """Every statistic of :data:`STATISTICS` of ``data`` (along ``axis`` for resamples)."""
    quantiles = np.quantile(data, list(QUANTILES.values()), axis=axis)
    return {
        "mean": data.mean(axis=axis),
        "min": data.min(axis=axis),
        **dict(zip(QUANTILES, quantiles, strict=True)),
        "max": data.max(axis=axis),
    }


def describe(values: Iterable[float], *, ci: bool = False) -> dict[str, float]:
    """n, mean, min, p50, p90, p95, p99 and max of the finite values (NaN when empty);
    with ``ci``, also ``<statistic>_ci_low``/``_ci_high``: the 95 % percentile-bootstrap
    interval of each (NaN below :data:`MIN_BOOTSTRAP_N` values)."""
    data = _finite(values)
    nan = float("nan")
    if data.size == 0:
        result: dict[str, float] = {"n": 0, **dict.fromkeys(STATISTICS, nan)}
    else:
        result = {"n": int(data.size), **{k: float(v) for k, v in _point(data).items()}}
    if ci:
        intervals = bootstrap_intervals(data)
        for name in STATISTICS:
            low, high = intervals.get(name, (nan, nan))
            result[f"{name}_ci_low"], result[f"{name}_ci_high"] = low, high
    return result


def bootstrap_intervals(
    values: Iterable[float],
    *,
    level: float = CI_LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, tuple[float, float]]:
    """The percentile-bootstrap interval of every statistic of :data:`STATISTICS`, all
    from one set of resamples; empty below :data:`MIN_BOOTSTRAP_N` values."""
    data = _finite(values)
    if data.size < MIN_BOOTSTRAP_N:
        return {}
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // data.size)  # bounded memory for long samples
    parts: dict[str, list[np.ndarray]] = {name: [] for name in STATISTICS}
    for left in range(resamples, 0, -chunk):
        sample = data[rng.integers(0, data.size, size=(min(chunk, left), data.size))]
        for name, estimates in _point(sample, axis=1).items():
            parts[name].append(np.asarray(estimates))
    alpha = (1 - level) / 2
    intervals = {}
    for name, chunks in parts.items():
        estimates = np.concatenate(chunks)
        low, high = np.quantile(estimates, [alpha, 1 - alpha])
        intervals[name] = (float(low), float(high))
    return intervals


def wilson_interval(
    successes: float, trials: float, level: float = CI_LEVEL
) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / trials`` (NaN for none)."""
    if trials <= 0:
        return float("nan"), float("nan")
    z = float(NormalDist().inv_cdf(1 - (1 - level) / 2))
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # At 0 or all successes one end is exactly 0 or 1; rounding would leave 2e-19.
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= trials else min(1.0, centre + half)
    return low, high


def proportion(successes: float, trials: float) -> dict[str, float]:
    """A proportion as the summary records it: value, n and its Wilson interval."""
    low, high = wilson_interval(successes, trials)
    return {
        "value": ratio(successes, trials),
        "n": trials,
        "value_ci_low": low,
        "value_ci_high": high,
    }


def grouped_key(metric: str, context: str, value: object) -> str:
    """The statistics key of one group of a metric's observations:
    ``recovery_ms[fault=pod-crash]``."""
    return f"{metric}[{context}={value}]"


def describe_groups(observations: Any, contexts: Iterable[str]) -> dict[str, dict[str, float]]:
    """:func:`describe` of each metric's observations per value of each context column
    (an observations table: ``metric``, ``value`` and context columns), by
    :func:`grouped_key`."""
    stats: dict[str, dict[str, float]] = {}
    for context in sorted(contexts):
        if context not in observations or "metric" not in observations:
            continue
        rows = observations[observations[context].notna()]
        for (metric, value), group in rows.groupby(["metric", context], sort=True):
            stats[grouped_key(str(metric), context, value)] = describe(group["value"], ci=True)
    return stats


def ratio(part: float, whole: float) -> float:
    """part / whole, NaN when nothing was counted."""
    return float(part) / float(whole) if whole else float("nan")


def jsonable(value: Any) -> Any:
    """NaN and infinities as None, numpy scalars as Python numbers, recursively."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def ratio_of(
    numerator: Iterable[float],
    denominator: Iterable[float],
    statistic: str = "p50",
    *,
    level: float = CI_LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, float]:
    """``statistic`` of one sample over the same statistic of another (the operator's p95
    over the baseline's, say), with a percentile-bootstrap interval that resamples both
    samples independently; no interval when either has fewer than
    :data:`MIN_BOOTSTRAP_N` values."""
    a, b = _finite(numerator), _finite(denominator)
    nan = float("nan")
    out = {"value": nan, "ci_low": nan, "ci_high": nan}
    out |= {"n_numerator": a.size, "n_denominator": b.size}
    if a.size == 0 or b.size == 0:
        return out
    point_a, point_b = _point(a)[statistic], _point(b)[statistic]
    out["value"] = float(point_a / point_b) if point_b else nan
    if min(a.size, b.size) < MIN_BOOTSTRAP_N:
        return out
    rng = np.random.default_rng(seed)
    ra = _point(a[rng.integers(0, a.size, size=(resamples, a.size))], axis=1)[statistic]
    rb = _point(b[rng.integers(0, b.size, size=(resamples, b.size))], axis=1)[statistic]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.asarray(ra) / np.asarray(rb)
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size:
        alpha = (1 - level) / 2
        low, high = np.quantile(ratios, [alpha, 1 - alpha])
        out["ci_low"], out["ci_high"] = float(low), float(high)
    return out
