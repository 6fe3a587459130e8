"""The Kubernetes HorizontalPodAutoscaler algorithm, as pure functions.

The scaling handler scrapes per-pod CPU and memory from the node agents and requests per
second from the gateway, then asks :func:`decide` for a replica count. Following upstream
(``pkg/controller/podautoscaler``) closely means results can be compared with a native HPA
and explained with the Kubernetes documentation:

* per metric, ``desired = ceil(current_replicas * current_value / target)``, counted over the
  pods that reported; no change while the ratio is within the tolerance (10%);
* pods without a sample count as 100% of target on a scale-down and as 0 on a scale-up;
  unready pods are left out, except on a scale-up where they count as 0; terminating and
  failed pods are ignored; a metric that would reverse direction after this correction
  keeps the current count;
* the largest proposal over all metrics wins; if a metric could not be computed the
  function is not scaled down;
* stabilization windows: a scale-up takes the smallest recommendation of the scale-up
  window, a scale-down the largest of the scale-down window;
* finally min/max bounds. Zero replicas with minReplicas > 0 means autoscaling is paused.

Deviation from upstream, on purpose: readiness matters for every metric except memory (not
only CPU), because an unready pod receives no requests and would drag a requests-per-second
or concurrency average down. The rate-limiting scaling policies of autoscaling/v2 are not
modelled.

Beyond upstream (:func:`decide`'s keyword arguments, all optional):

* ``panic``: the request metrics measured over a short window (fast reaction). They may
  only raise the recommendation, so a burst is answered at once while scale-down still
  follows the stable readings and the scale-down window.
* ``forecast``: the request metrics as a predictor expects them over its horizon
  (:mod:`.predictor`). They too may only raise the recommendation.
* ``min_replicas`` 0 with ``idle_seconds``: a function without requests for
  ``scale_to_zero_after`` seconds goes to zero (the idle window is its stabilization); at
  zero it stays there until requests arrive (``demand``), then takes as many replicas as
  the request metrics ask for, at least one. While running, it keeps at least one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from wasmop.operator.quantity import format_bytes, parse_quantity
from wasmop.operator.spec import MetricSpec, ScalingSpec

__all__ = [
    "DEFAULT_TOLERANCE",
    "MetricObservation",
    "MetricResult",
    "PodMetric",
    "Recommendation",
    "ScalingDecision",
    "decide",
    "decide_for",
    "format_metric_value",
    "observation_for",
    "replicas_for_metric",
    "stabilize",
]

DEFAULT_TOLERANCE = 0.1

TargetType = Literal["Utilization", "AverageValue"]


@dataclass(frozen=True)
class PodMetric:
    """One pod's latest sample of one metric.

    ``value`` is None when the pod reported nothing. ``request`` is the pod's resource request
    in the same unit as ``value`` (needed for Utilization targets only).
    """

    name: str
    value: float | None
    request: float | None = None
    ready: bool = True
    phase: str = "Running"
    deleting: bool = False


@dataclass(frozen=True)
class MetricObservation:
    """What was measured for one metric of a function, with its target.

    For ``Utilization``, ``target`` is a percentage of the request; for ``AverageValue`` it is
    the per-pod value in base units (cores, bytes, requests/s). Give either per-pod samples in
    ``pods`` or, for a figure only known for the function as a whole (the gateway's request
    rate), ``total``.
    """

    name: str
    target_type: TargetType
    target: float
    pods: tuple[PodMetric, ...] = ()
    total: float | None = None
    request: float | None = None

    @property
    def readiness_matters(self) -> bool:
        return self.name != "memory"


@dataclass(frozen=True)
class MetricResult:
    """One metric's reading and the replica count it proposes (None when it failed)."""

    name: str
    target_type: TargetType
    target: float
    current: float | None
    proposed_replicas: int | None
    error: str | None = None
    ready_pods: int = 0
    missing_pods: int = 0
    unready_pods: int = 0
    note: str | None = None

    @property
    def valid(self) -> bool:
        return self.proposed_replicas is not None

    def describe(self) -> str:
        """The reading against its target, e.g. "cpu 85% > target 70%"."""
        current = "?" if self.current is None else format_metric_value(self, self.current)
        target = format_metric_value(self, self.target)
        if self.current is None:
            op = "vs"
        elif self.current > self.target:
            op = ">"
        elif self.current < self.target:
            op = "<"
        else:
            op = "="
        return f"{self.name} {current} {op} target {target}"


