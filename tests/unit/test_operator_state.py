"""What the operator keeps about Pods and functions, and the status it computes from them."""

from __future__ import annotations

from typing import Any

from wasmop.operator.owned_objects import LABEL_REVISION
from wasmop.operator.pod_index import PodIndex, PodInfo
from wasmop.operator.state import FunctionState
from wasmop.wellknown import FUNCTION_KIND, FUNCTION_LABEL


def pod_body(
    name: str,
    *,
    function: str | None = "fib",
    revision: str = "1",
    ready: bool = True,
    phase: str = "Running",
    deleting: bool = False,
    requests: dict[str, str] | None = None,
) -> dict[str, Any]:
    labels = {LABEL_REVISION: revision, **({FUNCTION_LABEL: function} if function else {})}
    meta: dict[str, Any] = {"name": name, "namespace": "bench", "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [{"resources": {"requests": requests or {}}}]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_pod_info_reads_readiness_revision_and_requests() -> None:
    info = PodInfo.from_body(pod_body("a", requests={"cpu": "250m", "memory": "64Mi"}))
    assert (info.ready, info.phase, info.deleting, info.revision) == (True, "Running", False, "1")
    assert info.cpu_request == 0.25
    assert info.memory_request == 64 * 2**20
    bare = PodInfo.from_body({"metadata": {"name": "b"}})
    assert (bare.ready, bare.phase, bare.cpu_request, bare.memory_request) == (
        False,
        "Pending",
        None,
        None,
    )


def test_pod_index_keeps_each_functions_pods_from_the_watch() -> None:
    index = PodIndex()
    assert index.apply("ADDED", pod_body("other", function=None)) is None  # not a function's
    assert index.apply("ADDED", pod_body("a")) == ("bench", "fib")
    index.apply("ADDED", pod_body("b", ready=False))
    index.apply("MODIFIED", pod_body("b", ready=True))
    assert sorted((p.name, p.ready) for p in index.pods("bench", "fib")) == [
        ("a", True),
        ("b", True),
    ]
    index.apply("DELETED", pod_body("a"))
    index.apply("DELETED", pod_body("b"))
    assert index.pods("bench", "fib") == []
    assert index.by_function == {}  # nothing left behind for a deleted function


def function_body(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "fib", "namespace": "bench", "uid": "u", "generation": 3},
        "status": status,
    }


def test_a_restarted_operator_resumes_from_the_status_it_wrote() -> None:
    state = FunctionState.from_body(
        function_body(
            phase="Ready",
            currentRevision=2,
            revisions=[
                {"revision": 1, "digest": "sha256:a", "version": "v1", "configMap": "fib-a"},
                {"revision": 2, "digest": "sha256:b", "version": "v2", "configMap": "fib-b"},
            ],
            timings={"revision": 2, "acceptedAt": "t2"},
            conditions=[{"type": "Ready", "status": "True"}],
        )
    )
    assert (state.namespace, state.name, state.uid, state.generation) == ("bench", "fib", "u", 3)
    assert state.revision == 2
    assert [r.revision for r in state.revisions] == [1, 2]
    assert state.phase is not None and state.phase.value == "Ready"
    assert state.timings.revision == 2
    assert state.reference["kind"] == FUNCTION_KIND
    assert FunctionState.from_body(function_body(phase="NoSuchPhase")).phase is None


def test_replica_counts_come_from_the_pods_as_soon_as_they_are_ready() -> None:
    """The Pod watch sees a replica turn Ready before the Deployment's status says so."""
    state = FunctionState("bench", "fib", revision=2, desired=2)
    state.observe_deployment(
        {"metadata": {"generation": 4}, "status": {"observedGeneration": 3, "replicas": 2}}
    )
    pods = [
        PodInfo.from_body(pod_body("new-1", revision="2")),
        PodInfo.from_body(pod_body("new-2", revision="2", ready=False)),
        PodInfo.from_body(pod_body("old", revision="1", deleting=True)),
        PodInfo.from_body(pod_body("done", revision="2", phase="Succeeded")),
    ]
    workload = state.workload(pods)
    assert workload is not None
    assert (workload.replicas, workload.updated_replicas, workload.ready_replicas) == (2, 2, 1)
    assert workload.observed_generation == 4
    state.note_progress(workload, pods, "t-ready")
    assert state.timings.first_replica_ready_at == "t-ready"
    assert not state.settled  # one of two ready
    both_ready = [pods[0], PodInfo.from_body(pod_body("new-2", revision="2"))]
    state.note_progress(state.workload(both_ready), both_ready, "t-all")
    assert state.timings.all_ready_at == "t-all"
    assert state.settled


