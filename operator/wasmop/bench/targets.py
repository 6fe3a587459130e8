"""The original report's targets, and which of them a set of measurements meets.

Each target names the metric it judges (as experiments record it, see
:mod:`wasmop.bench.run`), the statistic of that metric (median, p95, max or a plain
value) and the bound. A target with no measurement is reported as not measured rather
than silently passing. The figures draw their threshold lines from here too
(:func:`target`), so a bound is written once.

The bound is judged on the estimate (the statistic of the pooled observations); beside
it stands its 95 % interval (:mod:`wasmop.bench.stats`), and where that interval reaches
across the bound the verdict says so: the estimate alone does not settle it.

A bound the report states for every case ("recovery < 10 s") is judged on the worst one,
the maximum, with the median beside it as information; a target with ``by`` is also
judged once per value of that context of its observations (recovery per fault type),
from the statistics :func:`~wasmop.bench.stats.grouped_key` names.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from wasmop.bench.stats import MIN_BOOTSTRAP_N, grouped_key

_OPS: Mapping[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": lambda a, b: math.isclose(a, b, rel_tol=0.0, abs_tol=1e-12),
}


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    requirement: str  # the report's wording, for the table
    metric: str  # metric name as recorded, unit suffix included
    statistic: str  # p50, p95, max, mean or value
    op: str
    threshold: float
    unit: str
    min_n: int = 1  # observations needed before the target can hold
    min_batch: int = 0  # functions created at once needed (100 concurrent)
    context: str = "p95"  # a second statistic shown beside the judged one
    request: float | None = None  # a lower level worth noting: the resource request
    by: str | None = None  # also judged per value of this observation context

    def check(self, measured: float) -> bool:
        return _OPS[self.op](measured, self.threshold)

    def settled(self, low: float, high: float) -> bool | None:
        """Whether the whole interval [low, high] lies on one side of the bound, so the
        verdict on the estimate would not change anywhere inside it. None for an exact
        claim about what was observed ("all 100 succeed"): no interval of an underlying
        rate can settle it, so it is shown but not judged."""
        if self.op == "==":
            return None
        return self.check(low) == self.check(high)


TARGETS: tuple[Target, ...] = (
    Target(
        "deployment", "Deployment latency", "< 2 s (one function, create to Ready, median)",
        "deploy_latency_ms", "p50", "<", 2000.0, "ms",
    ),
    Target(
        "scaling", "Scaling latency", "< 5 s (desired change to ready, median)",
        "scale_latency_ms", "p50", "<", 5000.0, "ms",
    ),
    Target(
        "status", "Status update lag", "< 1 s (Pods ready to status Ready; one function)",
        "status_lag_ms", "p50", "<", 1000.0, "ms",
    ),
    Target(
        "success", "Request success rate", ">= 99.9 %",
        "success_ratio", "value", ">=", 0.999, "ratio", context="n",
    ),
    Target(
        "error", "Error rate", "< 0.1 %",
        "error_ratio", "value", "<", 0.001, "ratio", context="n",
    ),
    Target(
        "scaling_end_to_end", "Scaling latency, end to end",
        "< 5 s (load arriving to new replicas ready, median)",
        "autoscale_end_to_end_ms", "p50", "<", 5000.0, "ms", context="max",
    ),
    Target(
        "cold_start_p50", "Cold start", "p50 <= 250 ms (idle function, request to answer)",
        "cold_start_ms", "p50", "<=", 250.0, "ms",
    ),
    Target(
        "cold_start_p95", "Cold start, p95", "p95 <= 500 ms (idle function, request to answer)",
        "cold_start_ms", "p95", "<=", 500.0, "ms", context="max",
    ),
    Target(
        "cold_start_25", "Cold start, 25 at once", "p95 <= 2 s (25 idle functions woken at once)",
        "cold_start_25_ms", "p95", "<=", 2000.0, "ms", min_n=25, context="max",
    ),
    Target(
        "activation_lost", "Requests lost in activation",
        "0 (each held request answered, or 503 with its reason)",
        "activation_lost_requests", "value", "==", 0.0, "requests", context="n",
    ),
    Target(
        "reaction", "Scaling reaction (Fast)", "p95 <= 1 s (step load arriving to decision)",
        "fast_step_reaction_ms", "p95", "<=", 1000.0, "ms", context="max",
    ),
    Target(
        "predictive_over_bound", "Predictive: fewer requests over the bound",
        ">= 50 % fewer than reactive (ramp, periodic; the worst shape)",
        "predictive_over_bound_reduction_ratio", "min", ">=", 0.5, "ratio",
        context="p50", by="shape",
    ),
    Target(
        "predictive_cost", "Predictive: replica-seconds",
        "<= 10 % more than reactive (ramp, periodic; the worst shape)",
        "predictive_replica_seconds_increase_ratio", "max", "<=", 0.10, "ratio",
        context="p50", by="shape",
    ),
    Target(
        "recovery", "Recovery time", "< 10 s (fault to recovered, every fault: the maximum)",
        "recovery_ms", "max", "<", 10000.0, "ms", context="p50", by="fault",
    ),
    Target(
        "chaos_success", "Success rate under chaos", ">= 99.9 % (chaos soak, all faults)",
        "chaos_success_ratio", "value", ">=", 0.999, "ratio", context="n",
    ),
    Target(
        "drain", "Failed requests in rollouts and scale-ins", "0 (chaos soak)",
        "drain_failed_requests", "value", "==", 0.0, "requests", context="n",
    ),
    Target(
        "chaos_invariants", "Invariants after the chaos soak", "all hold",
        "chaos_invariants_ratio", "value", "==", 1.0, "ratio", context="n",
    ),
    Target(
        "concurrent", "Concurrent deployments", "100 at once, all succeed",
        "concurrent_ready_ratio", "value", "==", 1.0, "ratio", min_batch=100, context="n",
    ),
    Target(
        "operator_cpu", "Operator CPU", "within 100m request / 500m limit (p95)",
        "operator_cpu_millicores", "p95", "<=", 500.0, "millicores", context="mean",
        request=100.0,
    ),
    Target(
        "operator_memory", "Operator memory", "within 128 MiB request / 256 MiB limit (max)",
        "operator_rss_mib", "max", "<=", 256.0, "MiB", context="mean", request=128.0,
    ),
)  # fmt: skip


def target(key: str) -> Target:
    """The target called ``key`` (``deployment``, ``recovery``, ``operator_cpu``...)."""
    for candidate in TARGETS:
        if candidate.key == key:
            return candidate
    raise KeyError(f"no target {key!r}; known: {', '.join(t.key for t in TARGETS)}")


def grouped_contexts(targets: Sequence[Target] | None = None) -> set[str]:
    """The observation contexts some target is judged by."""
    return {t.by for t in (TARGETS if targets is None else targets) if t.by}


def _quantity(value: float, unit: str) -> str:
    """A resource amount as Kubernetes writes it: ``100m``, ``128 MiB``."""
    return f"{value:g}m" if unit == "millicores" else f"{value:g} {unit}"


@dataclass(frozen=True)
class TargetResult:
    target: Target
    measured: float | None
    context_value: float | None
    n: int
    holds: bool | None  # None: not measured (or too few observations)
    note: str = ""
    ci_low: float | None = None  # the 95 % interval of the measured statistic
    ci_high: float | None = None
    group: str = ""  # the context value judged, for a target judged by it

    @property
    def label(self) -> str:
        return f"{self.target.label}: {self.group}" if self.group else self.target.label

    @property
    def settled(self) -> bool | None:
        """True when the interval lies on the verdict's side of the bound, False when it
        reaches across it, None without an interval."""
        if self.holds is None or self.ci_low is None or self.ci_high is None:
            return None
        return self.target.settled(self.ci_low, self.ci_high)

    @property
    def verdict(self) -> str:
        text = {True: "holds", False: "missed", None: "not measured"}[self.holds]
        if self.settled is False:
            text += " (95 % CI crosses the bound)"
        return text


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _judge(target: Target, described: Mapping[str, Any], group: str = "") -> TargetResult:
    measured = _number(described.get(target.statistic))
    context = _number(described.get(target.context))
    n = int(_number(described.get("n")) or 0)
    low = _number(described.get(f"{target.statistic}_ci_low"))
    high = _number(described.get(f"{target.statistic}_ci_high"))
    interval = (low, high) if low is not None and high is not None else (None, None)
    if measured is None:
        return TargetResult(target, None, context, n, None, "no measurement", group=group)
    batch = int(_number(described.get("batch")) or n)
    if n < target.min_n or batch < target.min_batch:
        note = (
            f"only {n} observed, the target needs {target.min_n}"
            if n < target.min_n
            else f"at most {batch} created at once, the target needs {target.min_batch}"
        )
        return TargetResult(target, measured, context, n, None, note, *interval, group=group)
    notes = []
    if target.request is not None and measured <= target.request:
        notes.append(f"within the {_quantity(target.request, target.unit)} request")
    if interval[0] is None and target.statistic != "value":
        notes.append(f"no interval below n={MIN_BOOTSTRAP_N}")
    holds = target.check(measured)
    return TargetResult(
        target, measured, context, n, holds, "; ".join(notes), *interval, group=group
    )


def evaluate(
    stats: Mapping[str, Mapping[str, Any]], targets: Sequence[Target] = TARGETS
) -> list[TargetResult]:
    """Judge every target against ``stats`` (metric -> {statistic: value, "n": count}); a
    target with ``by`` once over all its observations and then once per group found."""
    results = []
    for target in targets:
        results.append(_judge(target, stats.get(target.metric) or {}))
        if target.by:
            prefix = grouped_key(target.metric, target.by, "")[:-1]  # up to the value
            for key in sorted(k for k in stats if k.startswith(prefix)):
                results.append(_judge(target, stats[key], key[len(prefix) : -1]))
    return results


def results_frame(results: Iterable[TargetResult]) -> pd.DataFrame:
    """The targets table: one row per target, judged statistic and verdict."""
    rows = []
    for r in results:
        rows.append(
            {
                "target": r.label,
                "requirement": r.target.requirement,
                "metric": r.target.metric,
                "statistic": r.target.statistic,
                "measured": r.measured,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "context_statistic": r.target.context,
                "context_value": r.context_value,
                "unit": r.target.unit,
                "n": r.n,
                "holds": r.holds,
                "settled": r.settled,
                "verdict": r.verdict,
                "note": r.note,
            }
        )
    return pd.DataFrame(rows)


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value * 100:.3f} %"
    if unit == "ms":
        return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"
    if unit == "requests":
        return f"{value:.0f}"
    return f"{value:.1f} {unit}"


def format_interval(low: float | None, high: float | None, unit: str) -> str:
    """``[95 ms, 274 ms]``, or ``-`` without an interval."""
    if low is None or high is None:
        return "-"
    return f"[{format_value(low, unit)}, {format_value(high, unit)}]"


def results_markdown(results: Iterable[TargetResult]) -> str:
    """The targets table as Markdown, for notebooks and the terminal: the judged
    estimate, its 95 % interval, n and the verdict."""
    lines = [
        "| Target | Requirement | Estimate | 95 % CI | n | Verdict |",
        "|---|---|---|---|---:|---|",
    ]
    for r in results:
        unit = r.target.unit
        measured = format_value(r.measured, unit)
        if r.measured is not None and r.target.statistic not in ("value",):
            measured = f"{r.target.statistic} {measured}"
        if r.context_value is not None and r.target.context != "n":
            measured += f" ({r.target.context} {format_value(r.context_value, unit)})"
        interval = format_interval(r.ci_low, r.ci_high, unit)
        verdict = r.verdict + (f": {r.note}" if r.note else "")
        lines.append(
            f"| {r.label} | {r.target.requirement} | {measured} | {interval} | {r.n} | {verdict} |"
        )
    return "\n".join(lines) + "\n"
