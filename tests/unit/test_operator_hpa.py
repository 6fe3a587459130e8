"""The HPA algorithm: per-metric proposals, missing and unready pods, stabilization, bounds."""

from __future__ import annotations

from wasmop.operator.hpa import (
    MetricObservation,
    PodMetric,
    Recommendation,
    decide,
    decide_for,
    observation_for,
    replicas_for_metric,
    stabilize,
)
from wasmop.operator.spec import ScalingSpec

MIB = 2**20


def cpu(
    *values: float | None, target: float = 70, request: float = 1.0, **kw: object
) -> MetricObservation:
    pods = tuple(PodMetric(name=f"p{i}", value=v) for i, v in enumerate(values))
    return MetricObservation("cpu", "Utilization", target, pods=pods, request=request, **kw)  # type: ignore[arg-type]


def test_utilization_scales_up_with_ceil() -> None:
    result = replicas_for_metric(cpu(0.85, 0.85), current_replicas=2)
    assert result.current == 85
    assert result.proposed_replicas == 3  # ceil(2 * 85 / 70)
    assert result.describe() == "cpu 85% > target 70%"


def test_within_tolerance_keeps_current() -> None:
    result = replicas_for_metric(cpu(0.75, 0.75, 0.75), current_replicas=3)
    assert result.proposed_replicas == 3  # 75/70 = 1.07, inside 10%
    assert replicas_for_metric(cpu(0.78, 0.78, 0.78), current_replicas=3).proposed_replicas == 4


def test_utilization_is_truncated_to_whole_percent_like_upstream() -> None:
    # 0.7699 of the request is 76%: a ratio of 1.0857, still within tolerance.
    assert replicas_for_metric(cpu(0.7699), current_replicas=1).current == 76


def test_average_value_memory() -> None:
    metric = MetricObservation(
        "memory",
        "AverageValue",
        500 * MIB,
        pods=tuple(PodMetric(f"p{i}", 250 * MIB) for i in range(3)),
    )
    result = replicas_for_metric(metric, current_replicas=3)
    assert result.proposed_replicas == 2  # ceil(3 * 250/500)
    assert result.describe() == "memory 250Mi < target 500Mi"


def test_missing_pods_count_as_full_request_on_scale_down() -> None:
    # Three pods at 10% and one without a sample: taking the gap as 100% keeps three pods
    # instead of collapsing to one.
    result = replicas_for_metric(cpu(0.1, 0.1, 0.1, None, target=50), current_replicas=4)
    assert result.missing_pods == 1
    assert result.proposed_replicas == 3  # ceil(4 * 32 / 50)


def test_missing_pods_on_scale_up_never_reverse_direction() -> None:
    # Two pods at 60% of a 50% target want more; the missing third counted as 0 brings the
    # average to 40%, a scale-down signal: upstream then keeps the current count.
    result = replicas_for_metric(cpu(0.6, 0.6, None, target=50), current_replicas=3)
    assert result.proposed_replicas == 3
    assert result.note == "pods without samples or not ready could reverse the direction"


def test_unready_pods_count_as_zero_on_scale_up() -> None:
    pods = tuple(PodMetric(f"r{i}", 0.6) for i in range(3)) + tuple(
        PodMetric(f"u{i}", 0.0, ready=False) for i in range(3)
    )
    metric = MetricObservation("cpu", "Utilization", 50, pods=pods, request=1.0)
    result = replicas_for_metric(metric, current_replicas=6)
    assert result.unready_pods == 3
    # Ignoring the unready pods alone would propose ceil(1.2 * 3) = 4, a scale-down.
    assert result.proposed_replicas == 6


def test_unready_pods_are_ignored_on_scale_down() -> None:
    pods = (*(PodMetric(f"r{i}", 0.2) for i in range(3)), PodMetric("u", 5.0, ready=False))
    result = replicas_for_metric(
        MetricObservation("cpu", "Utilization", 50, pods=pods, request=1.0), current_replicas=4
    )
    assert result.proposed_replicas == 2  # ceil(3 * 20/50), the unready 500% never counts


