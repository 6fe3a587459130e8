"""The Pods of every function, kept current from one Pod watch.

Both the status (ready replicas the moment a Pod turns Ready, rather than after the
ReplicaSet and Deployment controllers have each caught up) and the autoscaler (which Pods
to count, and their requests) read it, so neither lists Pods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wasmop.operator.owned_objects import LABEL_REVISION
from wasmop.operator.quantity import cpu_millis, memory_bytes
from wasmop.wellknown import FUNCTION_LABEL

# Waiting reasons of a container that is merely starting: not a problem to report.
STARTING = frozenset({"ContainerCreating", "PodInitializing", ""})


def pod_problem(body: dict[str, Any]) -> tuple[str, str] | None:
    """Why a Pod does not serve, as (reason, message), from what the scheduler and the
    node wrote into its status; None when nothing is wrong (or it is just starting).

    * not placed: the scheduler's PodScheduled=False (``Unschedulable`` and its message,
      e.g. "0/3 nodes are available: ... 2 Too many pods.");
    * crashed and not ready again: ``CrashLoopBackOff`` with the last exit;
    * cannot start: the container's waiting reason (a bad module, an image the node
      does not run, ...);
    * running, but its readiness probe fails: ``ReadinessProbeFailed``.
    """
    status = body.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False":
        return scheduled.get("reason") or "Unschedulable", scheduled.get("message") or ""
    for container in status.get("containerStatuses") or []:
        if container.get("ready"):
            continue
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        last = (container.get("lastState") or {}).get("terminated")
        if last:
            detail = f"{last.get('reason', 'Error')} (exit code {last.get('exitCode')})"
            if last.get("message"):
                detail += f": {last['message']}"
            return "CrashLoopBackOff", f"last exit: {detail}"
        if waiting.get("reason", "") not in STARTING:
            return waiting["reason"], waiting.get("message", "")
        ready = conditions.get("Ready") or {}
        if "running" in state and "probe failed" in (ready.get("message") or ""):
            return "ReadinessProbeFailed", ready["message"]
    return None


@dataclass(frozen=True)
class PodInfo:
    name: str
    ready: bool
    phase: str
    deleting: bool
    revision: str | None
    cpu_request: float | None  # cores
    memory_request: float | None  # bytes
    problem: tuple[str, str] | None = None  # (reason, message) when it cannot serve

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> PodInfo:
        meta = body["metadata"]
        status = body.get("status") or {}
        containers = (body.get("spec") or {}).get("containers") or [{}]
        requests = (containers[0].get("resources") or {}).get("requests") or {}
        return cls(
            name=meta["name"],
            ready=any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []
            ),
            phase=status.get("phase", "Pending"),
            deleting=bool(meta.get("deletionTimestamp")),
            revision=(meta.get("labels") or {}).get(LABEL_REVISION),
            cpu_request=cpu_millis(requests["cpu"]) / 1000 if "cpu" in requests else None,
            memory_request=float(memory_bytes(requests["memory"]))
            if "memory" in requests
            else None,
            problem=pod_problem(body),
        )


class PodIndex:
    def __init__(self) -> None:
        self.by_function: dict[tuple[str, str], dict[str, PodInfo]] = {}

    def apply(self, event_type: str, body: dict[str, Any]) -> tuple[str, str] | None:
        """Record a Pod event; returns the (namespace, function) it belongs to."""
        meta = body["metadata"]
        function = (meta.get("labels") or {}).get(FUNCTION_LABEL)
        if not function:
            return None
        key = (meta["namespace"], function)
        pods = self.by_function.setdefault(key, {})
        if event_type == "DELETED":
            pods.pop(meta["name"], None)
            if not pods:
                self.by_function.pop(key, None)
        else:
            pods[meta["name"]] = PodInfo.from_body(body)
        return key

    def pods(self, namespace: str, function: str) -> list[PodInfo]:
        return list(self.by_function.get((namespace, function), {}).values())
