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


@dataclass(frozen=True)
class PodInfo:
    name: str
    ready: bool
    phase: str
    deleting: bool
    revision: str | None
    cpu_request: float | None  # cores
    memory_request: float | None  # bytes

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