@dataclass(frozen=True)
class Recommendation:
    """A raw (unstabilized) replica recommendation and when it was made (epoch seconds)."""

    at: float
    replicas: int


@dataclass(frozen=True)
class ScalingDecision:
    """The outcome of one autoscaling pass; ``history`` is the state for the next pass."""

    current_replicas: int
    desired_replicas: int
    recommended_replicas: int | None
    metrics: tuple[MetricResult, ...]
    reason: str
    history: tuple[Recommendation, ...] = field(default=())
    able_to_scale: bool = True
    # What raised the recommendation above the stable readings, if anything.
    driver: Literal["stable", "panic", "forecast", "idle", "demand"] = "stable"

    @property
    def scale(self) -> bool:
        return self.desired_replicas != self.current_replicas


# --------------------------------------------------------------------------- per metric


def replicas_for_metric(
    metric: MetricObservation, current_replicas: int, tolerance: float = DEFAULT_TOLERANCE
) -> MetricResult:
    """The replica count one metric asks for, with upstream's handling of missing pods."""
    if metric.target <= 0:
        return _failed(metric, "target must be positive")
    if metric.total is not None:
        return _replicas_for_total(metric, current_replicas, tolerance)
    if not metric.pods:
        return _failed(metric, "no pods to measure")

    values: dict[str, float] = {}
    requests: dict[str, float] = {}
    unready: list[str] = []
    missing: list[str] = []
    ready = 0
    for pod in metric.pods:
        if pod.deleting or pod.phase == "Failed":
            continue
        request = pod.request if pod.request is not None else metric.request
        if request is not None:
            requests[pod.name] = request
        if pod.phase == "Pending":
            unready.append(pod.name)
            continue
        if pod.value is None:
            missing.append(pod.name)
            continue
        if metric.readiness_matters and not pod.ready:
            unready.append(pod.name)
            continue
        values[pod.name] = pod.value
        ready += 1

    if not values:
        return _failed(
            metric, "no samples from any ready pod", unready=len(unready), missing=len(missing)
        )
    utilization = metric.target_type == "Utilization"
    if utilization:
        lacking = [name for name in (*values, *missing, *unready) if not requests.get(name)]
        if lacking:
            return _failed(metric, f"no {metric.name} request on pod {lacking[0]}")

    ratio, current = _usage(metric, values, requests)

    def result(replicas: int, note: str | None = None) -> MetricResult:
        return MetricResult(
            name=metric.name,
            target_type=metric.target_type,
            target=metric.target,
            current=current,
            proposed_replicas=replicas,
            ready_pods=ready,
            missing_pods=len(missing),
            unready_pods=len(unready),
            note=note,
        )

    within = f"within {tolerance:.0%} tolerance"
    rebalance_unready = bool(unready) and ratio > 1.0
    if not rebalance_unready and not missing:
        if abs(1.0 - ratio) <= tolerance:
            return result(current_replicas, within)
        return result(math.ceil(ratio * ready))

    # Fill the gaps conservatively, then recompute: a gap must never push the decision further
    # than the pods that did report would.
    filled = dict(values)
    if ratio < 1.0:
        for name in missing:
            filled[name] = requests[name] if utilization else metric.target
    elif ratio > 1.0:
        for name in missing:
            filled[name] = 0.0
    if rebalance_unready:
        for name in unready:
            filled[name] = 0.0
    new_ratio, _ = _usage(metric, filled, requests)
    if abs(1.0 - new_ratio) <= tolerance:
        return result(current_replicas, f"{within} counting pods without samples")
    unsure = "pods without samples or not ready could reverse the direction"
    if (ratio < 1.0 < new_ratio) or (new_ratio < 1.0 < ratio):
        return result(current_replicas, unsure)
    proposal = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and proposal > current_replicas) or (
        new_ratio > 1.0 and proposal < current_replicas
    ):
        return result(current_replicas, unsure)
    return result(proposal)