def test_status_carries_the_counts_conditions_and_revision() -> None:
    state = FunctionState("bench", "fib", revision=1, desired=1, valid=True)
    state.validation = ("Valid", "ok")
    state.selector = f"{FUNCTION_LABEL}=fib"
    state.observe_deployment({"metadata": {"generation": 1}, "status": {"observedGeneration": 1}})
    status = state.build_status("t", [PodInfo.from_body(pod_body("p"))])
    assert status["phase"] == "Ready"
    assert (status["readyReplicas"], status["desiredReplicas"], status["readyText"]) == (
        1,
        1,
        "1/1",
    )
    assert status["currentRevision"] == 1
    assert status["selector"] == f"{FUNCTION_LABEL}=fib"
    validated = next(c for c in status["conditions"] if c["type"] == "Validated")
    assert (validated["status"], validated["reason"]) == ("True", "Valid")


def test_leaving_and_reaching_zero_replicas_is_recorded_once_each() -> None:
    state = FunctionState("ns", "hello")
    assert state.observe_desired(1, "t0") is None  # first sight: nothing to compare
    assert state.observe_desired(0, "t1") == ("ScaledToZero", "replicas 1 -> 0: idle")
    assert state.observe_desired(0, "t2") is None
    assert state.observe_desired(2, "t3") == ("Activated", "replicas 0 -> 2 (activation 1)")
    assert state.observe_desired(3, "t4") is None
    assert state.activation == {
        "lastScaleToZeroTime": "t1", "lastActivationTime": "t3", "activations": 1,
    }  # fmt: skip
    status = state.build_status("t5", [])
    assert status["activation"] == state.activation


def test_a_restarted_operator_resumes_the_activation_record() -> None:
    body = {
        "metadata": {"name": "hello", "namespace": "ns"},
        "status": {
            "desiredReplicas": 0,
            "activation": {"lastActivationTime": "t0", "activations": 4},
        },
    }
    state = FunctionState.from_body(body)
    assert state.observe_desired(1, "t1") == ("Activated", "replicas 0 -> 1 (activation 5)")


# --- what is written at once, what waits ---------------------------------------------


def _status(**changes: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Deploying",
        "observedGeneration": 1,
        "replicas": 0,
        "readyReplicas": 0,
        "updatedReplicas": 0,
        "availableReplicas": 0,
        "desiredReplicas": 2,
        "readyText": "0/2",
        "timings": {"revision": 1, "acceptedAt": "t0"},
        "conditions": [
            {
                "type": "Available",
                "status": "False",
                "reason": "MinimumReplicasUnavailable",
                "message": "0/2 replicas ready",
                "lastTransitionTime": "t0",
            },
        ],
        "scaling": {"desiredReplicas": 2, "currentMetrics": [], "lastEvaluationTime": "t0"},
    }
    for key, value in changes.items():
        status[key] = value
    return status


def test_counts_alone_are_minor_and_phase_or_conditions_are_significant() -> None:
    from wasmop.operator.state import _comparable, significant

    base = significant(_comparable(_status()))
    counts = _status(replicas=2, updatedReplicas=2, readyReplicas=1, readyText="1/2")
    counts["conditions"] = [{**counts["conditions"][0], "message": "1/2 replicas ready"}]
    counts["timings"] = {**counts["timings"], "firstReplicaReadyAt": "t1"}
    counts["scaling"] = {**counts["scaling"], "currentMetrics": [{"name": "cpu"}]}
    assert significant(_comparable(counts)) == base
    assert significant(_comparable(_status(phase="Ready"))) != base
    flipped = _status()
    flipped["conditions"] = [{**flipped["conditions"][0], "status": "True"}]
    assert significant(_comparable(flipped)) != base
    assert significant(_comparable(_status(desiredReplicas=3))) != base
    rescaled = _status()
    rescaled["scaling"] = {**rescaled["scaling"], "desiredReplicas": 3}
    assert significant(_comparable(rescaled)) != base


def test_the_autoscalers_wording_of_an_unchanged_decision_is_minor() -> None:
    """An idle function's evaluation named cpu one half second and memory the next
    (both say: stays at 1): a status write each time, at once."""
    from wasmop.operator.state import _comparable, significant

    def evaluated(reason: str) -> dict[str, Any]:
        status = _status()
        status["scaling"] = {**status["scaling"], "lastEvaluationReason": reason}
        return significant(_comparable(status))

    cpu = evaluated("cpu 4% < target 70%: stays at 1")
    assert evaluated("memory 28.0Ki < target 500Mi: stays at 1") == cpu


def test_a_new_evaluation_time_alone_is_no_change_at_all() -> None:
    from wasmop.operator.state import _comparable

    later = _status()
    later["scaling"] = {**later["scaling"], "lastEvaluationTime": "t9"}
    later["conditions"] = [{**later["conditions"][0], "lastTransitionTime": "t9"}]
    assert _comparable(later) == _comparable(_status())


