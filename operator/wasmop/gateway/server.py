"""The gateway server: routes requests to ready Pods, retries failures on another Pod,
holds requests for idle functions while it activates them, and measures every request.

What is retried on another Pod (up to ``attempts`` distinct Pods): a connection that could
not be made or timed out (nothing was sent, so any request), a refusal the Pod made before
running anything (503 draining, overloaded, queue full: any request), and a request whose
connection closed before an answer came (a Pod going away) when its method is
idempotent. A Pod that refused a connection is passed over for a few seconds (see
``endpoints``). When every try was refused, the last refusal is the answer.

Each response carries ``Server-Timing`` (time in the gateway and upstream, and the time
it was held for a cold start) and ``X-Wasmop-Pod`` (the Pod that served it); a response
that had to wait for a first ready endpoint is marked ``X-Wasmop-Cold-Start: true``.

Per Service the gateway counts what the autoscaler needs (``/-/stats``): requests that
arrived (cumulative), requests in the gateway now (held ones included) and their time
integral (cumulative busy seconds: its difference over any window is the mean
concurrency there), and how long the Service has been without any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from wasmop.gateway.activator import (
    TIMED_OUT,
    ActivationRefused,
    ActivationSettings,
    Activator,
    scale_from_zero,
)
from wasmop.gateway.endpoints import EndpointTable
from wasmop.kube import Kube, WatchEvent
from wasmop.kube.client import api_path
from wasmop.supervision import TaskSupervisor, register_metrics
from wasmop.wellknown import (
    BODY_TOO_LARGE_REASON,
    MAX_REQUEST_BODY_BYTES,
    REASON_HEADER,
    REFUSED_UNRUN_REASONS,
)

log = logging.getLogger(__name__)

BODY_CHUNK = 64 * 1024
POD_HEADER = "X-Wasmop-Pod"
COLD_START_HEADER = "X-Wasmop-Cold-Start"
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Methods that may safely run twice (RFC 9110, 9.2.2): retried when a Pod went away mid-request.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8000
    attempts: int = 3  # tries on distinct endpoints when a connection fails
    cold_start_wait_s: float = 5.0  # wait this long for a first ready endpoint
    # An idle function's requests: how many may wait, and how long.
    activation: ActivationSettings = field(default_factory=ActivationSettings)
    upstream_timeout_s: float = 60.0
    # Pods sit behind a veth on this machine: a connection takes well under a millisecond,
    # and one that takes a second goes to a Pod whose node lost its link.
    connect_timeout_s: float = 1.0
    connections_per_endpoint: int = 64


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["namespace", "service"]
        self.requests = Counter(
            "wasmop_gateway_requests", "Requests by service and status code",
            [*labels, "code"], registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "wasmop_gateway_in_flight_requests",
            "Requests in flight",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "wasmop_gateway_request_duration_seconds", "Gateway request latency",
            labels, registry=self.registry,
            buckets=LATENCY_BUCKETS_S,
        )  # fmt: skip
        self.retries = Counter(
            "wasmop_gateway_upstream_retries", "Failed upstream attempts retried on another Pod",
            labels, registry=self.registry,
        )  # fmt: skip
        self.cold_starts = Counter(
            "wasmop_gateway_cold_starts", "Requests that waited for a first ready Pod",
            labels, registry=self.registry,
        )  # fmt: skip
        self.activations = Counter(
            "wasmop_gateway_activations",
            "Activations of idle functions by outcome (scaled from zero, running already,"
            " failed, error)",
            [*labels, "outcome"], registry=self.registry,
        )  # fmt: skip
        self.held = Gauge(
            "wasmop_gateway_held_requests", "Requests held while their function activates",
            registry=self.registry,
        )  # fmt: skip
        self.hold = Histogram(
            "wasmop_gateway_hold_duration_seconds",
            "How long a request was held for a cold start (answered or not)",
            registry=self.registry, buckets=LATENCY_BUCKETS_S,
        )  # fmt: skip
        self.services: dict[tuple[str, str], ServiceSeries] = {}

    def service(self, namespace: str, service: str) -> ServiceSeries:
        """The Service's labelled series, resolved on its first request only."""
        key = (namespace, service)
        series = self.services.get(key)
        if series is None:
            labels = {"namespace": namespace, "service": service}
            series = ServiceSeries(
                in_flight=self.in_flight.labels(**labels),
                latency=self.latency.labels(**labels),
                retries=self.retries.labels(**labels),
                cold_starts=self.cold_starts.labels(**labels),
                responses=self.requests,
                labels=labels,
            )
            self.services[key] = series
        return series


