"""Cold starts: which functions each wave wakes, where an activation's time goes, and
which held requests count as lost."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from wasmop.bench.experiments.cold_start import (
    PHASES,
    activation_milestones,
    activation_phases,
    cold_vs_warm,
    lost_requests,
    wave_plan,
)
from wasmop.bench.watch import COLUMNS


def test_waves_take_the_functions_idle_longest_round_the_pool() -> None:
    assert wave_plan([1], 3, 5) == [[0], [1], [2]]
    assert wave_plan([2, 3], 1, 4) == [[0, 1], [2, 3, 0]]
    with pytest.raises(ValueError, match="cannot wake 5"):
        wave_plan([5], 1, 4)


def event(t_ms: float, kind: str, function: str, **fields: object) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(COLUMNS)
    row.update(t_ms=t_ms, kind=kind, event="MODIFIED", name=function, function=function)
    row.update(fields)
    return row


def cold_request(function: str = "fn-000", **fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "wave": 1, "batch": 1, "kind": "cold", "function": function, "index": 0,
        "t_ms": 1000.0, "latency_ms": 300.0, "status": 200, "ok": True, "reason": "",
        "hold_ms": 280.0,
    }  # fmt: skip
    row.update(fields)
    return row


def events(*rows: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(COLUMNS))


def test_an_activation_splits_into_phases_that_add_up_to_its_latency() -> None:
    requests = pd.DataFrame([cold_request()])
    watch = events(
        event(900.0, "WasmFunction", "fn-000", replicas_desired=0),  # before the request
        event(1040.0, "WasmFunction", "fn-000", replicas_desired=1),
        event(1080.0, "Pod", "fn-000", event="ADDED", ready=False),
        event(1200.0, "Pod", "fn-000", ready=True),
        event(1200.0, "Pod", "fn-001", ready=True),  # another function's Pod
    )
    milestones = activation_milestones(requests, watch)
    [m] = milestones.to_dict("records")
    assert (m["scaled_ms"], m["pod_created_ms"], m["pod_ready_ms"]) == (1040, 1080, 1200)
    assert (m["released_ms"], m["answered_ms"]) == (1280, 1300)
    phases = activation_phases(milestones).set_index("phase")["duration_ms"]
    assert list(phases.index) == [p for p, _, _ in PHASES]
    assert phases.to_dict() == {
        "gateway_to_scale": 40, "scale_to_pod": 40, "pod_start": 120,
        "endpoint_to_gateway": 80, "first_byte": 20,
    }  # fmt: skip
    assert phases.sum() == 300


def test_milestones_seen_out_of_order_never_make_a_phase_negative() -> None:
    """The Pod's watch delivered its Ready after the gateway had released the request
    (another watch, its own lag): that phase is zero, and the total still holds."""
    requests = pd.DataFrame([cold_request(hold_ms=150.0)])
    watch = events(
        event(1050.0, "WasmFunction", "fn-000", replicas_desired=1),
        event(1100.0, "Pod", "fn-000", event="ADDED"),
        event(1180.0, "Pod", "fn-000", ready=True),
    )
    phases = activation_phases(activation_milestones(requests, watch))
    assert (phases["duration_ms"] >= 0).all()
    durations = phases.set_index("phase")["duration_ms"]
    assert durations["endpoint_to_gateway"] == 0
    assert durations.sum() == 300


def test_a_missing_milestone_leaves_its_phase_out_and_a_failed_request_has_none() -> None:
    requests = pd.DataFrame([cold_request(), cold_request("fn-001", status=503, ok=False)])
    watch = events(event(1040.0, "WasmFunction", "fn-000", replicas_desired=1))
    milestones = activation_milestones(requests, watch)
    assert math.isnan(milestones.iloc[0]["pod_created_ms"])
    phases = activation_phases(milestones)
    assert set(phases["function"]) == {"fn-000"}
    assert set(phases["phase"]) == {"gateway_to_scale", "endpoint_to_gateway", "first_byte"}
    assert phases["duration_ms"].sum() == 300


def test_a_held_request_is_lost_unless_answered_or_refused_with_its_reason() -> None:
    requests = pd.DataFrame(
        [
            cold_request(status=200),
            cold_request(status=503, reason="ActivationTimeout", kind="unplaceable"),
            cold_request(status=503, reason="ActivationQueueFull"),
            cold_request(status=503, reason=""),  # no reason: lost
            cold_request(status=0, reason=""),  # no answer at all: lost
            cold_request(status=502, reason="UpstreamUnavailable"),  # not an activation's
            cold_request(status=0, kind="warm"),  # a warm request is not held
        ]
    )
    lost = lost_requests(requests)
    assert list(lost["status"]) == [503, 0, 502]


def test_cold_is_set_against_warm_from_the_same_run() -> None:
    cold = pd.DataFrame({"batch": [1] * 10 + [25] * 10, "latency_ms": [200.0] * 10 + [900.0] * 10})
    warm = pd.DataFrame({"latency_ms": [4.0] * 10})
    table = cold_vs_warm(cold, warm).set_index("batch")
    assert table.loc[1, "cold_to_warm_p50_ratio"] == 50
    assert table.loc[25, "cold_p95_ms"] == 900
    assert table.loc[1, "warm_n"] == 10
