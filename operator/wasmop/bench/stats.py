"""Exact summary statistics of raw observations.

Locust and Prometheus histograms round their percentiles to buckets; every figure the
harness reports is computed here from the raw values instead, with the same
(linear-interpolation) quantile definition everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

QUANTILES: Mapping[str, float] = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}


def describe(values: Iterable[float]) -> dict[str, float]:
    """n, mean, min, p50, p90, p95, p99 and max of the finite values (NaN when empty)."""
    data = np.asarray([v for v in values if v is not None], dtype=float)
    data = data[np.isfinite(data)]
    if data.size == 0:
        nan = float("nan")
        return {"n": 0, "mean": nan, "min": nan, **dict.fromkeys(QUANTILES, nan), "max": nan}
    result: dict[str, float] = {
        "n": int(data.size),
        "mean": float(data.mean()),
        "min": float(data.min()),
    }
    for name, q in QUANTILES.items():
        result[name] = float(np.quantile(data, q))
    result["max"] = float(data.max())
    return result


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


def bootstrap_ci(
    values: Iterable[float], q: float, *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval of the ``q`` quantile (seeded, so a run
    reproduces its own interval); NaNs when there are fewer than 10 values."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if data.size < 10:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // data.size)  # bounded memory for long samples
    estimates = np.concatenate(
        [
            np.quantile(
                data[rng.integers(0, data.size, size=(min(chunk, left), data.size))], q, axis=1
            )
            for left in range(resamples, 0, -chunk)
        ]
    )
    alpha = (1 - level) / 2
    return float(np.quantile(estimates, alpha)), float(np.quantile(estimates, 1 - alpha))