def _usage(
    metric: MetricObservation, values: dict[str, float], requests: dict[str, float]
) -> tuple[float, float]:
    """Usage ratio against target, and the current figure (utilization % or average)."""
    if metric.target_type == "Utilization":
        total_request = sum(requests[name] for name in values)
        # Upstream truncates utilization to a whole percent before comparing.
        utilization = math.floor(sum(values.values()) * 100 / total_request)
        return utilization / metric.target, float(utilization)
    average = sum(values.values()) / len(values)
    return average / metric.target, average


def _replicas_for_total(
    metric: MetricObservation, current_replicas: int, tolerance: float
) -> MetricResult:
    """Upstream's per-pod target on an object metric: the total spread over the replicas."""
    assert metric.total is not None
    if metric.target_type != "AverageValue":
        return _failed(metric, "a function-wide total needs an AverageValue target")
    replicas = max(current_replicas, 1)
    ratio = metric.total / (metric.target * replicas)
    proposal = current_replicas
    note: str | None = f"within {tolerance:.0%} tolerance"
    if abs(1.0 - ratio) > tolerance:
        proposal = math.ceil(metric.total / metric.target)
        note = None
    return MetricResult(
        name=metric.name,
        target_type=metric.target_type,
        target=metric.target,
        current=metric.total / replicas,
        proposed_replicas=proposal,
        ready_pods=replicas,
        note=note,
    )


def _failed(
    metric: MetricObservation, error: str, *, unready: int = 0, missing: int = 0
) -> MetricResult:
    return MetricResult(
        name=metric.name,
        target_type=metric.target_type,
        target=metric.target,
        current=None,
        proposed_replicas=None,
        error=error,
        missing_pods=missing,
        unready_pods=unready,
    )


def format_metric_value(result: MetricResult, value: float) -> str:
    """A metric figure as people read it: 85%, 612Mi, 250m, 12.5."""
    if result.target_type == "Utilization":
        return f"{value:.0f}%"
    if result.name == "memory":
        return format_bytes(value)
    if result.name == "cpu":
        return f"{math.ceil(value * 1000)}m"
    return f"{value:.3g}"


# --------------------------------------------------------------------------- stabilization


def stabilize(
    recommended: int,
    current_replicas: int,
    history: Sequence[Recommendation],
    now: float,
    scale_up_window: float,
    scale_down_window: float,
) -> tuple[int, tuple[Recommendation, ...]]:
    """Hold ``recommended`` inside the windows; returns the stabilized count and new history.

    Upstream semantics: the count may rise no higher than the smallest recommendation of the
    scale-up window and fall no lower than the largest of the scale-down window, so a single
    spike or dip does not move the function.
    """
    up_cutoff = now - scale_up_window
    down_cutoff = now - scale_down_window
    up_limit = recommended
    down_limit = recommended
    for rec in history:
        if rec.at > up_cutoff:
            up_limit = min(up_limit, rec.replicas)
        if rec.at > down_cutoff:
            down_limit = max(down_limit, rec.replicas)
    stabilized = current_replicas
    stabilized = max(stabilized, up_limit)
    stabilized = min(stabilized, down_limit)
    oldest_needed = min(up_cutoff, down_cutoff)
    kept = tuple(rec for rec in history if rec.at > oldest_needed)
    return stabilized, (*kept, Recommendation(at=now, replicas=recommended))


# --------------------------------------------------------------------------- decision


def _proposal(
    observations: Iterable[MetricObservation], current_replicas: int, tolerance: float
) -> MetricResult | None:
    """The metric asking for the most replicas, or None when none could be measured."""
    results = [replicas_for_metric(m, current_replicas, tolerance) for m in observations]
    valid = [r for r in results if r.valid]
    return max(valid, key=lambda r: r.proposed_replicas or 0) if valid else None


