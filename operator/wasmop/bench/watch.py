"""Watch-based timing: client timestamps of every WasmFunction, Deployment, Pod and Node
change, in milliseconds.

Kubernetes' own timestamps are whole seconds, too coarse for sub-second phases; a
:class:`Recorder` keeps one list-and-watch per kind open and stamps each event with the
wall clock the moment it arrives. :func:`observation_row` reduces each object to the few
fields the timelines need, so the table stays tidy (one row per event) and small.
:func:`function_milestones` and :func:`phase_durations` turn it into per-function phase
timelines; :func:`read_events` reads a recorded table back with the types it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from wasmop.bench.clock import now_ms
from wasmop.kube import Kube
from wasmop.kube.client import api_path
from wasmop.wellknown import API_VERSION, FUNCTION_KIND, FUNCTION_LABEL, FUNCTION_PLURAL

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Kind:
    name: str
    api_version: str
    plural: str
    namespaced: bool = True


KINDS: Mapping[str, Kind] = {
    FUNCTION_KIND: Kind(FUNCTION_KIND, API_VERSION, FUNCTION_PLURAL),
    "Deployment": Kind("Deployment", "apps/v1", "deployments"),
    "Pod": Kind("Pod", "v1", "pods"),
    "Node": Kind("Node", "v1", "nodes", namespaced=False),
}
DEFAULT_KINDS: tuple[str, ...] = ("WasmFunction", "Deployment", "Pod", "Node")

COLUMNS = (
    "t_ms", "kind", "event", "namespace", "name", "function", "uid", "resource_version",
    "generation", "observed_generation", "phase", "ready", "replicas_desired",
    "replicas_ready", "replicas_updated", "node", "deleting", "restarts", "detail",
)  # fmt: skip
NUMBER_COLUMNS = (
    "t_ms", "generation", "observed_generation", "replicas_desired", "replicas_ready",
    "replicas_updated", "restarts",
)  # fmt: skip
FLAG_COLUMNS = ("ready", "deleting")


def _condition(obj: Mapping[str, Any], ctype: str) -> str | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == ctype:
            return condition.get("status")
    return None


def function_of(kind: str, obj: Mapping[str, Any]) -> str:
    """The function an object belongs to: the operator's label, else ``app``, else name."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    if kind in ("WasmFunction",):
        return meta.get("name", "")
    if kind == "Node":
        return ""
    return (
        labels.get(FUNCTION_LABEL)
        or labels.get("app")
        or (meta.get("name", "") if kind == "Deployment" else "")
    )


def function_ready(obj: Mapping[str, Any]) -> bool:
    """A WasmFunction whose status says Ready with all desired replicas, for its spec."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    meta = obj.get("metadata") or {}
    desired = spec.get("replicas", 1)
    observed = status.get("observedGeneration")
    if observed is not None and observed < meta.get("generation", 0):
        return False
    return status.get("phase") == "Ready" and (status.get("readyReplicas") or 0) >= desired


def deployment_ready(obj: Mapping[str, Any]) -> bool:
    """Every desired replica of the current generation updated and ready."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    meta = obj.get("metadata") or {}
    desired = spec.get("replicas", 1)
    if (status.get("observedGeneration") or 0) < meta.get("generation", 0):
        return False
    ready = status.get("readyReplicas") or 0
    updated = status.get("updatedReplicas") or 0
    total = status.get("replicas") or 0
    return ready >= desired and updated >= desired and total == desired


def pod_ready(obj: Mapping[str, Any]) -> bool:
    return _condition(obj, "Ready") == "True" and not obj["metadata"].get("deletionTimestamp")


