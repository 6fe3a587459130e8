"""Which Pods can serve a Service, kept current from EndpointSlice and Service watches.

Pure bookkeeping plus the balancing choice, so the routing rules can be tested without
a cluster: least requests in flight wins, ties go round-robin.

Which endpoints a request may go to, best first (as kube-proxy does with terminating
endpoints):

1. ready ones (``ready`` and not ``terminating``) that have not just failed;
2. when there are none, ``serving`` endpoints that are ``terminating``: a Pod being
   deleted keeps answering through its drain, which beats refusing the request;
3. as a last resort, endpoints that failed a moment ago (see :meth:`Endpoint.eject`):
   the failure may have been brief.

A connection that failed ejects its endpoint for a few seconds: the readiness probes of a
node whose link is cut take tens of seconds to notice, and meanwhile every request would
wait for a connect timeout there first.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from wasmop.wellknown import FUNCTION_KIND, GROUP

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
EJECT_S = 5.0  # how long an endpoint whose connection failed is passed over


@dataclass
class Endpoint:
    address: str
    port: int
    pod: str
    ready: bool  # ready and not terminating
    serving: bool = True  # answers requests (terminating or not)
    terminating: bool = False
    in_flight: int = 0
    ejected_until: float = 0.0  # time.monotonic()

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def eject(self, now: float | None = None, seconds: float = EJECT_S) -> None:
        """Pass this endpoint over for a while: a connection to it just failed."""
        self.ejected_until = (time.monotonic() if now is None else now) + seconds

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until


@dataclass
class ServiceEndpoints:
    """All EndpointSlices of one Service, merged."""

    slices: dict[str, list[Endpoint]] = field(default_factory=dict)
    _turn: itertools.count = field(default_factory=itertools.count)

    def all(self) -> list[Endpoint]:
        return [e for endpoints in self.slices.values() for e in endpoints]

    def ready(self) -> list[Endpoint]:
        return [e for e in self.all() if e.ready]

    def available(self) -> bool:
        """Whether any endpoint may take a request (ready, or serving while terminating)."""
        return any(e.ready or e.serving for e in self.all())

    def candidates(
        self, exclude: set[str] = frozenset(), now: float | None = None
    ) -> list[Endpoint]:  # type: ignore[assignment]
        """The endpoints a request should go to, by the preference in the module doc."""
        now = time.monotonic() if now is None else now
        usable = [e for e in self.all() if e.address not in exclude]
        ready = [e for e in usable if e.ready]
        draining = [e for e in usable if not e.ready and e.serving and e.terminating]
        for group in (ready, draining):
            healthy = [e for e in group if not e.ejected(now)]
            if healthy:
                return healthy
        return ready or draining

    def choose(self, exclude: set[str] = frozenset(), now: float | None = None) -> Endpoint | None:  # type: ignore[assignment]
        """The preferred endpoint with the fewest requests in flight (round-robin on ties)."""
        candidates = self.candidates(exclude, now)
        if not candidates:
            return None
        least = min(e.in_flight for e in candidates)
        tied = [e for e in candidates if e.in_flight == least]
        return tied[next(self._turn) % len(tied)]


def parse_slice(obj: dict[str, Any], previous: list[Endpoint] | None = None) -> list[Endpoint]:
    """Endpoints of one EndpointSlice.

    An address already known keeps its ``Endpoint`` object, so a request in flight across
    the update decrements the same counter it incremented (and an ejection holds). Unset
    conditions read as the API documents them: ``ready`` and ``serving`` true,
    ``terminating`` false.
    """
    ports = obj.get("ports") or []
    port = next((p.get("port") for p in ports if p.get("port")), None)
    if port is None:
        return []
    known = {(e.address, e.port): e for e in previous or []}
    endpoints = []
    for item in obj.get("endpoints") or []:
        conditions = item.get("conditions") or {}
        terminating = conditions.get("terminating") is True
        ready = conditions.get("ready") is not False and not terminating
        serving = conditions.get("serving", conditions.get("ready")) is not False
        pod = (item.get("targetRef") or {}).get("name", "")
        for address in item.get("addresses", []):
            endpoint = known.get((address, int(port)))
            if endpoint is None or endpoint.pod != pod:
                # A new Pod on an address an old one had: its own counters, no ejection.
                endpoint = Endpoint(address, int(port), pod, ready)
            endpoint.ready, endpoint.serving, endpoint.terminating = ready, serving, terminating
            endpoints.append(endpoint)
    return endpoints


def owning_function(obj: dict[str, Any]) -> str | None:
    """The WasmFunction that controls a Service (its owner reference), if any: the one
    the gateway may activate when the Service has no endpoint."""
    for owner in obj["metadata"].get("ownerReferences") or []:
        if (
            owner.get("kind") == FUNCTION_KIND
            and str(owner.get("apiVersion", "")).split("/")[0] == GROUP
            and owner.get("controller")
        ):
            return str(owner["name"])
    return None


class EndpointTable:
    """Services known to exist, and their endpoints, by (namespace, service); for the
    Services of WasmFunctions, the function's name and when the gateway first saw it
    (monotonic: a function is idle since then until its first request)."""

    def __init__(self) -> None:
        self.services: set[tuple[str, str]] = set()
        self.endpoints: dict[tuple[str, str], ServiceEndpoints] = {}
        self.functions: dict[tuple[str, str], str] = {}
        self.seen: dict[tuple[str, str], float] = {}

    def apply_service(self, event_type: str, obj: dict[str, Any]) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        function = None if event_type == "DELETED" else owning_function(obj)
        if event_type == "DELETED":
            self.services.discard(key)
        else:
            self.services.add(key)
        if function is None:
            self.functions.pop(key, None)
            self.seen.pop(key, None)
        else:
            self.functions[key] = function
            self.seen.setdefault(key, time.monotonic())

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