def decide(
    *,
    current_replicas: int,
    min_replicas: int,
    max_replicas: int,
    observations: Iterable[MetricObservation],
    history: Sequence[Recommendation] = (),
    now: float,
    scale_up_window: float = 0,
    scale_down_window: float = 300,
    tolerance: float = DEFAULT_TOLERANCE,
    panic: Iterable[MetricObservation] = (),
    forecast: Iterable[MetricObservation] = (),
    idle_seconds: float | None = None,
    scale_to_zero_after: float = 60.0,
    demand: bool = False,
) -> ScalingDecision:
    """One autoscaling pass over a function's metrics (see the module doc for ``panic``,
    ``forecast`` and scaling to zero)."""
    history = tuple(history)
    observations = tuple(observations)
    if min_replicas == 0:
        zero = _scale_to_zero(
            current_replicas, max_replicas, observations, history,
            idle_seconds, scale_to_zero_after, demand, tolerance,
        )  # fmt: skip
        if zero is not None:
            return zero
        min_replicas = 1  # running: the metrics decide, down to one replica
    if current_replicas == 0 and min_replicas != 0:
        return ScalingDecision(
            current_replicas=0,
            desired_replicas=0,
            recommended_replicas=None,
            metrics=(),
            reason="autoscaling paused: the function is scaled to zero",
            history=history,
            able_to_scale=False,
        )
    if current_replicas > max_replicas:
        return ScalingDecision(
            current_replicas=current_replicas,
            desired_replicas=max_replicas,
            recommended_replicas=None,
            metrics=(),
            reason=f"above maxReplicas {max_replicas}: {current_replicas} -> {max_replicas}",
            history=history,
        )
    if current_replicas < min_replicas:
        return ScalingDecision(
            current_replicas=current_replicas,
            desired_replicas=min_replicas,
            recommended_replicas=None,
            metrics=(),
            reason=f"below minReplicas {min_replicas}: {current_replicas} -> {min_replicas}",
            history=history,
        )

    results = tuple(replicas_for_metric(m, current_replicas, tolerance) for m in observations)
    valid = [r for r in results if r.valid]
    invalid = [r for r in results if not r.valid]
    driver: Literal["stable", "panic", "forecast"] = "stable"
    raised: MetricResult | None = None
    for name, extra in (("panic", panic), ("forecast", forecast)):
        leader = _proposal(extra, current_replicas, tolerance)
        best = max((r.proposed_replicas or 0 for r in valid), default=-1)
        if raised is not None:
            best = max(best, raised.proposed_replicas or 0)
        if leader is not None and (leader.proposed_replicas or 0) > max(best, current_replicas):
            raised, driver = leader, name  # type: ignore[assignment]
    if not valid:
        errors = "; ".join(f"{r.name}: {r.error}" for r in invalid) or "no metrics configured"
        return ScalingDecision(
            current_replicas=current_replicas,
            desired_replicas=current_replicas,
            recommended_replicas=None,
            metrics=results,
            reason=f"no usable metrics ({errors}): stays at {current_replicas}",
            history=history,
            able_to_scale=False,
        )
    leader = max(valid, key=lambda r: r.proposed_replicas or 0)
    if raised is not None:
        leader = raised
    recommended = leader.proposed_replicas or 0
    if invalid and recommended < current_replicas:
        missing = ", ".join(r.name for r in invalid)
        return ScalingDecision(
            current_replicas=current_replicas,
            desired_replicas=current_replicas,
            recommended_replicas=recommended,
            metrics=results,
            reason=(
                f"{leader.describe()}: would scale down to {recommended}, but {missing} "
                f"could not be measured: stays at {current_replicas}"
            ),
            history=history,
        )

    if not history:
        # After an operator restart the window is empty; seeding it with the current count
        # keeps a fresh operator from scaling down at once, as upstream does.
        history = (Recommendation(at=now, replicas=current_replicas),)
    stabilized, new_history = stabilize(
        recommended, current_replicas, history, now, scale_up_window, scale_down_window
    )
    desired = max(min_replicas, min(max_replicas, stabilized))

    reason = f"{leader.describe()}: {current_replicas} -> {desired}"
    if driver != "stable":
        what = "over the panic window" if driver == "panic" else "forecast"
        reason = f"{leader.describe()} ({what}): {current_replicas} -> {desired}"
    if stabilized != recommended:
        window, seconds = (
            ("scale-down", scale_down_window)
            if recommended < current_replicas
            else ("scale-up", scale_up_window)
        )
        reason += f" (recommended {recommended}, held by the {window} window of {seconds:g}s)"
    elif desired != stabilized:
        bound = "maxReplicas" if desired < stabilized else "minReplicas"
        reason += f" (recommended {recommended}, bounded by {bound} {desired})"
    elif desired == current_replicas and recommended == current_replicas:
        reason = f"{leader.describe()}: stays at {current_replicas}"
        if leader.note:
            reason += f" ({leader.note})"
    return ScalingDecision(
        current_replicas=current_replicas,
        desired_replicas=desired,
        recommended_replicas=recommended,
        metrics=results,
        reason=reason,
        history=new_history,
        driver=driver,
    )


