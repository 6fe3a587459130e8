"""Watch rows and per-function timelines, from synthetic events."""

from __future__ import annotations

import math

import pandas as pd
from wasmop.bench.deploy import first_ready_ms, function_manifest, plain_deployment
from wasmop.bench.watch import (
    COLUMNS,
    deployment_ready,
    first_state_after,
    function_milestones,
    function_ready,
    observation_row,
    operator_timings,
    phase_durations,
    pods_ready_ms,
)
from wasmop.wellknown import FUNCTION_LABEL


def wf(phase: str | None, ready: int, replicas: int = 1, generation: int = 1, observed: int = 1):  # type: ignore[no-untyped-def]
    status = {"readyReplicas": ready, "observedGeneration": observed}
    if phase:
        status["phase"] = phase
    return {
        "metadata": {"name": "f", "namespace": "ns", "uid": "u1", "generation": generation,
                     "resourceVersion": "1"},
        "spec": {"replicas": replicas},
        "status": status,
    }  # fmt: skip


def deployment(desired: int, ready: int, total: int | None = None, generation: int = 1):  # type: ignore[no-untyped-def]
    return {
        "metadata": {"name": "f", "namespace": "ns", "generation": generation,
                     "labels": {FUNCTION_LABEL: "f"}},
        "spec": {"replicas": desired},
        "status": {"observedGeneration": generation, "readyReplicas": ready,
                   "updatedReplicas": ready, "replicas": desired if total is None else total},
    }  # fmt: skip


def pod(node: str = "", phase: str = "Pending", ready: bool = False, deleting: bool = False):  # type: ignore[no-untyped-def]
    meta = {"name": "f-1", "namespace": "ns", "labels": {FUNCTION_LABEL: "f"}}
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"nodeName": node} if node else {},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"restartCount": 2, "state": {"running": {}}}],
        },
    }


def test_readiness_rules() -> None:
    assert function_ready(wf("Ready", 1))
    assert not function_ready(wf("Ready", 0))
    assert not function_ready(wf("Ready", 2, replicas=2, generation=2, observed=1))
    assert not function_ready(wf("Deploying", 1))
    assert deployment_ready(deployment(2, 2))
    assert not deployment_ready(deployment(1, 1, total=3))  # old pods still terminating
    assert not deployment_ready(deployment(2, 1))


def test_rows_keep_what_timelines_need() -> None:
    row = observation_row("Pod", "MODIFIED", pod("n1", "Running", True), 5.0)
    assert set(row) == set(COLUMNS)
    assert (row["function"], row["node"], row["ready"], row["restarts"]) == ("f", "n1", True, 2)
    assert (
        observation_row("Pod", "MODIFIED", pod("n1", "Running", True, deleting=True), 6)["ready"]
        is False
    )
    node = {
        "metadata": {"name": "n1"},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},
    }
    assert observation_row("Node", "MODIFIED", node, 1)["phase"] == "NotReady"
    row = observation_row("WasmFunction", "MODIFIED", wf("Ready", 1), 7)
    assert (row["function"], row["phase"], row["ready"]) == ("f", "Ready", True)


def timeline() -> pd.DataFrame:
    events = [
        (0, "Deployment", "LISTED", deployment(1, 1)),  # before the run: ignored
        (100, "WasmFunction", "ADDED", wf(None, 0)),
        (130, "Deployment", "ADDED", deployment(1, 0)),
        (140, "Pod", "ADDED", pod()),
        (150, "Pod", "MODIFIED", pod("n1")),
        (400, "Pod", "MODIFIED", pod("n1", "Running")),
        (450, "Pod", "MODIFIED", pod("n1", "Running", True)),
        (460, "Deployment", "MODIFIED", deployment(1, 1)),
        (470, "WasmFunction", "MODIFIED", wf("Deploying", 1)),
        (490, "WasmFunction", "MODIFIED", wf("Ready", 1)),
    ]
    return pd.DataFrame([observation_row(k, e, o, t) for t, k, e, o in events])


def test_milestones_and_phases_of_a_deployment() -> None:
    milestones = function_milestones(timeline(), {"f": 90.0})
    m = milestones.iloc[0]
    assert (m["function_seen_ms"], m["deployment_seen_ms"], m["pod_created_ms"]) == (100, 130, 140)
    assert (m["pod_scheduled_ms"], m["pod_running_ms"], m["pod_ready_ms"]) == (150, 400, 450)
    assert (m["pods_ready_ms"], m["deployment_ready_ms"], m["function_ready_ms"]) == (
        450,
        460,
        490,
    )
    phases = phase_durations(milestones).set_index("phase")["duration_ms"]
    assert phases.to_dict() == {
        "operator": 40, "replicaset": 10, "scheduling": 10, "pod_start": 300,
        "rollout": 0, "status": 40,
    }  # fmt: skip
    assert phases.sum() == 490 - 90