def test_pending_terminating_and_failed_pods() -> None:
    pods = (
        PodMetric("a", 0.9),
        PodMetric("b", 0.9),
        PodMetric("pending", None, ready=False, phase="Pending"),
        PodMetric("gone", 9.0, deleting=True),
        PodMetric("failed", 9.0, phase="Failed"),
    )
    result = replicas_for_metric(
        MetricObservation("cpu", "Utilization", 50, pods=pods, request=1.0), current_replicas=3
    )
    assert (result.ready_pods, result.unready_pods, result.missing_pods) == (2, 1, 0)
    # 90% on two pods plus a pending one at 0: 60% of 50% on three pods -> ceil(3.6) = 4.
    assert result.proposed_replicas == 4


def test_readiness_does_not_matter_for_memory() -> None:
    pods = (PodMetric("a", 600 * MIB), PodMetric("b", 600 * MIB, ready=False))
    result = replicas_for_metric(
        MetricObservation("memory", "AverageValue", 500 * MIB, pods=pods), 2
    )
    assert result.ready_pods == 2
    assert result.proposed_replicas == 3  # ceil(2 * 1.2)


def test_function_wide_total_like_an_object_metric() -> None:
    rps = MetricObservation("requests_per_second", "AverageValue", 20, total=100)
    result = replicas_for_metric(rps, current_replicas=2)
    assert result.current == 50
    assert result.proposed_replicas == 5
    steady = MetricObservation("requests_per_second", "AverageValue", 20, total=41)
    assert replicas_for_metric(steady, current_replicas=2).proposed_replicas == 2


def test_metric_errors() -> None:
    assert replicas_for_metric(cpu(), 2).error == "no pods to measure"
    none_ready = replicas_for_metric(cpu(None, None), 2)
    assert not none_ready.valid
    assert none_ready.missing_pods == 2
    no_request = MetricObservation("cpu", "Utilization", 70, pods=(PodMetric("a", 0.5),))
    assert "no cpu request" in (replicas_for_metric(no_request, 1).error or "")


def test_decide_scales_up_with_a_readable_reason() -> None:
    decision = decide(
        current_replicas=2,
        min_replicas=1,
        max_replicas=10,
        observations=[cpu(0.85, 0.85)],
        now=1000.0,
    )
    assert decision.desired_replicas == 3
    assert decision.scale
    assert decision.reason == "cpu 85% > target 70%: 2 -> 3"
    assert decision.history[-1] == Recommendation(at=1000.0, replicas=3)


def test_decide_takes_the_largest_proposal() -> None:
    rps = MetricObservation("requests_per_second", "AverageValue", 10, total=60)
    decision = decide(
        current_replicas=2,
        min_replicas=1,
        max_replicas=10,
        observations=[cpu(0.85, 0.85), rps],
        now=0.0,
    )
    assert decision.desired_replicas == 6
    assert decision.reason.startswith("requests_per_second 30 > target 10: 2 -> 6")
    assert [m.proposed_replicas for m in decision.metrics] == [3, 6]


def test_decide_within_tolerance() -> None:
    decision = decide(
        current_replicas=3,
        min_replicas=1,
        max_replicas=10,
        observations=[cpu(0.72, 0.72, 0.72)],
        now=0.0,
    )
    assert not decision.scale
    assert decision.reason == "cpu 72% > target 70%: stays at 3 (within 10% tolerance)"


def test_scale_down_held_by_stabilization_window() -> None:
    low = [cpu(0.1, 0.1, 0.1, 0.1)]
    history = (Recommendation(900.0, 4),)
    held = decide(
        current_replicas=4,
        min_replicas=1,
        max_replicas=10,
        observations=low,
        history=history,
        now=1000.0,
    )
    assert held.recommended_replicas == 1
    assert held.desired_replicas == 4
    assert "held by the scale-down window of 300s" in held.reason
    later = decide(
        current_replicas=4,
        min_replicas=1,
        max_replicas=10,
        observations=low,
        history=held.history,
        now=1301.0,
    )
    # The 900 s entry is gone; the 1000 s recommendation of 1 is all that is left.
    assert later.desired_replicas == 1
    assert later.reason == "cpu 10% < target 70%: 4 -> 1"


def test_fresh_history_is_seeded_with_current_replicas() -> None:
    # An operator that just started has no recommendations: it must not scale down at once.
    decision = decide(
        current_replicas=4,
        min_replicas=1,
        max_replicas=10,
        observations=[cpu(0.1, 0.1, 0.1, 0.1)],
        now=5.0,
    )
    assert decision.desired_replicas == 4
    immediate = decide(
        current_replicas=4,
        min_replicas=1,
        max_replicas=10,
        observations=[cpu(0.1, 0.1, 0.1, 0.1)],
        now=5.0,
        scale_down_window=0,
    )
    assert immediate.desired_replicas == 1


