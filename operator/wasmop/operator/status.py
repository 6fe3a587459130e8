"""Pure helpers for WasmFunction status: phase, conditions, timings, revision history.

Kubernetes timestamps are whole seconds; the benchmarks need milliseconds, so every time the
operator writes is an RFC 3339 string with exactly three fractional digits in UTC
("2025-01-31T12:00:00.123Z"). Conditions follow the API conventions: ``lastTransitionTime``
moves only when ``status`` changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from wasmop.operator.hpa import MetricResult, ScalingDecision, format_metric_value

__all__ = [
    "DEFAULT_REVISION_HISTORY",
    "ConditionType",
    "DeploymentState",
    "Phase",
    "Revision",
    "RevisionUpdate",
    "Timings",
    "compute_phase",
    "controlled_by",
    "format_time",
    "get_condition",
    "now_rfc3339",
    "orphaned_configmaps",
    "parse_revisions",
    "parse_time",
    "ready_text",
    "record_revision",
    "revisions_to_status",
    "scaling_status",
    "set_condition",
    "workload_conditions",
]

DEFAULT_REVISION_HISTORY = 5


class Phase(StrEnum):
    PENDING = "Pending"
    DEPLOYING = "Deploying"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    INVALID = "Invalid"
    IDLE = "Idle"  # scaled to zero replicas: the next request activates it


class ConditionType(StrEnum):
    VALIDATED = "Validated"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    SCALING = "Scaling"


# --------------------------------------------------------------------------- time


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_rfc3339(now: datetime | None = None) -> str:
    return format_time(now or datetime.now(UTC))


def parse_time(text: str) -> datetime:
    """Parse any RFC 3339 timestamp the API server or the operator wrote."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# --------------------------------------------------------------------------- conditions