# --- which watch events need a reconcile, and what the resync repairs ----------------


def _controller() -> Any:
    from wasmop.operator.function_controller import FunctionController

    return FunctionController(kube=None, events=None, checker=None, gateway="")  # type: ignore[arg-type]


def _function(generation: int = 1, uid: str = "u1", **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "fn", "namespace": "ns", "uid": uid, "generation": generation},
        "spec": {"replicas": 1},
    }
    if status:
        body["status"] = status
    return body


def test_only_a_new_function_or_a_new_generation_needs_a_reconcile() -> None:
    controller = _controller()
    assert controller.observe_function(_function()) is True
    # The operator's own status writes come back as events of the same generation.
    assert controller.observe_function(_function(phase="Deploying")) is False
    assert controller.observe_function(_function(phase="Ready")) is False
    assert controller.observe_function(_function(generation=2)) is True
    assert controller.states[("ns", "fn")].body["metadata"]["generation"] == 2
    # Deleted and created again under the same name: a new function.
    assert controller.observe_function(_function(generation=2, uid="u2")) is True
    deleting = _function(generation=3)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert controller.observe_function(deleting) is False


def test_the_resync_repairs_missing_or_changed_objects_and_adopts_unknown_versions() -> None:
    from wasmop.operator.status import Revision

    controller = _controller()
    body = _function()
    controller.observe_function(body)
    state = controller.states[("ns", "fn")]
    assert controller.drift(state, body, None, None, set()) == "spec not reconciled"
    state.reconciled_generation = 1
    state.valid = True
    state.revision = 1
    state.revisions = (Revision(1, "d" * 64, "1.0.0", "fn-dddddddddddd", "t0"),)
    deployment, service = {"generation": 4}, {"resourceVersion": "100"}
    module = {"fn-dddddddddddd"}
    assert controller.drift(state, body, None, service, module) == "Deployment missing"
    assert controller.drift(state, body, deployment, None, module) == "Service missing"
    assert controller.drift(state, body, deployment, service, set()) == "module ConfigMap missing"
    # After a restart the versions are unknown: taken as they are, then watched.
    assert controller.drift(state, body, deployment, service, module) is None
    assert (state.applied_generation, state.service_version) == (4, "100")
    assert controller.drift(state, body, {"generation": 5}, service, module) == "Deployment changed"
    changed = {"resourceVersion": "101"}
    assert controller.drift(state, body, deployment, changed, module) == "Service changed"
    state.valid = False
    assert controller.drift(state, body, None, None, set()) is None  # nothing to repair


def test_an_image_revision_needs_no_module_configmap_at_resync() -> None:
    """A module from a registry has no ConfigMap (its revision names none): the resync
    must not queue such a function again on every pass."""
    from wasmop.operator.status import Revision

    controller = _controller()
    body = _function()
    controller.observe_function(body)
    state = controller.states[("ns", "fn")]
    state.reconciled_generation, state.valid, state.revision = 1, True, 1
    state.revisions = (Revision(1, "d" * 64, "1.0.0", "", "t0"),)
    deployment, service = {"generation": 4}, {"resourceVersion": "100"}
    assert controller.drift(state, body, deployment, service, set()) is None


def test_every_phase_change_is_an_event_but_those_other_events_say() -> None:
    from wasmop.operator.state import announced
    from wasmop.operator.status import Phase

    assert not announced(None, Phase.DEPLOYING)
    assert announced(None, Phase.PENDING) and announced(None, Phase.INVALID)
    assert announced(Phase.READY, Phase.DEPLOYING)  # a rollout
    assert announced(Phase.DEPLOYING, Phase.READY)
    # In and out of Idle: the Activated and ScaledToZero Events say it.
    assert not announced(Phase.READY, Phase.IDLE) and not announced(Phase.IDLE, Phase.DEPLOYING)
    assert announced(Phase.DEPLOYING, Phase.READY)  # an activation's end