def _scale_to_zero(
    current_replicas: int,
    max_replicas: int,
    observations: tuple[MetricObservation, ...],
    history: tuple[Recommendation, ...],
    idle_seconds: float | None,
    after: float,
    demand: bool,
    tolerance: float,
) -> ScalingDecision | None:
    """The decision of a function that may scale to zero, when it is about zero: going
    idle, staying idle, or woken by demand. None: it runs, and the metrics decide."""
    if current_replicas == 0:
        if not demand:
            return ScalingDecision(
                current_replicas=0,
                desired_replicas=0,
                recommended_replicas=0,
                metrics=(),
                reason="idle: no requests; the next one activates it",
                history=(),
                driver="idle",
            )
        leader = _proposal(observations, 0, tolerance)
        wanted = max(1, min(max_replicas, (leader.proposed_replicas or 0) if leader else 1))
        why = leader.describe() if leader is not None else "requests waiting"
        return ScalingDecision(
            current_replicas=0,
            desired_replicas=wanted,
            recommended_replicas=wanted,
            metrics=(),
            reason=f"{why}: activated, 0 -> {wanted}",
            history=(),
            driver="demand",
        )
    if idle_seconds is not None and idle_seconds >= after and not demand:
        return ScalingDecision(
            current_replicas=current_replicas,
            desired_replicas=0,
            recommended_replicas=0,
            metrics=(),
            reason=f"no requests for {idle_seconds:.0f} s: {current_replicas} -> 0",
            history=(),
            driver="idle",
        )
    return None


def decide_for(
    scaling: ScalingSpec,
    *,
    current_replicas: int,
    observations: Iterable[MetricObservation],
    history: Sequence[Recommendation] = (),
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
    panic: Iterable[MetricObservation] = (),
    forecast: Iterable[MetricObservation] = (),
    idle_seconds: float | None = None,
    demand: bool = False,
) -> ScalingDecision:
    """:func:`decide` with bounds and windows taken from a function's ``spec.scaling``."""
    return decide(
        current_replicas=current_replicas,
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        observations=observations,
        history=history,
        now=now,
        scale_up_window=scaling.behavior.scale_up_window_seconds,
        scale_down_window=scaling.behavior.scale_down_window_seconds,
        tolerance=tolerance,
        panic=panic,
        forecast=forecast,
        idle_seconds=idle_seconds,
        scale_to_zero_after=scaling.scale_to_zero_after_seconds,
        demand=demand,
    )


def observation_for(
    metric: MetricSpec,
    *,
    pods: Iterable[PodMetric] = (),
    total: float | None = None,
    request: float | None = None,
) -> MetricObservation:
    """Pair a spec metric with its samples; AverageValue targets become base units.

    Samples must use base units too: cores for cpu, bytes for memory, requests/s. For a
    Utilization target ``request`` (or each pod's) is the resource request in that unit.
    """
    if metric.target_type == "Utilization":
        target = float(metric.target_utilization or 0)
    else:
        target = float(parse_quantity(metric.target_value or 0))
    return MetricObservation(
        name=metric.name,
        target_type=metric.target_type,
        target=target,
        pods=tuple(pods),
        total=total,
        request=request,
    )
