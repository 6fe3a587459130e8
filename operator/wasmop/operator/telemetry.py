"""The operator's own observability: Prometheus metrics on one port, health on another.

The metrics port also takes ``POST /-/resync``: one resync pass of every runtime now,
answered with how long it took and how many functions it listed and queued, so the
scale benchmark times a full resync without waiting for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from wasmop.operator.status import Phase


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.handler_duration = Histogram(
            "wasmop_operator_handler_duration_seconds",
            "Time spent in each handler",
            ["handler"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.handler_errors = Counter(
            "wasmop_operator_handler_errors",
            "Handler runs that raised",
            ["handler"],
            registry=self.registry,
        )
        self.functions = Gauge(
            "wasmop_operator_functions", "WasmFunctions by phase", ["phase"], registry=self.registry
        )
        self.scaling_decisions = Counter(
            "wasmop_operator_scaling_decisions", "Replica changes made by the autoscaler",
            ["direction"], registry=self.registry,
        )  # fmt: skip

    @contextlib.contextmanager
    def observe(self, handler: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except Exception:
            self.handler_errors.labels(handler).inc()
            raise
        finally:
            self.handler_duration.labels(handler).observe(time.perf_counter() - started)


async def serve_telemetry(
    metrics: OperatorMetrics,
    phases: Callable[[], dict[str, int]],
    ready: asyncio.Event,
    problems: Callable[[], list[str]],
    *,
    host: str,
    metrics_port: int,
    health_port: int,
    resync: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> list[web.AppRunner]:
    async def metrics_handler(_: web.Request) -> web.Response:
        counts = phases()
        for phase in Phase:
            metrics.functions.labels(phase.value).set(counts.get(phase.value, 0))
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        found = problems()
        if found:
            return web.Response(status=503, text="\n".join(found) + "\n")
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if not ready.is_set():
            return web.Response(status=503, text="watching not started yet")
        return web.Response(text="ok")

    async def resync_handler(_: web.Request) -> web.Response:
        if resync is None:
            return web.json_response({"error": "no resync here"}, status=404)
        started = time.perf_counter()
        result = await resync()
        return web.json_response({"seconds": time.perf_counter() - started, **result})

    runners = []
    for port, routes in (
        (
            metrics_port,
            [web.get("/metrics", metrics_handler), web.post("/-/resync", resync_handler)],
        ),
        (health_port, [web.get("/healthz", healthz), web.get("/readyz", readyz)]),
    ):
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        runners.append(runner)
    return runners