def test_a_shared_module_configmap_goes_when_no_functions_history_names_it() -> None:
    from wasmop.operator.function_controller import unused_module_configmaps
    from wasmop.operator.owned_objects import (
        ANNOTATION_CREATED_BY,
        ANNOTATION_DIGEST,
        CREATOR,
        module_configmap_name,
    )
    from wasmop.operator.state import FunctionState
    from wasmop.operator.status import Revision

    def own(digest: str, **meta: Any) -> dict[str, Any]:
        """Metadata as the operator writes it on a module ConfigMap."""
        annotations = {ANNOTATION_DIGEST: f"sha256:{digest}", ANNOTATION_CREATED_BY: CREATOR}
        return {"creationTimestamp": "2026-01-01T00:00:00Z", "annotations": annotations, **meta}

    used, old, young = (module_configmap_name(c * 64) for c in "abc")
    state = FunctionState("ns", "fn", revisions=(Revision(1, "a" * 64, "1", used, "t"),))
    listed = {
        "ns": {
            used: own("a" * 64, uid="u1"),
            old: own("b" * 64, uid="u2"),
            young: own("c" * 64, uid="u3", creationTimestamp="2026-01-01T00:00:50Z"),
            "fn-aaaaaaaaaaaa": own("d" * 64, uid="u4"),  # an earlier operator's, per function
            module_configmap_name("e" * 64): own(
                "e" * 64, uid="u5", ownerReferences=[{"uid": "x"}]
            ),
            # A tenant's ConfigMap under a module ConfigMap's name, without or with the
            # operator's annotations (then naming another digest than its name's).
            module_configmap_name("f" * 64): {
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "uid": "u7",
            },
            module_configmap_name("0" * 64): own("1" * 64, uid="u8"),
        },
        "other": {used: own("a" * 64, uid="u6")},  # same module, no function there
    }
    now = 1767225660.0  # 2026-01-01T00:01:00Z
    chosen = unused_module_configmaps(listed, [state], now, grace_s=30)
    assert sorted(chosen) == [("ns", old, "u2"), ("other", used, "u6")]


def with_status(body: dict[str, Any], **status: Any) -> dict[str, Any]:
    body["status"].update(status)
    return body


UNSCHEDULABLE = "0/3 nodes are available: 1 node(s) had untolerated taint, 2 Too many pods."


def unschedulable_pod(name: str) -> dict[str, Any]:
    """A Pending Pod the scheduler could not place, with its message."""
    return with_status(
        pod_body(name, ready=False, phase="Pending"),
        conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": UNSCHEDULABLE}
        ],
    )  # fmt: skip


def test_a_pods_problem_is_read_from_the_scheduler_and_the_node() -> None:
    pending = unschedulable_pod("p")
    assert PodInfo.from_body(pending).problem == ("Unschedulable", UNSCHEDULABLE)
    crashed = with_status(
        pod_body("c", ready=False),
        containerStatuses=[
            {
                "ready": False,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 4s"}},
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
            }
        ],
    )
    assert PodInfo.from_body(crashed).problem == (
        "CrashLoopBackOff",
        "last exit: OOMKilled (exit code 137)",
    )
    bad = with_status(
        pod_body("b", ready=False, phase="Pending"),
        containerStatuses=[
            {"ready": False, "state": {"waiting": {"reason": "InvalidModule", "message": "no"}}}
        ],
    )
    assert PodInfo.from_body(bad).problem == ("InvalidModule", "no")
    probing = with_status(
        pod_body("r", ready=False),
        conditions=[
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
             "message": "containers with unready status: [function]: readiness probe failed: 500"}
        ],
        containerStatuses=[{"ready": False, "state": {"running": {}}}],
    )  # fmt: skip
    assert PodInfo.from_body(probing).problem == (
        "ReadinessProbeFailed",
        "containers with unready status: [function]: readiness probe failed: 500",
    )
    starting = with_status(
        pod_body("s", ready=False, phase="Pending"),
        containerStatuses=[{"ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}}],
    )
    assert PodInfo.from_body(starting).problem is None
    assert PodInfo.from_body(pod_body("fine")).problem is None


def test_an_unplaceable_replica_is_the_functions_reason_not_a_rollout() -> None:
    """A function that cannot be placed says so in its conditions, not "RolloutInProgress"
    indefinitely."""
    state = FunctionState("bench", "fib", revision=1, desired=1, valid=True)
    state.observe_deployment({"metadata": {"generation": 1}, "status": {"observedGeneration": 1}})
    pending = unschedulable_pod("fib-x")
    status = state.build_status("t", [PodInfo.from_body(pending)])
    assert status["phase"] == "Deploying"
    conditions = {c["type"]: c for c in status["conditions"]}
    available, progressing = conditions["Available"], conditions["Progressing"]
    assert (available["status"], available["reason"]) == ("False", "Unschedulable")
    assert available["message"] == f"0/1 replicas ready; Pod fib-x: {UNSCHEDULABLE}"
    assert (progressing["status"], progressing["reason"]) == ("True", "Unschedulable")
    assert state.problem == ("Unschedulable", f"Pod fib-x: {UNSCHEDULABLE}")
    ready = state.build_status("t2", [PodInfo.from_body(pod_body("fib-x"))])
    assert ready["phase"] == "Ready" and state.problem is None
    available = next(c for c in ready["conditions"] if c["type"] == "Available")
    assert available["reason"] == "AllReplicasReady"
