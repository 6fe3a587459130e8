"""What the operator knows about one WasmFunction, and the status it writes from it.

Handlers change this state (validation verdicts, the Deployment's progress, scaling
decisions) and then call ``write``: the whole status is computed from the state under
one lock per function and sent as a merge patch only when it changed. Timings and
revisions live in the object's status, so a restarted operator picks them up again.

Each write is a write to etcd and an event to every watcher, so a status is written at
once only when something a user or controller acts on changes (:func:`significant`:
phase, a condition's status or reason, the generation observed, the revision, desired
replicas, a scaling decision); a change of counts alone (ready replicas while a rollout
goes on, metric values) waits to be written with the next significant change or after
a few seconds (``defer_minor``). A function created and Ready in one go is written twice:
Deploying, then Ready.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.kube.events import EventRecorder
from wasmop.operator.pod_index import PodInfo
from wasmop.operator.status import (
    ConditionType,
    DeploymentState,
    Phase,
    Revision,
    Timings,
    compute_phase,
    now_rfc3339,
    parse_revisions,
    ready_text,
    set_condition,
    workload_conditions,
)
from wasmop.wellknown import API_VERSION, FUNCTION_KIND, FUNCTION_PLURAL

log = logging.getLogger(__name__)

IMAGE_RETRY_S = 5.0
IMAGE_RETRY_MAX_S = 300.0

# Events for phase changes: (reason, warning).
PHASE_EVENTS: dict[Phase, tuple[str, bool]] = {
    Phase.PENDING: ("Pending", False),
    Phase.DEPLOYING: ("Deploying", False),
    Phase.READY: ("Ready", False),
    Phase.DEGRADED: ("Degraded", True),
    Phase.FAILED: ("Failed", True),
    Phase.INVALID: ("Invalid", True),
    Phase.IDLE: ("Idle", False),
}


@dataclass
class FunctionState:
    namespace: str
    name: str
    uid: str = ""
    generation: int = 0
    observed_generation: int = 0
    desired: int = 1
    valid: bool | None = None
    validation: tuple[str, str] = ("Pending", "not validated yet")
    waiting: tuple[str, str] | None = None
    revision: int | None = None
    revisions: tuple[Revision, ...] = ()
    timings: Timings = field(default_factory=Timings)
    deployment: DeploymentState | None = None
    settled: bool = False
    runtime: str = ""
    url: str = ""
    selector: str = ""
    scaling: dict[str, Any] | None = None
    # Scale to zero: when the function last went from zero replicas to some (activated)
    # and from some to zero (idle), and how many activations there were.
    activation: dict[str, Any] = field(default_factory=dict)
    desired_seen: int | None = None  # spec's replicas as last reconciled (None: not yet)
    conditions: list[dict[str, Any]] = field(default_factory=list)
    phase: Phase | None = None
    written: dict[str, Any] | None = None
    body: dict[str, Any] | None = None  # the latest object, for retries outside kopf
    write_pending: bool = False
    minor_pending: bool = False  # a write of counts alone is due later
    has_hpa: bool | None = None  # None: unknown (after a restart)
    image_failures: int = 0  # registry failures in a row: the retry backs off
    # The generation last reconciled to the end (None: not in this process yet): watch
    # events of the same generation (its own status writes among them) need no reconcile.
    reconciled_generation: int | None = None
    # What the last apply left: the Deployment's generation and the Service's version, so
    # the resync sees a change by someone else without reading the objects.
    applied_generation: int | None = None
    service_version: str | None = None
    # What the last reconcile that applied every object had to go on, replicas aside
    # (:func:`~wasmop.operator.function_controller.replicas_basis`): a new generation
    # with the same basis is a scale (the gateway's activation, the autoscaler,
    # ``kubectl scale``) and changes the Deployment alone.
    applied_basis: tuple[str, Any] | None = None
    # Why replicas do not serve (a Pod's reason and message), last written and reported.
    problem: tuple[str, str] | None = None
    problem_reported: str | None = None
    # One reconcile at a time; status writes (from Pod and Deployment events too) take the
    # shorter ``lock``, so a slow reconcile never holds back the status of ready Pods.
    reconciling: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> FunctionState:
        """Resume from what an earlier operator wrote into status."""
        meta, status = body["metadata"], body.get("status") or {}
        history, current = parse_revisions(status)
        phase = status.get("phase")
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 0),
            revision=current,
            revisions=history,
            timings=Timings.from_status(status.get("timings")),
            conditions=list(status.get("conditions") or []),
            phase=Phase(phase) if phase in Phase.__members__.values() else None,
            scaling=status.get("scaling"),
            activation=dict(status.get("activation") or {}),
            desired_seen=status.get("desiredReplicas"),
        )

    def image_retry_delay(self) -> float:
        """Seconds until the next try after one more registry failure: 5 s doubling to
        5 minutes, as a kubelet backs off image pulls."""
        self.image_failures += 1
        return min(IMAGE_RETRY_MAX_S, IMAGE_RETRY_S * 2 ** (self.image_failures - 1))

    @property
    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": FUNCTION_KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }

    # --- observations ---------------------------------------------------------------

    def observe_deployment(self, body: dict[str, Any] | None) -> None:
        self.deployment = None if body is None else DeploymentState.from_deployment(body)

    def workload(self, pods: list[PodInfo]) -> DeploymentState | None:
        """The Deployment's state with its replica counts taken from the Pods themselves.

        The Pod watch sees a replica turn Ready before the ReplicaSet and Deployment
        controllers have each written their status, so counting Pods keeps the function's
        status as fresh as the Pods (the Deployment still supplies its conditions).
        """
        d = self.deployment
        if d is None or not pods:
            return d
        live = [p for p in pods if not p.deleting and p.phase not in ("Succeeded", "Failed")]
        current = [p for p in live if p.revision == str(self.revision)]
        ready = sum(1 for p in live if p.ready)
        return replace(
            d,
            observed_generation=max(d.observed_generation, d.generation),
            replicas=len(live),
            updated_replicas=len(current),
            ready_replicas=ready,
            available_replicas=ready,
        )

    def note_progress(
        self, workload: DeploymentState | None, pods: list[PodInfo], now: str
    ) -> None:
        """Per-phase timestamps and whether the rollout has settled."""
        if workload is None or self.revision is None:
            return
        if any(p.ready and not p.deleting and p.revision == str(self.revision) for p in pods) or (
            not pods and workload.updated_replicas >= 1 and workload.ready_replicas >= 1
        ):
            self.timings = self.timings.mark("first_replica_ready_at", now)
        if workload.rolled_out(self.desired) and workload.ready_replicas >= self.desired:
            if self.desired > 0:
                self.timings = self.timings.mark("all_ready_at", now)
            self.settled = True

    # --- status ---------------------------------------------------------------------

    def build_status(self, now: str, pods: list[PodInfo]) -> dict[str, Any]:
        d = self.workload(pods)
        self.note_progress(d, pods, now)
        phase = compute_phase(
            valid=self.valid,
            deployment=d,
            desired=self.desired,
            settled=self.settled,
            waiting=self.waiting is not None,
        )
        gen = self.observed_generation
        conditions = set_condition(
            self.conditions,
            ConditionType.VALIDATED,
            bool(self.valid) if self.valid is not None else "Unknown",
            *self.validation,
            observed_generation=gen,
            now=now,
        )
        if self.waiting is not None:
            conditions = set_condition(
                conditions, ConditionType.AVAILABLE, False, *self.waiting,
                observed_generation=gen, now=now,
            )  # fmt: skip
        else:
            self.problem = replica_problem(pods, self.revision) if phase in UNSERVED else None
            for ctype, ok, reason, message in workload_conditions(d, self.desired):
                if self.problem is not None and (
                    (ctype == ConditionType.AVAILABLE and not ok)
                    or (ctype == ConditionType.PROGRESSING and reason == "RolloutInProgress")
                ):
                    # The cause, rather than "a rollout is in progress", indefinitely.
                    reason, message = self.problem[0], f"{message}; {self.problem[1]}"
                conditions = set_condition(
                    conditions, ctype, ok, reason, message, observed_generation=gen, now=now
                )
        if self.scaling is not None:
            scaling_reason = self.scaling.get("lastEvaluationReason", "")
            able = bool(self.scaling.get("ableToScale", True))
            conditions = set_condition(
                conditions, ConditionType.SCALING, able,
                "ScalingActive" if able else "ScalingLimited", scaling_reason,
                observed_generation=gen, now=now,
            )  # fmt: skip
        self.conditions = conditions
        ready = d.ready_replicas if d else 0
        status: dict[str, Any] = {
            "phase": phase.value,
            "observedGeneration": gen,
            "replicas": d.replicas if d else 0,
            "readyReplicas": ready,
            "updatedReplicas": d.updated_replicas if d else 0,
            "availableReplicas": d.available_replicas if d else 0,
            "desiredReplicas": self.desired,
            "readyText": ready_text(ready, self.desired),
            "selector": self.selector,
            "url": self.url,
            "runtime": self.runtime,
            "timings": self.timings.to_status(),
            "conditions": conditions,
        }
        if self.revision is not None:
            status["currentRevision"] = self.revision
            status["revisions"] = [r.to_status() for r in self.revisions]
        if self.scaling is not None:
            status["scaling"] = self.scaling
        if self.activation:
            status["activation"] = self.activation
        return status

    def observe_desired(self, desired: int, now: str) -> tuple[str, str] | None:
        """Note the replicas the spec asks for now; an Event's reason and message when
        that left zero ("Activated") or reached it ("ScaledToZero"), else None. Nothing is
        judged before the first observation (a restarted operator resumes from status)."""
        previous, self.desired_seen = self.desired_seen, desired
        if previous is None or (previous == 0) == (desired == 0):
            return None
        if previous == 0:
            count = int(self.activation.get("activations", 0)) + 1
            self.activation = {**self.activation, "lastActivationTime": now, "activations": count}
            return "Activated", f"replicas 0 -> {desired} (activation {count})"
        self.activation = {**self.activation, "lastScaleToZeroTime": now}
        return "ScaledToZero", f"replicas {previous} -> 0: idle"


# Fields that only count or time what is going on: written with the next significant
# change, or after a delay (``defer_minor``), never each on its own at once.
MINOR_FIELDS = ("replicas", "readyReplicas", "updatedReplicas", "availableReplicas", "readyText")
MINOR_TIMINGS = ("firstReplicaReadyAt",)


# Phases in which a replica that cannot serve is the news.
UNSERVED = frozenset({Phase.DEPLOYING, Phase.DEGRADED})


def replica_problem(pods: list[PodInfo], revision: int | None) -> tuple[str, str] | None:
    """The first problem of the function's live Pods (the current revision's first), as
    (reason, "<pod>: <message>")."""
    live = sorted((p for p in pods if not p.deleting and p.problem), key=lambda p: p.name)
    current = [p for p in live if p.revision == str(revision)]
    for pod in current or live:
        assert pod.problem is not None
        reason, message = pod.problem
        return reason, f"Pod {pod.name}: {message}" if message else f"Pod {pod.name}"
    return None


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    """The status without what changes on every pass: transition times of conditions and
    the time of the latest scaling evaluation."""
    conditions = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]
    ]
    comparable = {**status, "conditions": conditions}
    if isinstance(status.get("scaling"), dict):
        comparable["scaling"] = {
            k: v for k, v in status["scaling"].items() if k != "lastEvaluationTime"
        }
    return comparable


def significant(comparable: dict[str, Any]) -> dict[str, Any]:
    """What must reach the API server at once: the status less counts, condition
    messages (they carry the counts), the first-ready time, metric values and the
    autoscaler's wording of an unchanged decision (an idle function's reason flipped
    between its cpu and memory metrics every half second: a write each time)."""
    kept = {k: v for k, v in comparable.items() if k not in MINOR_FIELDS}
    kept["conditions"] = [
        {k: v for k, v in c.items() if k != "message"} for c in comparable["conditions"]
    ]
    kept["timings"] = {
        k: v for k, v in (comparable.get("timings") or {}).items() if k not in MINOR_TIMINGS
    }
    if isinstance(comparable.get("scaling"), dict):
        kept["scaling"] = {
            k: v
            for k, v in comparable["scaling"].items()
            if k not in ("currentMetrics", "lastEvaluationReason")
        }
    return kept


class WriteResult(StrEnum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"
    DEFERRED = "deferred"  # only minor fields changed: write them later


async def write_status(
    kube: Kube,
    events: EventRecorder,
    state: FunctionState,
    pods: list[PodInfo],
    *,
    defer_minor: bool = False,
) -> WriteResult:
    """Patch the function's status if it changed; post an Event on a phase change.

    With ``defer_minor``, a change of minor fields alone is not written (DEFERRED): the
    caller writes it later. Callers hold ``state.lock``.
    """
    now = now_rfc3339()
    status = state.build_status(now, pods)
    comparable = _comparable(status)
    if comparable == state.written:
        return WriteResult.UNCHANGED
    if (
        defer_minor
        and state.written is not None
        and significant(comparable) == significant(state.written)
    ):
        return WriteResult.DEFERRED
    path = api_path(API_VERSION, FUNCTION_PLURAL, state.namespace, state.name, "status")
    try:
        await kube.patch(path, {"status": status})
    except ApiError as exc:
        if exc.not_found:
            return WriteResult.UNCHANGED
        raise
    state.written = comparable
    problem = state.problem
    if problem is not None and problem[0] != state.problem_reported:
        events.record(state.reference, problem[0], problem[1], warning=True)
        log.warning("%s/%s: %s: %s", state.namespace, state.name, *problem)
    state.problem_reported = problem[0] if problem is not None else None
    phase = Phase(status["phase"])
    if phase != state.phase:
        reason, warning = PHASE_EVENTS[phase]
        message = _phase_message(state, phase, status)
        if announced(state.phase, phase):
            events.record(state.reference, reason, message, warning=warning)
        log.info("%s/%s is %s: %s", state.namespace, state.name, phase.value, message)
        state.phase = phase
    return WriteResult.WRITTEN


def announced(before: Phase | None, after: Phase) -> bool:
    """Whether a phase change gets an Event: every one but a new function's first step to
    Deploying, which its creation already says, and the steps in and out of Idle, which
    the ``Activated`` and ``ScaledToZero`` Events say (one write less per function
    created, two per activation: 25 functions woken at once posted 50 of them to an API
    server busy with their Pods)."""
    if before is None and after == Phase.DEPLOYING:
        return False
    return not (after == Phase.IDLE or (before == Phase.IDLE and after == Phase.DEPLOYING))


def _phase_message(state: FunctionState, phase: Phase, status: dict[str, Any]) -> str:
    if phase == Phase.INVALID:
        return state.validation[1]
    if phase == Phase.PENDING and state.waiting is not None:
        return state.waiting[1]
    if phase == Phase.IDLE:
        return "scaled to zero replicas; the next request through the gateway activates it"
    revision = f" (revision {state.revision})" if state.revision is not None else ""
    return f"{status['readyText']} replicas ready{revision}"