def test_scale_up_window_takes_the_lowest_recommendation() -> None:
    rec, history = stabilize(
        6, 2, (Recommendation(70.0, 3), Recommendation(10.0, 2)), 100.0, 60, 300
    )
    assert rec == 3  # the 10 s entry is outside the 60 s window
    assert history[-1] == Recommendation(100.0, 6)
    rec, _ = stabilize(6, 2, (Recommendation(70.0, 2),), 100.0, 0, 300)
    assert rec == 6


def test_stabilize_prunes_entries_older_than_both_windows() -> None:
    _, history = stabilize(3, 3, (Recommendation(1.0, 9), Recommendation(95.0, 4)), 100.0, 10, 50)
    assert history == (Recommendation(95.0, 4), Recommendation(100.0, 3))


def test_bounds() -> None:
    hot = [cpu(*(1.4 for _ in range(5)))]
    decision = decide(current_replicas=5, min_replicas=1, max_replicas=8, observations=hot, now=0.0)
    assert decision.recommended_replicas == 10
    assert decision.desired_replicas == 8
    assert "bounded by maxReplicas 8" in decision.reason
    above = decide(current_replicas=12, min_replicas=1, max_replicas=8, observations=hot, now=0.0)
    assert (above.desired_replicas, above.reason) == (8, "above maxReplicas 8: 12 -> 8")
    below = decide(current_replicas=1, min_replicas=2, max_replicas=8, observations=hot, now=0.0)
    assert below.desired_replicas == 2


def test_scaled_to_zero_pauses_autoscaling() -> None:
    decision = decide(
        current_replicas=0, min_replicas=1, max_replicas=8, observations=[cpu(0.9)], now=0.0
    )
    assert decision.desired_replicas == 0
    assert not decision.able_to_scale


def test_no_usable_metrics_keeps_replicas() -> None:
    decision = decide(
        current_replicas=3, min_replicas=1, max_replicas=8, observations=[cpu(None)], now=0.0
    )
    assert decision.desired_replicas == 3
    assert not decision.able_to_scale
    assert "no usable metrics" in decision.reason


def test_no_scale_down_while_a_metric_is_missing() -> None:
    memory = MetricObservation("memory", "AverageValue", 500 * MIB)  # no pods: fails
    decision = decide(
        current_replicas=4,
        min_replicas=1,
        max_replicas=8,
        observations=[cpu(0.1, 0.1, 0.1, 0.1), memory],
        now=0.0,
        scale_down_window=0,
    )
    assert decision.desired_replicas == 4
    assert "memory could not be measured" in decision.reason
    # A scale-up still happens on the metrics that do work.
    up = decide(
        current_replicas=2,
        min_replicas=1,
        max_replicas=8,
        observations=[cpu(0.9, 0.9), memory],
        now=0.0,
    )
    assert up.desired_replicas == 3


def test_decide_for_a_spec() -> None:
    scaling = ScalingSpec.parse(
        {
            "minReplicas": 1,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "100Mi"},
                    },
                },
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "concurrency"},
                        "target": {"type": "AverageValue", "averageValue": "500m"},
                    },
                },
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}},
        },
        "spec.scaling",
    )
    memory, concurrency = scaling.metrics
    memory_obs = observation_for(
        memory, pods=[PodMetric("a", 150 * MIB), PodMetric("b", 150 * MIB)]
    )
    assert memory_obs.target == 100 * MIB
    conc_obs = observation_for(concurrency, pods=[PodMetric("a", 1.0), PodMetric("b", 1.0)])
    assert conc_obs.target == 0.5
    decision = decide_for(scaling, current_replicas=2, observations=[memory_obs, conc_obs], now=0.0)
    assert decision.desired_replicas == 4  # concurrency 1.0 per pod vs 0.5 wants 4; memory 3
    cpu_obs = observation_for(
        ScalingSpec.parse({"maxReplicas": 3}, "s").metrics[0],
        pods=[PodMetric("a", 0.2)],
        request=0.25,
    )
    assert cpu_obs.target == 70
    assert replicas_for_metric(cpu_obs, 1).current == 80


# --------------------------------------------------------------------------- beyond upstream


def rps(total: float | None, target: float = 10) -> MetricObservation:
    return MetricObservation("requests_per_second", "AverageValue", target, total=total)


