"""Printing a benchmark's figures beside its targets, the same way for every benchmark."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from wasmop.bench.stats import describe

R = TypeVar("R")


@dataclass(frozen=True)
class Check:
    """``measured <= limit`` (both in ``unit``), with what it is about."""

    label: str
    measured: float
    limit: float
    unit: str
    holds_also: bool = True  # an extra condition, e.g. "all 100 became Ready"

    @property
    def holds(self) -> bool:
        return self.holds_also and self.measured <= self.limit

    @property
    def ratio(self) -> float:
        return self.measured / self.limit if self.limit else float("nan")


def print_quantiles(title: str, rows: Mapping[str, Sequence[float]], unit: str = "ms") -> None:
    """One line per row: n, p50, p95, p99 and max of the raw values."""
    print(f"\n{title} [{unit}]")
    print(f"{'':<36}{'n':>5}{'p50':>10}{'p95':>10}{'p99':>10}{'max':>10}")
    for label, values in rows.items():
        d = describe(values)
        print(
            f"{label:<36}{d['n']:>5}{d['p50']:>10.1f}{d['p95']:>10.1f}{d['p99']:>10.1f}"
            f"{d['max']:>10.1f}"
        )


def print_checks(checks: Iterable[Check]) -> bool:
    """The targets block; True when every target holds."""
    checks = list(checks)
    print("\ntargets")
    for c in checks:
        verdict = "met" if c.holds else "MISSED"
        print(
            f"  {c.label}: {c.measured:.2f} {c.unit} <= {c.limit:g} {c.unit}: {verdict}"
            f" (ratio {c.ratio:.2f})"
        )
    return all(c.holds for c in checks)


def measure_and_report(measurement: Coroutine[Any, Any, R], report: Callable[[R], bool]) -> int:
    """Run one measurement, print its report and wall time; the exit code says if targets held."""
    started = time.monotonic()
    result = asyncio.run(measurement)
    ok = report(result)
    print(f"\n(measured in {time.monotonic() - started:.0f} s)")
    return 0 if ok else 1