@dataclass
class ServiceSeries:
    """One Service's metrics. ``requests``, ``active``, ``busy_seconds`` and the time of
    the last activity also feed the autoscaler's /-/stats."""

    in_flight: Any
    latency: Any
    retries: Any
    cold_starts: Any
    responses: Counter  # by status code, labelled on first sight of each code
    labels: dict[str, str]
    requests: int = 0  # arrived, cumulative
    active: int = 0  # in the gateway now: held or forwarded
    _busy: float = 0.0  # the integral of ``active`` over time, up to ``_since``
    _since: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    _by_code: dict[int, Any] = field(default_factory=dict)

    def _advance(self, now: float) -> None:
        self._busy += self.active * (now - self._since)
        self._since = now

    def arrived(self) -> None:
        now = time.monotonic()
        self._advance(now)
        self.requests += 1
        self.active += 1
        self.last_activity = now
        self.in_flight.inc()

    def left(self) -> None:
        now = time.monotonic()
        self._advance(now)
        self.active -= 1
        self.last_activity = now
        self.in_flight.dec()

    def busy_seconds(self, now: float) -> float:
        """Request-seconds spent in the gateway so far (cumulative)."""
        return self._busy + self.active * (now - self._since)

    def idle_seconds(self, now: float) -> float:
        """Seconds since a request last arrived or left; 0 while one is in the gateway."""
        return 0.0 if self.active else max(0.0, now - self.last_activity)

    def answered(self, status: int, seconds: float) -> None:
        counter = self._by_code.get(status)
        if counter is None:
            counter = self._by_code[status] = self.responses.labels(**self.labels, code=str(status))
        counter.inc()
        self.latency.observe(seconds)


