"""The scaling handlers' inputs and their loop: per-Pod CPU and memory from the wasm
nodes' resource metrics, request rates from the gateway, the HPA algorithm, and the
scale subresource as the one place a decision is applied.

One scrape per interval serves every autoscaled function (``MetricsCollector`` caches
it), so the cost of autoscaling grows with the number of nodes, not of functions.

Beyond the HPA algorithm, from the gateway's ``/-/stats``: a function with
``minReplicas: 0`` goes to zero after ``scaleToZeroAfterSeconds`` without requests (its
``idleSeconds``) and is woken by requests waiting in the gateway (which also patches the
scale itself, :mod:`wasmop.gateway.activator`); ``reaction: Fast`` adds the request rate
of the last ``panicWindowSeconds`` as a reading that may only raise the count;
``predictive`` adds the forecast rate (:mod:`.predictor`) the same way. These functions
are evaluated every ``fast_interval`` seconds (half a second; a Fast one every
``react_interval``, a quarter) instead of every ``interval``, each time on a fresh reading
of the gateway (the nodes are scraped at most
every :data:`NODE_SCRAPE_MIN_S`); their status is written when the decision changes and at
least once per ``interval``. The request rate is taken over the last
:data:`RATE_WINDOW_S` of readings, not between the last two: readings a quarter second
apart count too few requests to be steady.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from wasmop.kube import ApiError, Kube, KubeConfig
from wasmop.kube.client import api_path
from wasmop.kube.events import EventRecorder
from wasmop.operator.function_controller import FunctionController
from wasmop.operator.hpa import PodMetric, Recommendation, decide_for, observation_for
from wasmop.operator.node_index import NodeIndex
from wasmop.operator.pod_index import PodIndex
from wasmop.operator.predictor import RateHistory
from wasmop.operator.spec import ScalingSpec, WasmFunction
from wasmop.operator.status import now_rfc3339, scaling_status
from wasmop.wellknown import API_VERSION, FUNCTION_KIND, FUNCTION_PLURAL

log = logging.getLogger(__name__)

RATE_WINDOW_S = 1.0  # the request rate is measured over at least this much of readings
NODE_SCRAPE_MIN_S = 0.5  # node metrics (CPU, memory) are scraped at most this often
SAMPLE = re.compile(r"^(\w+)\{([^}]*)\}\s+([0-9.eE+-]+)(?:\s+(\d+))?$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_resource_metrics(text: str) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """(namespace, pod) -> (cpu seconds total, working-set bytes) from /metrics/resource."""
    out: dict[tuple[str, str], list[float | None]] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if not match:
            continue
        name, labels_text, value = match.group(1), match.group(2), float(match.group(3))
        if name not in ("pod_cpu_usage_seconds_total", "pod_memory_working_set_bytes"):
            continue
        labels = dict(LABEL.findall(labels_text))
        key = (labels.get("namespace", ""), labels.get("pod", ""))
        entry = out.setdefault(key, [None, None])
        entry[0 if name.startswith("pod_cpu") else 1] = value
    return {k: (v[0], v[1]) for k, v in out.items()}


@dataclass
class MetricsCollector:
    """Scrapes the nodes and the gateway at most once per ``max_age`` seconds.

    Nodes serve their kubelet API over TLS and authorize each caller: the collector
    verifies them against the cluster CA of ``credentials`` and presents its identity
    (the operator's token, or client certificate), which needs ``get nodes/metrics``.
    """

    nodes: NodeIndex
    gateway: str
    credentials: KubeConfig | None = None
    cpu_cores: dict[tuple[str, str], float] = field(default_factory=dict)
    memory: dict[tuple[str, str], float] = field(default_factory=dict)
    rps: dict[tuple[str, str], float] = field(default_factory=dict)
    in_flight: dict[tuple[str, str], float] = field(default_factory=dict)
    # Seconds without any request, from the latest scrape only (none when it failed, so
    # a function never goes to zero on stale readings).
    idle: dict[tuple[str, str], float] = field(default_factory=dict)
    rates: dict[tuple[str, str], RateHistory] = field(default_factory=dict)
    _cpu_prev: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    # Recent (time, cumulative count) readings per Service, spanning RATE_WINDOW_S.
    _counts: dict[tuple[str, str], deque[tuple[float, float]]] = field(default_factory=dict)
    _last: float = 0.0
    _last_nodes: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            context = self.credentials.ssl_context() if self.credentials else None
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=2),
                connector=aiohttp.TCPConnector(ssl=context if context else False),
            )
        return self._session

    def _node_headers(self) -> dict[str, str]:
        token = self.credentials.bearer_token() if self.credentials else None
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def refresh(self, max_age: float) -> None:
        """Scrape the gateway unless its reading is younger than ``max_age``, and the
        nodes with it unless theirs is younger than ``max_age`` or
        :data:`NODE_SCRAPE_MIN_S`."""
        async with self._lock:
            now = time.monotonic()
            if now - self._last < max_age:
                return
            scrapes = [self._scrape_gateway()]
            if now - self._last_nodes >= max(max_age, NODE_SCRAPE_MIN_S):
                scrapes.append(self._scrape_nodes())
                self._last_nodes = now
            await asyncio.gather(*scrapes)
            self._last = time.monotonic()

    async def _scrape_nodes(self) -> None:
        headers = self._node_headers()

        async def one(url: str) -> str | None:
            try:
                async with self.session().get(
                    f"{url}/metrics/resource", headers=headers
                ) as response:
                    if response.status != 200:
                        log.debug("scrape of %s: HTTP %d", url, response.status)
                        return None
                    return await response.text()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.debug("scrape of %s failed: %s", url, exc)
                return None

        endpoints = self.nodes.metrics_endpoints()
        texts = await asyncio.gather(*(one(url) for _, url in endpoints))
        now = time.monotonic()
        seen: set[tuple[str, str]] = set()
        for text in texts:
            if text is None:
                continue
            for key, (cpu, mem) in parse_resource_metrics(text).items():
                seen.add(key)
                if mem is not None:
                    self.memory[key] = mem
                if cpu is None:
                    continue
                previous = self._cpu_prev.get(key)
                self._cpu_prev[key] = (cpu, now)
                if previous is not None and now > previous[1]:
                    self.cpu_cores[key] = max(0.0, (cpu - previous[0]) / (now - previous[1]))
        for stale in set(self._cpu_prev) - seen:
            self._cpu_prev.pop(stale, None)
            self.cpu_cores.pop(stale, None)
            self.memory.pop(stale, None)

    async def _scrape_gateway(self) -> None:
        try:
            async with self.session().get(f"{self.gateway.rstrip('/')}/-/stats") as response:
                stats = await response.json()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.debug("gateway stats unavailable: %s", exc)
            self.idle.clear()
            return
        self.apply_gateway_stats(stats, time.monotonic())

    def apply_gateway_stats(self, stats: dict[str, Any], now: float) -> None:
        """Take one reading of the gateway's ``/-/stats`` made at monotonic ``now``."""
        self.idle.clear()
        seen: set[tuple[str, str]] = set()
        for entry in stats.get("services", []):
            key = (entry["namespace"], entry["service"])
            seen.add(key)
            count = float(entry["requests"])
            self.in_flight[key] = float(entry.get("inFlight", 0))
            if entry.get("idleSeconds") is not None:
                self.idle[key] = float(entry["idleSeconds"])
            self.rates.setdefault(key, RateHistory()).add(now, count)
            readings = self._counts.setdefault(key, deque())
            if readings and (count < readings[-1][1] or now <= readings[-1][0]):
                readings.clear()  # the gateway restarted (or the clock did not move)
            readings.append((now, count))
            # Keep the newest reading at least RATE_WINDOW_S old, and all after it.
            while len(readings) > 2 and now - readings[1][0] >= RATE_WINDOW_S:
                readings.popleft()
            if len(readings) > 1:
                (then, before) = readings[0]
                self.rps[key] = max(0.0, (count - before) / (now - then))
        for gone in set(self._counts) - seen:  # Services deleted: forget them
            for table in (self._counts, self.rps, self.in_flight, self.rates):
                table.pop(gone, None)


@dataclass
class TickSchedule:
    """When each function of one runtime's autoscaler loop is next due: each evaluation
    says how long until its next (a Fast function every half second, others every interval),
    and the one loop wakes for the earliest, not a timer per function."""

    interval: float
    next_at: dict[tuple[str, str], float] = field(default_factory=dict)

    def due(self, keys: list[tuple[str, str]], now: float) -> list[tuple[str, str]]:
        """The keys due at ``now`` (a new one at once); forgets keys no longer given."""
        for gone in set(self.next_at) - set(keys):
            del self.next_at[gone]
        return [k for k in keys if self.next_at.get(k, now) <= now]

    def done(self, key: tuple[str, str], now: float, delay: float) -> None:
        self.next_at[key] = now + delay

    def sleep_for(self, now: float) -> float:
        """Seconds until the earliest due key, at most one interval."""
        earliest = min(self.next_at.values(), default=now + self.interval)
        return max(0.0, min(earliest, now + self.interval) - now)


@dataclass
class Autoscaler:
    kube: Kube
    events: EventRecorder
    functions: FunctionController
    collector: MetricsCollector
    pods: PodIndex
    interval: float = 5.0
    fast_interval: float = 0.5
    # Reaction Fast is the owner's request to answer a rise within a second: the rate
    # over the last second crosses a level about half a second after the load does, so
    # half-second evaluations would spend the rest of that second waiting for a tick.
    react_interval: float = 0.25
    history: dict[tuple[str, str], tuple[Recommendation, ...]] = field(default_factory=dict)
    decisions: int = 0
    _recorded: dict[tuple[str, str], tuple[float, int, str]] = field(default_factory=dict)
    # When each function was first seen running (replicas above 0) since it was last at
    # zero, monotonic: an activation gets the whole idle window before going back.
    _running_since: dict[tuple[str, str], float] = field(default_factory=dict)

    def interval_for(self, scaling: ScalingSpec | None) -> float:
        """How often a function is evaluated: every quarter second when it reacts fast,
        every half second when it predicts or may go to zero (its idle window and
        wake-up need the resolution), otherwise every interval."""
        if scaling is None:
            return self.interval
        if scaling.fast:
            return self.react_interval
        if scaling.predictive.enabled or scaling.scales_to_zero:
            return self.fast_interval
        return self.interval

    def rate_observations(self, function: WasmFunction, rate: float | None) -> list[Any]:
        """``rate`` (requests per second) as a reading of the function's request-rate
        metrics; the panic window's and the forecast's readings."""
        scaling = function.spec.scaling
        assert scaling is not None
        if rate is None:
            return []
        return [
            observation_for(metric, total=rate)
            for metric in scaling.metrics
            if metric.name in ("requests_per_second", "requests-per-second")
        ]

    def panic_rate(self, function: WasmFunction) -> float | None:
        """The mean request rate over the last ``panicWindowSeconds`` whole seconds."""
        scaling = function.spec.scaling
        assert scaling is not None
        history = self.collector.rates.get((function.namespace, function.name))
        samples = history.series()[-scaling.panic_window_seconds :] if history else []
        return sum(samples) / len(samples) if samples else None

    def forecast_rate(self, function: WasmFunction) -> float | None:
        scaling = function.spec.scaling
        assert scaling is not None
        history = self.collector.rates.get((function.namespace, function.name))
        if history is None:
            return None
        ahead = scaling.predictive
        forecast = history.forecast(ahead.horizon_seconds, ahead.model, ahead.season_seconds)
        return forecast.rate if forecast else None

    def observations(self, function: WasmFunction) -> list[Any]:
        scaling = function.spec.scaling
        assert scaling is not None
        key = (function.namespace, function.name)
        pods = self.pods.pods(*key)
        result = []
        for metric in scaling.metrics:
            if metric.name in ("cpu", "memory"):
                cpu = metric.name == "cpu"
                usage = self.collector.cpu_cores if cpu else self.collector.memory
                samples = [
                    PodMetric(p.name, usage.get((key[0], p.name)),
                              p.cpu_request if cpu else p.memory_request,
                              p.ready, p.phase, p.deleting)
                    for p in pods
                ]  # fmt: skip
                result.append(observation_for(metric, pods=samples))
            elif metric.name in ("requests_per_second", "requests-per-second"):
                result.append(observation_for(metric, total=self.collector.rps.get(key)))
            elif metric.name == "concurrency":
                result.append(observation_for(metric, total=self.collector.in_flight.get(key)))
        return result

    def idle_seconds(self, key: tuple[str, str], replicas: int, now: float) -> float | None:
        """How long the function has had no request, for scaling it to zero: the
        gateway's reading, but never longer than the function has been running. A
        reading taken a moment before an activation's request arrived still says idle
        (and nothing in flight), while the function already has its replica: without the
        cap the function went straight back to zero and its held requests waited for a
        second activation."""
        if replicas <= 0:
            self._running_since.pop(key, None)
        else:
            self._running_since.setdefault(key, now)
        idle = self.collector.idle.get(key)
        if idle is None or replicas <= 0:
            return idle
        return min(idle, now - self._running_since[key])

    async def refresh(self) -> None:
        """One scrape of the nodes and the gateway for a pass over all functions."""
        await self.collector.refresh(max_age=self.interval / 2)

    async def tick(self, body: dict[str, Any]) -> float:
        """One evaluation of a function; the seconds until its next."""
        function = WasmFunction.from_body(body)
        scaling = function.spec.scaling
        if scaling is None or scaling.engine != "operator":
            return self.interval
        await self.collector.refresh(max_age=self.interval_for(scaling) / 2)
        key = (function.namespace, function.name)
        decision = decide_for(
            scaling,
            current_replicas=function.spec.replicas,
            observations=self.observations(function),
            history=self.history.get(key, ()),
            now=time.time(),
            panic=self.rate_observations(function, self.panic_rate(function))
            if scaling.fast
            else (),
            forecast=self.rate_observations(function, self.forecast_rate(function))
            if scaling.predictive.enabled
            else (),
            idle_seconds=self.idle_seconds(key, function.spec.replicas, time.monotonic()),
            demand=self.collector.in_flight.get(key, 0) > 0,
        )
        self.history[key] = decision.history
        now = now_rfc3339()
        state = self.functions.states.get(key)
        previous = state.scaling if state else None
        if decision.scale:
            path = api_path(
                API_VERSION, FUNCTION_PLURAL, function.namespace, function.name, "scale"
            )
            try:
                await self.kube.patch(path, {"spec": {"replicas": decision.desired_replicas}})
            except ApiError as exc:
                log.warning("scaling %s/%s failed: %s", *key, exc)
                return self.interval_for(scaling)
            self.decisions += 1
            direction = (
                "ScaledUp" if decision.desired_replicas > function.spec.replicas else "ScaledDown"
            )
            self.events.record(
                {"apiVersion": API_VERSION, "kind": FUNCTION_KIND, "metadata": body["metadata"]},
                direction,
                decision.reason,
            )
            log.info("%s/%s: %s", *key, decision.reason)
        # Evaluated every half second, a function's status is written when the decision
        # changes and once per interval otherwise, not at every evaluation.
        last = self._recorded.get(key)
        mark = (time.monotonic(), decision.desired_replicas, decision.reason)
        if (
            decision.scale
            or last is None
            or last[1:] != mark[1:]
            or (mark[0] - last[0] >= self.interval)
        ):
            self._recorded[key] = mark
            await self.functions.record_scaling(
                *key, scaling_status(decision, now=now, previous=previous)
            )
        return self.interval_for(scaling)

    def forget(self, namespace: str, name: str) -> None:
        self.history.pop((namespace, name), None)
        self._recorded.pop((namespace, name), None)
        self._running_since.pop((namespace, name), None)
