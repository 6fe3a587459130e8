"""The autoscaler's inputs from the gateway's /-/stats: idleness, the panic window's
rate and the forecast, read from recorded readings (no cluster, no gateway)."""

from __future__ import annotations

from typing import Any

import pytest
from wasmop.operator.scaling import Autoscaler, MetricsCollector
from wasmop.operator.spec import WasmFunction
from wasmop.wellknown import API_VERSION


def function(**scaling: Any) -> WasmFunction:
    rps = {
        "type": "Pods",
        "pods": {
            "metric": {"name": "requests_per_second"},
            "target": {"type": "AverageValue", "averageValue": "10"},
        },
    }
    body = {
        "apiVersion": API_VERSION,
        "kind": "WasmFunction",
        "metadata": {"name": "hello", "namespace": "ns"},
        "spec": {
            "module": {"configMapRef": {"name": "m"}},
            "scaling": {"maxReplicas": 10, "metrics": [rps], **scaling},
        },
    }
    return WasmFunction.from_body(body)


def stats(requests: int, idle: float | None = 0.0, in_flight: int = 0) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "namespace": "ns", "service": "hello", "requests": requests, "inFlight": in_flight,
    }  # fmt: skip
    if idle is not None:
        entry["idleSeconds"] = idle
    return {"services": [entry]}


def autoscaler() -> Autoscaler:
    collector = MetricsCollector(nodes=None, gateway="http://127.0.0.1:1")  # type: ignore[arg-type]
    return Autoscaler(None, None, None, collector, None)  # type: ignore[arg-type]


def test_functions_that_predict_or_go_to_zero_are_judged_every_half_second() -> None:
    scaler = autoscaler()
    assert scaler.interval_for(function().spec.scaling) == 5.0
    assert scaler.interval_for(None) == 5.0
    for scaling in ({"minReplicas": 0}, {"predictive": {"enabled": True}}):
        assert scaler.interval_for(function(**scaling).spec.scaling) == 0.5


def test_functions_that_react_fast_are_judged_every_quarter_second() -> None:
    """A rise crosses a level about half a second in; a half-second tick could add as
    much again and put the answer past the one-second reaction target."""
    scaler = autoscaler()
    for scaling in (
        {"reaction": "Fast"},
        {"reaction": "Fast", "minReplicas": 0, "predictive": {"enabled": True}},
    ):
        assert scaler.interval_for(function(**scaling).spec.scaling) == 0.25


def test_idleness_is_taken_from_the_latest_reading_only() -> None:
    scaler = autoscaler()
    scaler.collector.apply_gateway_stats(stats(5, idle=42.0), now=100.0)
    assert scaler.collector.idle == {("ns", "hello"): 42.0}
    scaler.collector.apply_gateway_stats(stats(5, idle=None), now=101.0)
    assert scaler.collector.idle == {}  # a reading without it: not idle for all we know


def test_the_panic_window_sees_a_burst_the_stable_rate_dilutes() -> None:
    fn = function(reaction="Fast", panicWindowSeconds=2)
    scaler = autoscaler()
    count = 0
    for second in range(11):  # 10 s: 1 request/s, then 100 in the last two seconds
        count += 1 if second < 9 else 50
        scaler.collector.apply_gateway_stats(stats(count), now=float(second))
    assert scaler.panic_rate(fn) == 50.0
    readings = scaler.rate_observations(fn, scaler.panic_rate(fn))
    assert len(readings) == 1 and readings[0].total == 50.0


def test_the_forecast_follows_a_ramp_ahead_of_it() -> None:
    fn = function(predictive={"enabled": True, "horizonSeconds": 5})
    scaler = autoscaler()
    assert scaler.forecast_rate(fn) is None  # no readings yet
    count = 0
    for second in range(31):  # the rate grows by 1/s every second
        count += second
        scaler.collector.apply_gateway_stats(stats(count), now=float(second))
    forecast = scaler.forecast_rate(fn)
    assert forecast is not None and forecast > 30.0  # beyond the latest second's 30/s


def test_one_autoscaler_loop_wakes_each_function_when_its_own_delay_says() -> None:
    from wasmop.operator.scaling import TickSchedule

    schedule = TickSchedule(interval=15.0)
    fast, slow = ("ns", "fast"), ("ns", "slow")
    assert schedule.due([fast, slow], 100.0) == [fast, slow]  # new: at once
    schedule.done(fast, 100.0, 1.0)  # reaction Fast: judged every second
    schedule.done(slow, 100.0, 15.0)
    assert schedule.sleep_for(100.0) == 1.0
    assert schedule.due([fast, slow], 101.0) == [fast]
    schedule.done(fast, 101.0, 1.0)
    assert schedule.due([fast, slow], 115.0) == [fast, slow]
    # A function no longer autoscaled is forgotten; with none the loop waits an interval.
    assert schedule.due([], 116.0) == []
    assert schedule.sleep_for(116.0) == 15.0


def test_the_request_rate_spans_a_second_of_readings_not_just_the_last_two() -> None:
    """Readings a quarter second apart: the rate is taken over the last second of them,
    so one reading that happened to catch two requests instead of three does not swing
    the count; a step in the load still shows within that second."""
    collector = autoscaler().collector
    count = 0.0
    for i in range(9):  # 2 s at 10 requests/s, read every 0.25 s, counted unevenly
        count += 2 if i % 2 else 3
        collector.apply_gateway_stats(stats(count), now=100.0 + i * 0.25)
    assert collector.rps[("ns", "hello")] == 10.0  # 10 requests over the last 1.0 s
    for i in range(9, 11):  # then 40 requests/s for half a second
        count += 10
        collector.apply_gateway_stats(stats(count), now=100.0 + i * 0.25)
    assert collector.rps[("ns", "hello")] == 25.0  # (5 + 20) over the last second
    collector.apply_gateway_stats(stats(1.0), now=103.0)  # the gateway restarted
    collector.apply_gateway_stats(stats(3.0), now=103.5)
    assert collector.rps[("ns", "hello")] == 4.0


def test_an_activated_function_gets_the_whole_idle_window_before_going_back_to_zero() -> None:
    """The gateway's reading, taken just before the activation's request arrived, says
    idle for 10 s; the function has had its replica for 0.1 s: it counts as idle for
    0.1 s, not 10 (it was scaled straight back to zero, and its held requests waited for
    a second activation)."""
    scaler = autoscaler()
    key = ("ns", "hello")
    scaler.collector.apply_gateway_stats(stats(0, idle=10.0), now=100.0)
    assert scaler.idle_seconds(key, 0, now=100.0) == 10.0  # at zero: the reading itself
    assert scaler.idle_seconds(key, 1, now=100.0) == 0.0  # activated now
    assert scaler.idle_seconds(key, 1, now=100.1) == pytest.approx(0.1)
    scaler.collector.apply_gateway_stats(stats(0, idle=13.0), now=103.0)
    assert scaler.idle_seconds(key, 1, now=103.0) == pytest.approx(3.0)  # running 3 s
    scaler.idle_seconds(key, 0, now=104.0)  # back at zero
    assert scaler.idle_seconds(key, 1, now=110.0) == 0.0  # the next activation: anew
    scaler.collector.apply_gateway_stats(stats(0, idle=None), now=111.0)
    assert scaler.idle_seconds(key, 1, now=111.0) is None  # no reading: not idle