def observation_row(kind: str, event: str, obj: Mapping[str, Any], t_ms: float) -> dict[str, Any]:
    """One tidy row per watch event: what the timelines need, nothing more."""
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(
        t_ms=t_ms,
        kind=kind,
        event=event,
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        function=function_of(kind, obj),
        uid=meta.get("uid", ""),
        resource_version=meta.get("resourceVersion", ""),
        generation=meta.get("generation"),
        deleting=bool(meta.get("deletionTimestamp")),
    )
    if kind == "WasmFunction":
        row.update(
            phase=status.get("phase"),
            ready=function_ready(obj),
            observed_generation=status.get("observedGeneration"),
            replicas_desired=spec.get("replicas"),
            replicas_ready=status.get("readyReplicas") or 0,
            replicas_updated=status.get("updatedReplicas") or 0,
        )
    elif kind == "Deployment":
        row.update(
            ready=deployment_ready(obj),
            observed_generation=status.get("observedGeneration"),
            replicas_desired=spec.get("replicas"),
            replicas_ready=status.get("readyReplicas") or 0,
            replicas_updated=status.get("updatedReplicas") or 0,
        )
    elif kind == "Pod":
        statuses = status.get("containerStatuses") or []
        waiting = next(
            (
                s["state"]["waiting"].get("reason")
                for s in statuses
                if "waiting" in s.get("state", {})
            ),
            None,
        )
        row.update(
            phase=status.get("phase"),
            ready=pod_ready(obj),
            node=spec.get("nodeName") or "",
            restarts=sum(s.get("restartCount", 0) for s in statuses),
            detail=waiting,
        )
    elif kind == "Node":
        ready = _condition(obj, "Ready")
        row.update(phase="Ready" if ready == "True" else "NotReady", ready=ready == "True")
    return row


class Recorder:
    """List-and-watch WasmFunctions, Deployments and Pods of one namespace, and Nodes,
    recording one row per event and keeping the latest object of each."""

    def __init__(
        self,
        kube: Kube,
        namespace: str | None,
        kinds: Sequence[str] = DEFAULT_KINDS,
        clock: Callable[[], float] = now_ms,
    ) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"cannot watch {', '.join(sorted(unknown))}; known: {list(KINDS)}")
        self.kube = kube
        self.namespace = namespace
        self.kinds = tuple(kinds)
        self.clock = clock
        self.rows: list[dict[str, Any]] = []
        self.latest: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._changed: asyncio.Condition | None = None
        self._synced: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, sync_timeout: float = 30.0) -> None:
        """Start the watches and return once each has listed its current objects."""
        self._changed = asyncio.Condition()
        for kind in self.kinds:
            self._synced[kind] = asyncio.Event()
            self._tasks.append(asyncio.create_task(self._watch(KINDS[kind]), name=f"watch-{kind}"))
        try:
            async with asyncio.timeout(sync_timeout):
                await asyncio.gather(*(e.wait() for e in self._synced.values()))
        except TimeoutError:
            await self.stop()
            raise TimeoutError(f"watches did not sync within {sync_timeout:g} s") from None

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    def mark(self, label: str, t_ms: float | None = None, **fields: Any) -> float:
        """A marker row (kind ``Marker``): a fault, a scale request, a load step."""
        t = self.clock() if t_ms is None else t_ms
        row = dict.fromkeys(COLUMNS)
        row.update(t_ms=t, kind="Marker", event=label, namespace=self.namespace or "", name=label)
        row.update({k: v for k, v in fields.items() if k in COLUMNS})
        if "detail" not in fields and fields:
            row["detail"] = ",".join(f"{k}={v}" for k, v in fields.items() if k not in COLUMNS)
        self.rows.append(row)
        return t

    async def _watch(self, kind: Kind) -> None:
        path = api_path(kind.api_version, kind.plural, self.namespace if kind.namespaced else None)
        synced = False
        try:
            async for event in self.kube.list_and_watch(path):
                t = self.clock()
                if event.type == "SYNCED":
                    synced = True
                    self._synced[kind.name].set()
                    continue
                obj = event.object
                meta = obj.get("metadata", {})
                key = (kind.name, meta.get("namespace", ""), meta.get("name", ""))
                if event.type == "DELETED":
                    self.latest.pop(key, None)
                else:
                    self.latest[key] = obj
                label = event.type if synced else "LISTED"
                self.rows.append(observation_row(kind.name, label, obj, t))
                assert self._changed is not None
                async with self._changed:
                    self._changed.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("watch of %s stopped", kind.plural)
            raise

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = (
            "" if kind == "Node" else (namespace if namespace is not None else self.namespace or "")
        )
        return self.latest.get((kind, ns, name))

    def objects(self, kind: str) -> list[dict[str, Any]]:
        return [obj for (k, _, _), obj in self.latest.items() if k == kind]

    async def wait_for(self, predicate: Callable[[Recorder], T | None], timeout: float) -> T:  # noqa: ASYNC109
        """Wait until ``predicate(self)`` returns something truthy, checked on each event."""
        assert self._changed is not None, "start() the recorder first"
        async with asyncio.timeout(timeout), self._changed:
            while True:
                value = predicate(self)
                if value:
                    return value
                for task in self._tasks:
                    if task.done() and task.exception() is not None:
                        raise RuntimeError(f"{task.get_name()} failed") from task.exception()
                await self._changed.wait()

    def table(self) -> pd.DataFrame:
        """Every recorded event (and marker), oldest first."""
        frame = pd.DataFrame(list(self.rows), columns=list(COLUMNS))
        return frame.sort_values("t_ms", kind="stable").reset_index(drop=True)