def test_panic_window_raises_a_scale_up_at_once() -> None:
    """The stable reading (over the interval) is still low; the panic window sees the
    burst: the recommendation follows the panic window."""
    decision = decide(
        current_replicas=1, min_replicas=1, max_replicas=10,
        observations=[rps(12)], panic=[rps(45)], now=100.0,
    )  # fmt: skip
    assert decision.desired_replicas == 5
    assert decision.driver == "panic"
    assert "panic window" in decision.reason


def test_panic_window_never_lowers_the_recommendation() -> None:
    """A lull over the panic window does not scale down: the stable reading holds, and the
    scale-down window holds it further."""
    history = (Recommendation(at=90.0, replicas=4),)
    decision = decide(
        current_replicas=4, min_replicas=1, max_replicas=10,
        observations=[rps(38)], panic=[rps(2)], history=history, now=100.0,
    )  # fmt: skip
    assert decision.desired_replicas == 4
    assert decision.driver == "stable"


def test_forecast_scales_ahead_but_never_below_the_reactive_count() -> None:
    ahead = decide(
        current_replicas=2, min_replicas=1, max_replicas=10,
        observations=[rps(20)], forecast=[rps(55)], now=100.0,
    )  # fmt: skip
    assert (ahead.desired_replicas, ahead.driver) == (6, "forecast")
    assert "forecast" in ahead.reason
    # A forecast below what the load asks for now changes nothing.
    below = decide(
        current_replicas=2, min_replicas=1, max_replicas=10,
        observations=[rps(60)], forecast=[rps(5)], now=100.0,
    )  # fmt: skip
    assert (below.desired_replicas, below.driver) == (6, "stable")


def test_forecast_stays_within_max_replicas() -> None:
    decision = decide(
        current_replicas=2, min_replicas=1, max_replicas=4,
        observations=[rps(20)], forecast=[rps(500)], now=100.0,
    )  # fmt: skip
    assert decision.desired_replicas == 4


def test_an_idle_function_scales_to_zero_after_its_window() -> None:
    common = {
        "current_replicas": 2, "min_replicas": 0, "max_replicas": 5,
        "observations": [rps(0)], "now": 100.0, "scale_to_zero_after": 60,
    }  # fmt: skip
    assert decide(**common, idle_seconds=59).desired_replicas == 2  # type: ignore[arg-type]
    gone = decide(**common, idle_seconds=61)  # type: ignore[arg-type]
    assert (gone.desired_replicas, gone.driver) == (0, "idle")
    assert gone.reason == "no requests for 61 s: 2 -> 0"
    # Requests in flight keep it, whatever the clock says; unknown idleness too.
    assert decide(**common, idle_seconds=600, demand=True).desired_replicas == 2  # type: ignore[arg-type]
    assert decide(**common, idle_seconds=None).desired_replicas == 2  # type: ignore[arg-type]


def test_a_running_function_that_may_scale_to_zero_keeps_one_replica() -> None:
    decision = decide(
        current_replicas=3, min_replicas=0, max_replicas=5,
        observations=[rps(0.5)], now=100.0, idle_seconds=1, scale_down_window=0,
    )  # fmt: skip
    assert decision.desired_replicas == 1


def test_an_idle_function_stays_at_zero_until_demand() -> None:
    idle = decide(
        current_replicas=0, min_replicas=0, max_replicas=5, observations=[rps(0)], now=1.0
    )
    assert (idle.desired_replicas, idle.scale) == (0, False)
    assert idle.reason.startswith("idle")
    woken = decide(
        current_replicas=0, min_replicas=0, max_replicas=5,
        observations=[rps(35)], now=1.0, demand=True,
    )  # fmt: skip
    assert (woken.desired_replicas, woken.driver) == (4, "demand")
    # Held requests but no rate yet: one replica.
    first = decide(
        current_replicas=0, min_replicas=0, max_replicas=5,
        observations=[rps(None)], now=1.0, demand=True,
    )  # fmt: skip
    assert first.desired_replicas == 1


def test_decide_for_reads_scale_to_zero_from_the_spec() -> None:
    spec = ScalingSpec.parse(
        {"minReplicas": 0, "maxReplicas": 3, "scaleToZeroAfterSeconds": 30}, "spec.scaling"
    )
    decision = decide_for(spec, current_replicas=1, observations=[rps(0)], now=5.0, idle_seconds=31)
    assert decision.desired_replicas == 0
