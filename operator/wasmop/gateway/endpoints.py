"""Which Pods can serve a Service, kept current from EndpointSlice and Service watches.

Pure bookkeeping plus the balancing choice, so the routing rules can be tested without
a cluster: least requests in flight wins, ties go round-robin.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass
class Endpoint:
    address: str
    port: int
    pod: str
    ready: bool
    in_flight: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"


@dataclass
class ServiceEndpoints:
    """All EndpointSlices of one Service, merged."""

    slices: dict[str, list[Endpoint]] = field(default_factory=dict)
    _turn: itertools.count = field(default_factory=itertools.count)

    def ready(self) -> list[Endpoint]:
        return [e for endpoints in self.slices.values() for e in endpoints if e.ready]

    def choose(self, exclude: set[str] = frozenset()) -> Endpoint | None:  # type: ignore[assignment]
        """The ready endpoint with the fewest requests in flight (round-robin on ties)."""
        candidates = [e for e in self.ready() if e.address not in exclude]
        if not candidates:
            return None
        least = min(e.in_flight for e in candidates)
        tied = [e for e in candidates if e.in_flight == least]
        return tied[next(self._turn) % len(tied)]


def parse_slice(obj: dict[str, Any], previous: list[Endpoint] | None = None) -> list[Endpoint]:
    """Endpoints of one EndpointSlice.

    An address already known keeps its ``Endpoint`` object, so a request in flight across
    the update decrements the same counter it incremented.
    """
    ports = obj.get("ports") or []
    port = next((p.get("port") for p in ports if p.get("port")), None)
    if port is None:
        return []
    known = {(e.address, e.port): e for e in previous or []}
    endpoints = []
    for item in obj.get("endpoints") or []:
        conditions = item.get("conditions", {})
        ready = conditions.get("ready", True) is not False and not conditions.get(
            "terminating", False
        )
        pod = (item.get("targetRef") or {}).get("name", "")
        for address in item.get("addresses", []):
            endpoint = known.get((address, int(port)))
            if endpoint is None:
                endpoint = Endpoint(address, int(port), pod, ready)
            else:
                endpoint.pod, endpoint.ready = pod, ready
            endpoints.append(endpoint)
    return endpoints


class EndpointTable:
    """Services known to exist, and their endpoints, by (namespace, service)."""

    def __init__(self) -> None:
        self.services: set[tuple[str, str]] = set()
        self.endpoints: dict[tuple[str, str], ServiceEndpoints] = {}

    def apply_service(self, event_type: str, obj: dict[str, Any]) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if event_type == "DELETED":
            self.services.discard(key)
        else:
            self.services.add(key)

    def apply_slice(self, event_type: str, obj: dict[str, Any]) -> tuple[str, str] | None:
        meta = obj["metadata"]
        service = meta.get("labels", {}).get(SERVICE_NAME_LABEL)
        if not service:
            return None
        key = (meta["namespace"], service)
        entry = self.endpoints.setdefault(key, ServiceEndpoints())
        if event_type == "DELETED":
            entry.slices.pop(meta["name"], None)
        else:
            entry.slices[meta["name"]] = parse_slice(obj, entry.slices.get(meta["name"]))
        return key

    def lookup(self, namespace: str, service: str) -> ServiceEndpoints | None:
        return self.endpoints.get((namespace, service))