def read_events(path: Path | str) -> pd.DataFrame:
    """A recorded event table (``raw/watch_events.csv``) with numbers as floats, flags as
    True/False (None where a kind has none) and text as text ("" where empty), so the
    timelines below read it as they read a live recorder's table."""
    text = [c for c in COLUMNS if c not in NUMBER_COLUMNS]
    frame = pd.read_csv(
        path,
        dtype=dict.fromkeys(text, str),
        keep_default_na=False,
        na_values={column: [""] for column in NUMBER_COLUMNS},
    )
    frame = frame.reindex(columns=list(COLUMNS))
    for column in NUMBER_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    for column in FLAG_COLUMNS:
        frame[column] = frame[column].map({"True": True, "False": False}).astype(object)
        frame[column] = frame[column].where(frame[column].notna(), None)
    return frame.sort_values("t_ms", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- timelines

MILESTONES = (
    "created_ms",  # client: just before the create request
    "function_seen_ms",  # first WasmFunction event
    "deployment_seen_ms",  # first Deployment event (operator created it)
    "pod_created_ms",  # first Pod event (ReplicaSet controller)
    "pod_scheduled_ms",  # first Pod with a node (scheduler)
    "pod_running_ms",  # first Pod Running (node agent started it)
    "pod_ready_ms",  # first Pod Ready (readiness probe passed)
    "pods_ready_ms",  # as many Pods Ready as replicas desired
    "deployment_ready_ms",  # Deployment status: all desired replicas ready (controller)
    "function_ready_ms",  # WasmFunction status: Ready with all replicas (operator)
)

PHASES: tuple[tuple[str, str, str], ...] = (
    ("operator", "created_ms", "deployment_seen_ms"),
    ("replicaset", "deployment_seen_ms", "pod_created_ms"),
    ("scheduling", "pod_created_ms", "pod_scheduled_ms"),
    ("pod_start", "pod_scheduled_ms", "pod_ready_ms"),
    ("rollout", "pod_ready_ms", "pods_ready_ms"),
    # The operator follows Pods, not the Deployment's status, so its status lag is
    # measured from the Pods (the Deployment controller may well report later).
    ("status", "pods_ready_ms", "function_ready_ms"),
)


def _first(frame: pd.DataFrame, mask: pd.Series, after: float) -> float:
    selected = frame.loc[mask & (frame["t_ms"] >= after), "t_ms"]
    return float(selected.min()) if not selected.empty else float("nan")


def pods_ready_ms(observations: pd.DataFrame, function: str, count: int, after_ms: float) -> float:
    """Client time at which ``count`` Pods of ``function`` were Ready at once (counting
    from events after ``after_ms``, with Pods ready before it still counted)."""
    pods = observations[
        (observations["kind"] == "Pod") & (observations["function"] == function)
    ].sort_values("t_ms", kind="stable")
    ready: dict[str, bool] = {}
    flags = pods["ready"].eq(True)
    for row, is_ready in zip(pods.itertuples(index=False), flags, strict=True):
        if row.event == "DELETED":
            ready.pop(row.name, None)
        else:
            ready[row.name] = bool(is_ready)
        if row.t_ms >= after_ms and sum(ready.values()) >= count:
            return float(row.t_ms)
    return float("nan")


def function_milestones(
    observations: pd.DataFrame, created_ms: Mapping[str, float], replicas: int = 1
) -> pd.DataFrame:
    """One row per function: the client time of each milestone after its creation."""
    rows = []
    obs = observations[observations["event"] != "LISTED"]
    for function, created in created_ms.items():
        own = obs[obs["function"] == function]
        kind = own["kind"]
        ready = own["ready"].eq(True)
        row = {"function": function, "created_ms": float(created)}
        row["function_seen_ms"] = _first(own, kind == "WasmFunction", created)
        row["deployment_seen_ms"] = _first(own, kind == "Deployment", created)
        pods = kind == "Pod"
        row["pod_created_ms"] = _first(own, pods, created)
        row["pod_scheduled_ms"] = _first(own, pods & (own["node"].fillna("") != ""), created)
        row["pod_running_ms"] = _first(own, pods & (own["phase"] == "Running"), created)
        row["pod_ready_ms"] = _first(own, pods & ready, created)
        row["pods_ready_ms"] = pods_ready_ms(own, function, replicas, created)
        row["deployment_ready_ms"] = _first(own, (kind == "Deployment") & ready, created)
        row["function_ready_ms"] = _first(own, (kind == "WasmFunction") & ready, created)
        rows.append(row)
    return pd.DataFrame(rows, columns=["function", *MILESTONES])


def phase_durations(milestones: pd.DataFrame) -> pd.DataFrame:
    """Long form: one row per function and phase, with start, end and duration in ms.

    A phase whose end is missing (no operator: no WasmFunction status) is left out.
    """
    rows = []
    for _, m in milestones.iterrows():
        for phase, start, end in PHASES:
            if pd.isna(m[start]) or pd.isna(m[end]):
                continue
            rows.append(
                {
                    "function": m["function"],
                    "phase": phase,
                    "start_ms": m[start],
                    "end_ms": m[end],
                    "duration_ms": m[end] - m[start],
                }
            )
    return pd.DataFrame(rows, columns=["function", "phase", "start_ms", "end_ms", "duration_ms"])


def first_state_after(
    observations: pd.DataFrame,
    after_ms: float,
    kind: str,
    name: str | None = None,
    *,
    function: str | None = None,
    predicate: Callable[[pd.DataFrame], pd.Series],
) -> float:
    """Client time of the first event of ``kind`` after ``after_ms`` matching ``predicate``."""
    obs = observations[(observations["kind"] == kind) & (observations["event"] != "LISTED")]
    if name is not None:
        obs = obs[obs["name"] == name]
    if function is not None:
        obs = obs[obs["function"] == function]
    if obs.empty:
        return float("nan")
    return _first(obs, predicate(obs), after_ms)


def operator_timings(function: Mapping[str, Any]) -> dict[str, float]:
    """status.timings of a WasmFunction as epoch milliseconds (the operator's clock)."""
    from datetime import datetime

    timings = ((function.get("status") or {}).get("timings")) or {}
    result: dict[str, float] = {}
    for key, value in timings.items():
        if isinstance(value, str) and value:
            with contextlib.suppress(ValueError):
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
                result[f"{key}_ms"] = moment.timestamp() * 1000
    return result