class Gateway:
    def __init__(self, kube: Kube, settings: GatewaySettings) -> None:
        self.kube = kube
        self.settings = settings
        self.table = EndpointTable()
        self.metrics = Metrics()
        self.tasks = TaskSupervisor("gateway")
        register_metrics(self.tasks, self.metrics.registry)
        # Requests waiting for a Service's first endpoint, woken by that Service's changes
        # alone: one condition for all woke every held request at every EndpointSlice
        # change in the cluster (25 functions woken at once: 50 held requests, each woken
        # by each of the others' slices).
        self._changes: dict[tuple[str, str], asyncio.Event] = {}
        self._session: aiohttp.ClientSession | None = None
        self.started = time.monotonic()
        self.activator = Activator(
            functools.partial(scale_from_zero, kube),
            settings.activation,
            self._notify,
            lambda ns, svc, outcome: self.metrics.activations.labels(ns, svc, outcome).inc(),
        )

    # --- watches --------------------------------------------------------------------

    async def _service_changed(self, event: WatchEvent) -> None:
        if event.type != "SYNCED":
            self.table.apply_service(event.type, event.object)
            meta = event.object["metadata"]
            self._wake((meta["namespace"], meta["name"]))

    async def _slice_changed(self, event: WatchEvent) -> None:
        if event.type != "SYNCED":
            key = self.table.apply_slice(event.type, event.object)
            if key is not None:
                self._wake(key)

    def _wake(self, key: tuple[str, str]) -> None:
        """Wake the requests waiting for this Service to change."""
        changed = self._changes.pop(key, None)
        if changed is not None:
            changed.set()

    async def _notify(self) -> None:
        """Wake every waiting request (an activation failed for good)."""
        changes, self._changes = self._changes, {}
        for changed in changes.values():
            changed.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0, limit_per_host=self.settings.connections_per_endpoint, ttl_dns_cache=None
            ),
            auto_decompress=False,
        )
        self.tasks.start_watch(
            "Service watch", self.kube, api_path("v1", "services"), self._service_changed
        )
        self.tasks.start_watch(
            "EndpointSlice watch",
            self.kube,
            api_path("discovery.k8s.io/v1", "endpointslices"),
            self._slice_changed,
        )

    async def close(self) -> None:
        await self.activator.close()
        await self.tasks.stop()
        if self._session is not None:
            await self._session.close()

    # --- requests -------------------------------------------------------------------

    async def _wait_for_endpoint(
        self, namespace: str, service: str, deadline: float, activation: Any = None
    ) -> bool:
        """Whether a ready endpoint appeared before ``deadline`` (or the activation
        failed for good: then False at once)."""
        key = (namespace, service)
        while time.monotonic() < deadline:
            entry = self.table.lookup(namespace, service)
            if entry is not None and entry.available():
                return True
            if activation is not None and activation.failure is not None:
                return False
            changed = self._changes.get(key)
            if changed is None:
                changed = self._changes[key] = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), deadline - time.monotonic())
        entry = self.table.lookup(namespace, service)
        return entry is not None and entry.available()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        parts = request.path.split("/", 3)
        if len(parts) < 3 or not parts[1] or not parts[2]:
            return _error(404, "NoRoute", "use /<namespace>/<service>[/<path>]")
        namespace, service = parts[1], parts[2]
        rest = "/" + parts[3] if len(parts) > 3 else "/"
        key = (namespace, service)
        if key not in self.table.services:
            return _error(404, "ServiceNotFound", f"no Service {namespace}/{service}")
        series = self.metrics.service(namespace, service)
        series.arrived()
        try:
            response = await self._forward(request, namespace, service, rest, started, series)
        finally:
            series.left()
        series.answered(response.status, time.perf_counter() - started)
        return response

    async def _hold(self, namespace: str, service: str) -> web.Response | None:
        """Wait for a first ready endpoint; None once there is one, else the refusal.

        A WasmFunction's Service is activated meanwhile (:mod:`.activator`) and waited
        for up to the activation timeout; any other Service up to ``cold_start_wait_s``.
        """
        key = (namespace, service)
        function = self.table.functions.get(key)
        if function is None:
            deadline = time.monotonic() + self.settings.cold_start_wait_s
            if await self._wait_for_endpoint(namespace, service, deadline):
                return None
            return _error(
                503,
                "NoReadyEndpoints",
                f"Service {namespace}/{service} has no ready endpoint"
                f" (waited {self.settings.cold_start_wait_s:g} s)",
            )
        timeout = self.settings.activation.timeout_s
        held_since = time.monotonic()
        try:
            with self.activator.holding(key, function) as activation:
                self.metrics.held.inc()
                try:
                    if await self._wait_for_endpoint(
                        namespace, service, held_since + timeout, activation
                    ):
                        return None
                finally:
                    self.metrics.held.dec()
                    self.metrics.hold.observe(time.monotonic() - held_since)
                if activation.failure is not None:
                    raise activation.failure
                raise ActivationRefused(
                    TIMED_OUT,
                    f"{namespace}/{function} got no ready replica within {timeout:g} s"
                    f" (activation: {activation.outcome or 'not answered'})",
                )
        except ActivationRefused as refused:
            response = _error(503, refused.reason, refused.message)
            response.headers["Retry-After"] = "1"
            return response

    async def _forward(
        self,
        request: web.Request,
        namespace: str,
        service: str,
        rest: str,
        started: float,
        series: ServiceSeries,
    ) -> web.StreamResponse:
        cold = False
        held_ms = 0.0
        entry = self.table.lookup(namespace, service)
        if entry is None or not entry.available():
            refused = await self._hold(namespace, service)
            if refused is not None:
                return refused
            cold = True
            held_ms = (time.perf_counter() - started) * 1000
            series.cold_starts.inc()
            entry = self.table.lookup(namespace, service)
        assert entry is not None and self._session is not None
        body = await read_capped_body(request)
        if body is None:
            return _error(
                413,
                BODY_TOO_LARGE_REASON,
                f"request body exceeds {MAX_REQUEST_BODY_BYTES} bytes",
                close=True,
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        query = f"?{request.query_string}" if request.query_string else ""
        tried: set[str] = set()
        last_error = ""
        refused: web.Response | None = None
        timeout = aiohttp.ClientTimeout(
            total=self.settings.upstream_timeout_s, sock_connect=self.settings.connect_timeout_s
        )
        for attempt in range(self.settings.attempts):
            endpoint = entry.choose(exclude=tried)
            if endpoint is None:
                break
            tried.add(endpoint.address)
            endpoint.in_flight += 1
            upstream_started = time.perf_counter()
            try:
                async with self._session.request(
                    request.method,
                    endpoint.url + rest + query,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=timeout,
                ) as upstream:
                    payload = await upstream.read()
                    upstream_s = time.perf_counter() - upstream_started
                    out_headers = {
                        k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP
                    }
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # No connection, so nothing was sent: any request may go to another Pod,
                # and this one is passed over for a while.
                endpoint.eject()
                last_error = f"{endpoint.pod or endpoint.address}: {exc.__class__.__name__}"
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                # Sent, but the connection closed unanswered: the Pod is going away. Only a
                # request that may run twice is tried again elsewhere.
                last_error = f"{endpoint.pod or endpoint.address}: {exc.__class__.__name__}"
                if request.method not in IDEMPOTENT_METHODS:
                    break
            except TimeoutError:
                return _error(504, "UpstreamTimeout", f"{endpoint.pod} did not answer in time")
            else:
                if (
                    upstream.status == 503
                    and out_headers.get(REASON_HEADER) in REFUSED_UNRUN_REASONS
                ):
                    # Refused before it ran (the Pod is going away, or full): elsewhere.
                    refused = web.Response(status=503, body=payload, headers=out_headers)
                    last_error = f"{endpoint.pod}: {out_headers[REASON_HEADER]}"
                    if attempt + 1 < self.settings.attempts:
                        series.retries.inc()
                    continue
                total_ms = (time.perf_counter() - started) * 1000
                upstream_ms = upstream_s * 1000
                timing = f"gateway;dur={total_ms - upstream_ms:.3f}, upstream;dur={upstream_ms:.3f}"
                if cold:
                    timing += f", hold;dur={held_ms:.3f}"
                out_headers["Server-Timing"] = timing
                out_headers[POD_HEADER] = endpoint.pod
                if cold:
                    out_headers[COLD_START_HEADER] = "true"
                return web.Response(status=upstream.status, body=payload, headers=out_headers)
            finally:
                endpoint.in_flight -= 1
            if attempt + 1 < self.settings.attempts:
                series.retries.inc()
        if refused is not None:
            return refused
        return _error(
            502, "UpstreamUnavailable", f"no Pod of {namespace}/{service} answered: {last_error}"
        )

    # --- admin endpoints ------------------------------------------------------------

    async def metrics_handler(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def stats_handler(self, _: web.Request) -> web.Response:
        """Per Service, cheap for the autoscaler to poll several times a second: requests
        arrived (cumulative), in the gateway now (``inFlight``, held ones included;
        ``held`` of them waiting for a cold start), cumulative ``busySeconds`` and
        ``idleSeconds``. Every function's Service is listed, also before its first
        request (idle since the gateway first saw its Service)."""
        now = time.monotonic()
        uptime = now - self.started
        keys = sorted(set(self.metrics.services) | set(self.table.functions))
        services = []
        for ns, svc in keys:
            series = self.metrics.services.get((ns, svc))
            activation = self.activator.activations.get((ns, svc))
            entry: dict[str, Any] = {
                "namespace": ns,
                "service": svc,
                "function": self.table.functions.get((ns, svc)),
                "requests": 0,
                "inFlight": 0,
                "held": activation.held if activation else 0,
                "busySeconds": 0.0,
                "idleSeconds": round(now - self.table.seen.get((ns, svc), self.started), 3),
            }
            if series is not None:
                entry.update(
                    requests=series.requests,
                    inFlight=series.active,
                    busySeconds=round(series.busy_seconds(now), 6),
                    idleSeconds=round(series.idle_seconds(now), 3),
                )
            services.append(entry)
        return web.json_response(
            {"time": time.time(), "uptimeSeconds": round(uptime, 3), "services": services}
        )

    async def healthz(self, _: web.Request) -> web.Response:
        """Fails while a watch is down, has not listed yet, or has gone stale: the routes
        would be missing or out of date."""
        problems = self.tasks.problems()
        if problems:
            return web.Response(status=503, text="\n".join(problems) + "\n")
        return web.Response(text="ok")


def _error(status: int, reason: str, message: str, close: bool = False) -> web.Response:
    response = web.Response(status=status, text=message + "\n", headers={REASON_HEADER: reason})
    if close:  # the rest of the body was not read: the connection cannot be reused
        response.force_close()
    return response


async def read_capped_body(request: web.BaseRequest) -> bytes | None:
    """The request body, or None once it is longer than the platform's body cap (the
    runtime's default cap, from the same definition, so the two agree)."""
    if (request.content_length or 0) > MAX_REQUEST_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(BODY_CHUNK):
        size += len(chunk)
        if size > MAX_REQUEST_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def serve(kube: Kube, settings: GatewaySettings, stop: asyncio.Event) -> None:
    gateway = Gateway(kube, settings)
    await gateway.start()
    server = web.Server(_dispatch(gateway), access_log=None)
    runner = web.ServerRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
    await site.start()
    log.info("gateway listening on http://%s:%d", settings.host, settings.port)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await gateway.close()


def _dispatch(gateway: Gateway) -> Any:
    admin = {
        "/metrics": gateway.metrics_handler,
        "/healthz": gateway.healthz,
        "/-/stats": gateway.stats_handler,
    }

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        handler = admin.get(request.path)
        if handler is not None:
            return await handler(request)  # type: ignore[arg-type]
        return await gateway.handle(request)  # type: ignore[arg-type]

    return dispatch
