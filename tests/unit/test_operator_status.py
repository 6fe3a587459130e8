"""Phase, conditions, millisecond timings, revision history and scaling status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from wasmop.operator.hpa import MetricObservation, PodMetric, decide
from wasmop.operator.status import (
    DeploymentState,
    Phase,
    Revision,
    Timings,
    compute_phase,
    format_time,
    get_condition,
    now_rfc3339,
    orphaned_configmaps,
    parse_revisions,
    parse_time,
    ready_text,
    record_revision,
    revisions_to_status,
    scaling_status,
    set_condition,
    workload_conditions,
)

T0 = "2025-03-01T10:00:00.000Z"
T1 = "2025-03-01T10:00:01.250Z"
T2 = "2025-03-01T10:00:02.500Z"


def test_timestamps_have_milliseconds() -> None:
    moment = datetime(2025, 3, 1, 10, 0, 1, 250_999, tzinfo=UTC)
    assert format_time(moment) == "2025-03-01T10:00:01.250Z"
    cest = timezone(timedelta(hours=2))
    assert format_time(datetime(2025, 3, 1, 12, 0, 0, tzinfo=cest)) == "2025-03-01T10:00:00.000Z"
    assert format_time(datetime(2025, 3, 1, 10, 0, 0)) == T0  # naive is UTC
    assert parse_time(T1) == datetime(2025, 3, 1, 10, 0, 1, 250_000, tzinfo=UTC)
    assert parse_time("2025-03-01T10:00:01Z").microsecond == 0
    stamp = now_rfc3339()
    assert stamp.endswith("Z") and len(stamp) == len(T0)


def test_set_condition_keeps_transition_time_while_status_holds() -> None:
    conditions = set_condition(
        None, "Available", False, "MinimumReplicasUnavailable", "0/2", observed_generation=1, now=T0
    )
    conditions = set_condition(
        conditions, "Validated", True, "Valid", "ok", observed_generation=1, now=T0
    )
    same = set_condition(
        conditions,
        "Available",
        False,
        "MinimumReplicasUnavailable",
        "1/2",
        observed_generation=2,
        now=T1,
    )
    available = get_condition(same, "Available")
    assert available is not None
    assert available["lastTransitionTime"] == T0
    assert available["message"] == "1/2"
    assert available["observedGeneration"] == 2
    flipped = set_condition(
        same, "Available", True, "AllReplicasReady", "2/2", observed_generation=2, now=T2
    )
    available = get_condition(flipped, "Available")
    assert available is not None
    assert (available["status"], available["lastTransitionTime"]) == ("True", T2)
    assert [c["type"] for c in flipped] == ["Available", "Validated"]
    assert (
        set_condition([], "Scaling", "Unknown", "Waiting", "", observed_generation=0, now=T0)[0][
            "status"
        ]
        == "Unknown"
    )


def deployment_body(
    *,
    generation: int = 2,
    observed: int = 2,
    replicas: int = 3,
    ready: int = 3,
    updated: int = 3,
    progressing: tuple[str, str] | None = ("True", "NewReplicaSetAvailable"),
    available: str = "True",
) -> dict:
    conditions = [{"type": "Available", "status": available}]
    if progressing:
        conditions.append(
            {"type": "Progressing", "status": progressing[0], "reason": progressing[1]}
        )
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "conditions": conditions,
        },
    }


def phase(
    body: dict | None,
    desired: int = 3,
    *,
    valid: bool | None = True,
    settled: bool = False,
    waiting: bool = False,
) -> Phase:
    state = None if body is None else DeploymentState.from_deployment(body)
    return compute_phase(
        valid=valid, deployment=state, desired=desired, settled=settled, waiting=waiting
    )


def test_phases() -> None:
    assert phase(deployment_body(), valid=False) == Phase.INVALID
    assert phase(deployment_body(), valid=None) == Phase.PENDING
    assert phase(deployment_body(), waiting=True) == Phase.PENDING
    assert phase(None) == Phase.PENDING
    assert phase(deployment_body()) == Phase.READY
    # Controller has not seen the new template yet.
    assert phase(deployment_body(observed=1)) == Phase.DEPLOYING
    # A rolling update: old pods still around.
    assert phase(deployment_body(replicas=4, updated=2, ready=3)) == Phase.DEPLOYING
    # All pods updated but not yet ready, first time: still deploying.
    assert phase(deployment_body(ready=1)) == Phase.DEPLOYING
    # The same after having been ready: degraded.
    assert phase(deployment_body(ready=1), settled=True) == Phase.DEGRADED
    assert phase(deployment_body(ready=0), settled=True) == Phase.DEGRADED
    assert (
        phase(deployment_body(ready=1, progressing=("False", "ProgressDeadlineExceeded")))
        == Phase.FAILED
    )
    assert phase(deployment_body(replicas=0, ready=0, updated=0), desired=0) == Phase.IDLE
    # Scaled to zero while its last Pod is still terminating: Idle already.
    assert phase(deployment_body(replicas=1, ready=1, updated=1), desired=0) == Phase.IDLE


def test_ready_text_and_workload_conditions() -> None:
    assert ready_text(2, 3) == "2/3"
    conditions = dict(
        (ctype, (status, reason))
        for ctype, status, reason, _ in workload_conditions(
            DeploymentState.from_deployment(deployment_body(ready=2, available="True")), 3
        )
    )
    assert conditions["Available"] == (True, "MinimumReplicasAvailable")
    assert conditions["Progressing"] == (True, "RolloutInProgress")
    done = dict(
        (c[0], c[1:3])
        for c in workload_conditions(DeploymentState.from_deployment(deployment_body()), 3)
    )
    assert done == {
        "Available": (True, "AllReplicasReady"),
        "Progressing": (True, "RolloutComplete"),
    }
    failed = workload_conditions(
        DeploymentState.from_deployment(
            deployment_body(
                ready=0, available="False", progressing=("False", "ProgressDeadlineExceeded")
            )
        ),
        3,
    )
    assert [c[1:3] for c in failed] == [
        (False, "MinimumReplicasUnavailable"),
        (False, "ProgressDeadlineExceeded"),
    ]
    assert workload_conditions(None, 1)[0][2] == "DeploymentMissing"


def test_timings() -> None:
    timings = Timings().for_revision(1, T0)
    assert timings.to_status() == {"revision": 1, "acceptedAt": T0}
    timings = timings.mark("validated_at", T1).mark("deployment_created_at", T1)
    timings = timings.observe_ready(1, 2, T1).observe_ready(2, 2, T2).observe_ready(2, 2, "later")
    assert timings.to_status() == {
        "revision": 1,
        "acceptedAt": T0,
        "validatedAt": T1,
        "deploymentCreatedAt": T1,
        "firstReplicaReadyAt": T1,
        "allReadyAt": T2,
    }
    assert Timings.from_status(timings.to_status()) == timings
    assert timings.for_revision(1, T2) is timings
    assert timings.for_revision(2, T2) == Timings(revision=2, accepted_at=T2)
    with pytest.raises(ValueError, match="unknown timing"):
        timings.mark("ready", T0)


def rec(history, current, digest, version="1.0", limit=5, now=T0):
    return record_revision(
        history,
        current,
        digest=digest,
        version=version,
        config_map=f"fn-{digest}",
        now=now,
        limit=limit,
    )


def test_first_and_unchanged_revision() -> None:
    first = rec((), None, "aaa")
    assert first.changed and not first.rolled_back
    assert first.current == Revision(1, "aaa", "1.0", "fn-aaa", T0)
    again = rec(first.history, first.current.revision, "aaa", now=T1)
    assert not again.changed
    assert again.history == first.history
    assert again.config_maps_to_delete == ()


def test_new_revisions_and_rollback() -> None:
    one = rec((), None, "aaa")
    two = rec(one.history, 1, "bbb", now=T1)
    assert two.current.revision == 2
    assert [r.revision for r in two.history] == [1, 2]
    # Version-only change: a new revision sharing the module's ConfigMap.
    three = rec(two.history, 2, "bbb", version="1.1", now=T2)
    assert three.current.revision == 3
    assert three.current.config_map == "fn-bbb"
    back = rec(three.history, 3, "aaa")
    assert back.rolled_back and back.changed
    assert back.current.revision == 1
    assert back.current.created_at == T0
    assert [r.revision for r in back.history] == [2, 3, 1]
    four = rec(back.history, 1, "ccc")
    assert four.current.revision == 4


def test_history_is_bounded_and_old_configmaps_are_released() -> None:
    update = rec((), None, "d1", limit=3)
    for i in range(2, 6):
        update = rec(update.history, update.current.revision, f"d{i}", limit=3)
    assert [r.revision for r in update.history] == [3, 4, 5]
    assert update.config_maps_to_delete == ("fn-d2",)
    # A ConfigMap shared with a retained revision survives pruning.
    shared = rec((), None, "m", version="1", limit=2)
    shared = rec(shared.history, 1, "m", version="2", limit=2)
    shared = rec(shared.history, 2, "n", version="3", limit=2)
    assert [r.revision for r in shared.history] == [2, 3]
    assert shared.config_maps_to_delete == ()


def test_rollback_entry_is_most_recently_used() -> None:
    update = rec((), None, "a", limit=3)
    update = rec(update.history, 1, "b", limit=3)
    update = rec(update.history, 2, "c", limit=3)
    update = rec(update.history, 3, "a", limit=3)  # roll back to 1
    update = rec(update.history, 1, "d", limit=3)  # 2 ("b") is the least recently used
    assert [r.revision for r in update.history] == [3, 1, 4]
    assert update.config_maps_to_delete == ("fn-b",)


def test_revision_status_round_trip() -> None:
    update = rec(rec((), None, "a").history, 1, "b", now=T1)
    status = revisions_to_status(update)
    assert status["currentRevision"] == 2
    assert status["revisions"][1] == {
        "revision": 2,
        "digest": "b",
        "version": "1.0",
        "configMap": "fn-b",
        "createdAt": T1,
    }
    history, current = parse_revisions(status)
    assert current == 2
    assert history == update.history
    assert parse_revisions(None) == ((), None)
    listed = [module_cm("fn-a"), module_cm("fn-b"), module_cm("fn-x")]
    assert orphaned_configmaps(listed, history, owner_uid="uid-fn") == [("fn-x", "cm-fn-x")]


def module_cm(name: str, *owners: dict[str, object]) -> dict[str, object]:
    """A listed per-function module ConfigMap, by default controlled by WasmFunction uid-fn."""
    default = {"kind": "WasmFunction", "name": "fn", "uid": "uid-fn", "controller": True}
    return {
        "metadata": {
            "name": name,
            "uid": f"cm-{name}",
            "ownerReferences": list(owners) if owners else [default],
        }
    }


def test_module_configmap_collection_needs_the_owner_s_uid() -> None:
    """A ConfigMap carrying the function's label is only collected if this very function
    (its uid) controls it: a tenant's own ConfigMap with the label, or one left by an
    earlier function of the same name, is not the operator's to delete."""
    listed = [
        module_cm("fn-old"),
        module_cm("tenant-labelled", {}),
        module_cm("predecessor", {"kind": "WasmFunction", "name": "fn", "uid": "uid-before"}),
        module_cm("shared", {"kind": "WasmFunction", "name": "fn", "uid": "uid-fn"}),
        {"metadata": {"name": "no-owner", "uid": "cm-no-owner"}},
    ]
    assert orphaned_configmaps(listed, (), owner_uid="uid-fn") == [("fn-old", "cm-fn-old")]


def test_scaling_status() -> None:
    cpu = MetricObservation(
        "cpu", "Utilization", 70, pods=(PodMetric("a", 0.85), PodMetric("b", 0.85)), request=1.0
    )
    up = decide(current_replicas=2, min_replicas=1, max_replicas=5, observations=[cpu], now=0.0)
    status = scaling_status(up, now=T1)
    assert status["desiredReplicas"] == 3
    assert status["lastScaleTime"] == T1
    assert status["lastScaleReason"] == "cpu 85% > target 70%: 2 -> 3"
    assert status["currentMetrics"] == [
        {
            "name": "cpu",
            "targetType": "Utilization",
            "target": "70%",
            "targetValue": 70,
            "current": "85%",
            "currentValue": 85,
            "proposedReplicas": 3,
            "readyPods": 2,
            "missingPods": 0,
            "unreadyPods": 0,
        }
    ]
    steady = decide(current_replicas=3, min_replicas=1, max_replicas=5, observations=[cpu], now=1.0)
    later = scaling_status(steady, now=T2, previous=status)
    assert later["lastScaleTime"] == T1
    assert later["lastEvaluationTime"] == T2
    assert later["lastEvaluationReason"].startswith("cpu 85%")