def get_condition(
    conditions: Iterable[Mapping[str, Any]] | None, ctype: str
) -> dict[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == ctype:
            return dict(condition)
    return None


def set_condition(
    conditions: Iterable[Mapping[str, Any]] | None,
    ctype: str,
    status: bool | str,
    reason: str,
    message: str,
    *,
    observed_generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """A new conditions list with ``ctype`` set; order is kept, new types are appended."""
    status_text = ("True" if status else "False") if isinstance(status, bool) else status
    result: list[dict[str, Any]] = []
    found = False
    for existing in conditions or ():
        if existing.get("type") != ctype:
            result.append(dict(existing))
            continue
        found = True
        keep_time = existing.get("status") == status_text and existing.get("lastTransitionTime")
        result.append(
            {
                "type": ctype,
                "status": status_text,
                "reason": reason,
                "message": message,
                "observedGeneration": observed_generation,
                "lastTransitionTime": keep_time or now,
            }
        )
    if not found:
        result.append(
            {
                "type": ctype,
                "status": status_text,
                "reason": reason,
                "message": message,
                "observedGeneration": observed_generation,
                "lastTransitionTime": now,
            }
        )
    return result


# --------------------------------------------------------------------------- phase


@dataclass(frozen=True)
class DeploymentState:
    """The parts of a Deployment's metadata and status that decide a function's phase."""

    generation: int = 0
    observed_generation: int = 0
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    available: bool | None = None
    progressing: bool | None = None
    progressing_reason: str = ""
    progressing_message: str = ""

    @classmethod
    def from_deployment(cls, body: Mapping[str, Any]) -> DeploymentState:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        available = get_condition(status.get("conditions"), "Available")
        progressing = get_condition(status.get("conditions"), "Progressing")
        return cls(
            generation=int(meta.get("generation") or 0),
            observed_generation=int(status.get("observedGeneration") or 0),
            replicas=int(status.get("replicas") or 0),
            ready_replicas=int(status.get("readyReplicas") or 0),
            updated_replicas=int(status.get("updatedReplicas") or 0),
            available_replicas=int(status.get("availableReplicas") or 0),
            available=None if available is None else available.get("status") == "True",
            progressing=None if progressing is None else progressing.get("status") == "True",
            progressing_reason=(progressing or {}).get("reason", "") or "",
            progressing_message=(progressing or {}).get("message", "") or "",
        )

    @property
    def deadline_exceeded(self) -> bool:
        return self.progressing is False and self.progressing_reason == "ProgressDeadlineExceeded"

    def rolled_out(self, desired: int) -> bool:
        """The controller saw the latest template and only updated pods remain."""
        return (
            self.observed_generation >= self.generation
            and self.updated_replicas >= desired
            and self.replicas <= self.updated_replicas
        )


def compute_phase(
    *,
    valid: bool | None,
    deployment: DeploymentState | None,
    desired: int,
    settled: bool,
    waiting: bool = False,
) -> Phase:
    """The function's phase.

    ``valid`` is None before validation finished; ``waiting`` means valid but blocked on
    something outside the function (runtime missing or without ready nodes). ``settled``
    means every desired replica has been ready at least once since the last rollout or
    replica-count change: unready pods before that are a rollout in progress (Deploying),
    after it they are a failure (Degraded). No replicas desired is Idle, whatever Pods are
    still on their way out.
    """
    if valid is False:
        return Phase.INVALID
    if valid is None or waiting or deployment is None:
        return Phase.PENDING
    if desired == 0:
        return Phase.IDLE
    if deployment.deadline_exceeded:
        return Phase.FAILED
    if not deployment.rolled_out(desired):
        return Phase.DEPLOYING
    if deployment.ready_replicas >= desired:
        return Phase.READY
    return Phase.DEGRADED if settled else Phase.DEPLOYING


def ready_text(ready: int, desired: int) -> str:
    """``status.readyText`` for the Ready printer column, like kubectl's "2/3"."""
    return f"{ready}/{desired}"


def workload_conditions(
    deployment: DeploymentState | None, desired: int
) -> list[tuple[str, bool, str, str]]:
    """Available and Progressing as (type, status, reason, message), mirrored from the
    Deployment with the ready count in the message."""
    if deployment is None:
        return [
            (ConditionType.AVAILABLE, False, "DeploymentMissing", "no Deployment yet"),
            (ConditionType.PROGRESSING, False, "DeploymentMissing", "no Deployment yet"),
        ]
    counts = f"{deployment.ready_replicas}/{desired} replicas ready"
    if desired == 0:
        available = (True, "ScaledToZero", "no replicas desired")
    elif deployment.ready_replicas >= desired:
        available = (True, "AllReplicasReady", counts)
    elif deployment.available:
        available = (True, "MinimumReplicasAvailable", counts)
    else:
        available = (False, "MinimumReplicasUnavailable", counts)
    if deployment.deadline_exceeded:
        progressing = (False, "ProgressDeadlineExceeded", deployment.progressing_message or counts)
    elif deployment.rolled_out(desired) and deployment.ready_replicas >= desired:
        progressing = (True, "RolloutComplete", counts)
    else:
        # One reason for the whole rollout: mirroring each step of the Deployment
        # controller (NewReplicaSetCreated, ReplicaSetUpdated, ...) would rewrite the
        # function's status several times per rollout and tell the user nothing more.
        progressing = (True, "RolloutInProgress", counts)
    return [
        (ConditionType.AVAILABLE, *available),
        (ConditionType.PROGRESSING, *progressing),
    ]


# --------------------------------------------------------------------------- timings


_TIMING_KEYS = {
    "accepted_at": "acceptedAt",
    "validated_at": "validatedAt",
    "deployment_created_at": "deploymentCreatedAt",
    "first_replica_ready_at": "firstReplicaReadyAt",
    "all_ready_at": "allReadyAt",
}


@dataclass(frozen=True)
class Timings:
    """Per-phase timestamps of the current revision's rollout (``status.timings``)."""

    revision: int | None = None
    accepted_at: str | None = None
    validated_at: str | None = None
    deployment_created_at: str | None = None
    first_replica_ready_at: str | None = None
    all_ready_at: str | None = None

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> Timings:
        raw = raw or {}
        values = {attr: raw.get(key) for attr, key in _TIMING_KEYS.items()}
        return cls(revision=raw.get("revision"), **values)

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.revision is not None:
            out["revision"] = self.revision
        for attr, key in _TIMING_KEYS.items():
            value = getattr(self, attr)
            if value is not None:
                out[key] = value
        return out

    def mark(self, attr: str, now: str) -> Timings:
        """Set a timestamp once; a later call for the same phase keeps the first time."""
        if attr not in _TIMING_KEYS:
            raise ValueError(f"unknown timing {attr!r}; one of {', '.join(_TIMING_KEYS)}")
        if getattr(self, attr) is not None:
            return self
        return replace(self, **{attr: now})

    def for_revision(self, revision: int, now: str) -> Timings:
        """Start over for a new revision: its rollout is accepted now."""
        if self.revision == revision:
            return self
        return Timings(revision=revision, accepted_at=now)

    def observe_ready(self, ready: int, desired: int, now: str) -> Timings:
        timings = self
        if ready >= 1:
            timings = timings.mark("first_replica_ready_at", now)
        if desired > 0 and ready >= desired:
            timings = timings.mark("all_ready_at", now)
        return timings


# --------------------------------------------------------------------------- revisions


@dataclass(frozen=True)
class Revision:
    """One module/version pair the function has run, as kept in ``status.revisions``.

    A module from an image also keeps the image by digest (``image``, what its Pods pull)
    and the reference it was resolved from (``source``, spec.module.image as written): the
    same source and version again mean this revision, whatever the tag points at now.
    """

    revision: int
    digest: str
    version: str
    config_map: str
    created_at: str
    image: str = ""
    source: str = ""

    @classmethod
    def from_status(cls, raw: Mapping[str, Any]) -> Revision:
        return cls(
            revision=int(raw["revision"]),
            digest=str(raw["digest"]),
            version=str(raw["version"]),
            config_map=str(raw.get("configMap") or ""),
            created_at=str(raw.get("createdAt", "")),
            image=str(raw.get("image") or ""),
            source=str(raw.get("source") or ""),
        )

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "revision": self.revision,
            "digest": self.digest,
            "version": self.version,
            "configMap": self.config_map,
            "createdAt": self.created_at,
        }
        if self.image:
            out["image"] = self.image
            out["source"] = self.source
        return out

    def same_content(self, digest: str, version: str, image: str = "") -> bool:
        return self.digest == digest and self.version == version and self.image == image


def pinned_image(history: Iterable[Revision], source: str, version: str) -> str | None:
    """The image by digest a revision resolved ``source`` to for ``version`` (the newest
    such revision), or None: a tag is resolved once per spec, and a rollback to an older
    spec returns to the digest it had, even though the tag has moved since."""
    matching = [r for r in history if r.source == source and r.version == version and r.image]
    return max(matching, key=lambda r: r.revision).image if matching else None


@dataclass(frozen=True)
class RevisionUpdate:
    """The result of :func:`record_revision`.

    ``history`` is ordered by last use, the current revision last. ``config_maps_to_delete``
    are ConfigMaps no retained revision refers to any more.
    """

    current: Revision
    history: tuple[Revision, ...]
    config_maps_to_delete: tuple[str, ...]
    changed: bool
    rolled_back: bool


def parse_revisions(status: Mapping[str, Any] | None) -> tuple[tuple[Revision, ...], int | None]:
    """``status.revisions`` and ``status.currentRevision`` as typed values."""
    status = status or {}
    history = tuple(Revision.from_status(r) for r in status.get("revisions") or ())
    current = status.get("currentRevision")
    return history, None if current is None else int(current)


def revisions_to_status(update: RevisionUpdate) -> dict[str, Any]:
    return {
        "currentRevision": update.current.revision,
        "revisions": [r.to_status() for r in update.history],
    }


def record_revision(
    history: Sequence[Revision],
    current_revision: int | None,
    *,
    digest: str,
    version: str,
    config_map: str,
    now: str,
    limit: int = DEFAULT_REVISION_HISTORY,
    image: str = "",
    source: str = "",
) -> RevisionUpdate:
    """Bookkeeping when a function is reconciled with ``digest`` and ``version``.

    Same content as the current revision: nothing changes. Content seen in an older entry: a
    rollback, which reuses that entry and its number (and its ConfigMap). New content: a new
    revision numbered one above any kept. The least recently used entries beyond ``limit``
    are dropped; the current one never is.
    """
    limit = max(1, limit)
    entries = list(history)
    current = next((r for r in entries if r.revision == current_revision), None)
    if current is not None and current.same_content(digest, version, image):
        entries.remove(current)
        entries.append(current)
        return RevisionUpdate(current, tuple(entries), (), changed=False, rolled_back=False)

    previous = next((r for r in entries if r.same_content(digest, version, image)), None)
    if previous is not None:
        entries.remove(previous)
        chosen, rolled_back = previous, True
    else:
        number = max([r.revision for r in entries] + [current_revision or 0]) + 1
        chosen = Revision(number, digest, version, config_map, now, image, source)
        rolled_back = False
    if current is not None:
        # The revision being left becomes the most recent history entry before the new one.
        entries.remove(current)
        entries.append(current)
    entries.append(chosen)

    dropped = entries[: max(0, len(entries) - limit)]
    kept = entries[len(dropped) :]
    still_used = {r.config_map for r in kept}
    delete = tuple(
        dict.fromkeys(
            r.config_map for r in dropped if r.config_map and r.config_map not in still_used
        )
    )
    return RevisionUpdate(chosen, tuple(kept), delete, changed=True, rolled_back=rolled_back)


def controlled_by(metadata: Mapping[str, Any], owner_uid: str) -> bool:
    """Whether the object with this metadata is controlled by the object ``owner_uid``."""
    return bool(owner_uid) and any(
        ref.get("uid") == owner_uid and ref.get("controller")
        for ref in metadata.get("ownerReferences") or ()
    )


def orphaned_configmaps(
    listed: Iterable[Mapping[str, Any]], history: Iterable[Revision], *, owner_uid: str
) -> list[tuple[str, str]]:
    """(name, uid) of per-function module ConfigMaps that no revision in the history
    refers to, e.g. left behind when the operator stopped between creating one and
    writing status.

    ``listed`` are found by the function's label, which anyone who can write ConfigMaps
    in the namespace can set: only those the function (``owner_uid``) controls count.
    """
    used = {r.config_map for r in history}
    return sorted(
        (meta["name"], meta.get("uid", ""))
        for meta in (item["metadata"] for item in listed)
        if meta["name"] not in used and controlled_by(meta, owner_uid)
    )


# --------------------------------------------------------------------------- scaling


def _metric_status(result: MetricResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": result.name,
        "targetType": result.target_type,
        "target": format_metric_value(result, result.target),
        "targetValue": result.target,
        "readyPods": result.ready_pods,
        "missingPods": result.missing_pods,
        "unreadyPods": result.unready_pods,
    }
    if result.current is not None:
        out["current"] = format_metric_value(result, result.current)
        out["currentValue"] = round(result.current, 6)
    if result.proposed_replicas is not None:
        out["proposedReplicas"] = result.proposed_replicas
    if result.error:
        out["error"] = result.error
    return out


def scaling_status(
    decision: ScalingDecision, *, now: str, previous: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``status.scaling`` after a pass: the latest evaluation, and the last actual scale."""
    previous = previous or {}
    out: dict[str, Any] = {
        "desiredReplicas": decision.desired_replicas,
        "currentMetrics": [_metric_status(m) for m in decision.metrics],
        "lastEvaluationTime": now,
        "lastEvaluationReason": decision.reason,
        "ableToScale": decision.able_to_scale,
    }
    if decision.recommended_replicas is not None:
        out["recommendedReplicas"] = decision.recommended_replicas
    if decision.scale:
        out["lastScaleTime"] = now
        out["lastScaleReason"] = decision.reason
    else:
        for key in ("lastScaleTime", "lastScaleReason"):
            if previous.get(key):
                out[key] = previous[key]
    return out