def test_missing_milestones_leave_phases_out() -> None:
    frame = timeline()
    frame = frame[frame["kind"] != "WasmFunction"]
    milestones = function_milestones(frame, {"f": 90.0, "absent": 0.0})
    assert math.isnan(milestones.set_index("function").loc["f", "function_ready_ms"])
    phases = phase_durations(milestones)
    assert "status" not in set(phases["phase"]) and set(phases["function"]) == {"f"}


def test_first_state_after_and_first_ready() -> None:
    frame = timeline()
    t = first_state_after(
        frame, 200, "Pod", function="f", predicate=lambda o: o["phase"] == "Running"
    )
    assert t == 400
    assert math.isnan(first_state_after(frame, 0, "Node", predicate=lambda o: o["ready"]))
    rows = frame.to_dict("records")
    assert first_ready_ms(rows, "Deployment", "f", 50) == 460
    assert first_ready_ms(rows, "Deployment", "f", 50, replicas=3) is None
    assert first_ready_ms(rows, "WasmFunction", "f", 0) == 490


def test_operator_timings_in_epoch_ms() -> None:
    obj = {"status": {"timings": {"acceptedAt": "2025-01-01T00:00:00.250Z", "revision": 2}}}
    assert operator_timings(obj) == {"acceptedAt_ms": 1735689600250.0}


def test_manifests() -> None:
    body = function_manifest("f", "fib", replicas=3, spec={"scaling": {"maxReplicas": 4}})
    assert body["spec"]["module"] == {"configMapRef": {"name": "wasm-fib"}}
    assert body["spec"]["replicas"] == 3 and body["spec"]["scaling"]["maxReplicas"] == 4
    deployment_body = plain_deployment("f", "wasm-fib", 2)
    labels = deployment_body["spec"]["template"]["metadata"]["labels"]
    assert labels[FUNCTION_LABEL] == "f"
    assert deployment_body["spec"]["selector"]["matchLabels"].items() <= labels.items()


async def test_setup_calls_retry_only_transient_api_errors() -> None:
    import pytest
    from wasmop.bench.deploy import retrying
    from wasmop.kube import ApiError

    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ApiError(503, "ServiceUnavailable", "starting")
        return "ok"

    assert await retrying(flaky, delay_s=0) == "ok" and len(calls) == 3

    async def forbidden() -> None:
        calls.append(1)
        raise ApiError(403, "Forbidden", "no")

    calls.clear()
    with pytest.raises(ApiError):
        await retrying(forbidden, delay_s=0)
    assert len(calls) == 1


def test_pods_ready_counts_pods_ready_at_the_same_time() -> None:
    def pod_row(t: float, name: str, ready: bool, event: str = "MODIFIED") -> dict:
        return {"t_ms": t, "kind": "Pod", "function": "f", "name": name, "event": event,
                "ready": ready}  # fmt: skip

    frame = pd.DataFrame(
        [
            pod_row(10, "a", True),
            pod_row(20, "b", False),
            pod_row(30, "a", False),  # a restarts
            pod_row(40, "b", True),
            pod_row(50, "a", True),
            pod_row(60, "c", True),
            pod_row(70, "a", True, "DELETED"),
        ]
    )
    assert pods_ready_ms(frame, "f", 1, 0) == 10
    assert pods_ready_ms(frame, "f", 2, 0) == 50
    assert pods_ready_ms(frame, "f", 3, 0) == 60
    assert pods_ready_ms(frame, "f", 2, 65) == 70  # b and c, after a went away
    assert math.isnan(pods_ready_ms(frame, "f", 4, 0))


def test_scaling_decisions_include_one_right_at_load_start() -> None:
    from wasmop.bench.experiments.scaling import scaling_decisions

    def wf_row(t: float, desired: int, ready: int) -> dict:
        return {"t_ms": t, "kind": "WasmFunction", "name": "s", "event": "MODIFIED",
                "replicas_desired": desired, "replicas_ready": ready}  # fmt: skip

    frame = pd.DataFrame(
        [wf_row(0, 1, 1), wf_row(100, 3, 1), wf_row(900, 3, 3), wf_row(2000, 1, 3)]
    )
    decisions = scaling_decisions(frame, "s", after_ms=50)
    assert list(decisions["to_replicas"]) == [3, 1]
    assert decisions.loc[0, "from_replicas"] == 1
    assert decisions.loc[0, "decision_to_ready_ms"] == 800
