"""A steady request probe: one request every 1/rate seconds to a function, recording each
outcome, for recovery and edge-network experiments.

Unlike a Locust run it sends at a fixed schedule (open loop, so an outage shows as a run
of failures rather than as fewer requests) and runs on the session's event loop next to
the watch recorder, which puts requests and Kubernetes events on one clock.
Traffic goes only to loopback or our own node namespaces (see :func:`check_target`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import pandas as pd

from wasmop.bench.clock import now_ms
from wasmop.bench.net import TargetNotAllowed, check_target
from wasmop.bench.rawlog import parse_server_timing

log = logging.getLogger(__name__)

__all__ = [
    "ProbeResult",
    "Prober",
    "TargetNotAllowed",
    "check_target",
    "parse_server_timing",
    "probe_once",
    "results_frame",
    "wait_serving",
]

PROBE_COLUMNS = (
    "t_ms", "latency_ms", "status", "ok", "pod", "reason", "cold_start", "upstream_ms", "error",
    "hold_ms",
)  # fmt: skip


@dataclass(frozen=True)
class ProbeResult:
    t_ms: float
    latency_ms: float
    status: int  # 0: no HTTP answer
    ok: bool
    pod: str = ""
    reason: str = ""
    cold_start: bool = False
    upstream_ms: float | None = None
    error: str = ""
    hold_ms: float | None = None  # how long the gateway held it for a cold start


async def probe_once(
    session: aiohttp.ClientSession, url: str, timeout_s: float = 5.0
) -> ProbeResult:
    started = now_ms()
    t0 = time.perf_counter()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            await response.read()
            latency = (time.perf_counter() - t0) * 1000
            timing = parse_server_timing(response.headers.get("Server-Timing"))
            return ProbeResult(
                t_ms=started,
                latency_ms=latency,
                status=response.status,
                ok=200 <= response.status < 300,
                pod=response.headers.get("X-Wasmop-Pod", ""),
                reason=response.headers.get("X-Wasmop-Reason", ""),
                cold_start=response.headers.get("X-Wasmop-Cold-Start") == "true",
                upstream_ms=timing.get("upstream"),
                hold_ms=timing.get("hold"),
            )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        latency = (time.perf_counter() - t0) * 1000
        return ProbeResult(
            started, latency, 0, False, error=f"{exc.__class__.__name__}: {exc}"[:200]
        )


class Prober:
    """Send GET ``url`` ``rate_hz`` times a second until stopped; keep every result.

    Each request runs as its own task, so a slow answer does not delay the schedule;
    ``max_in_flight`` bounds the requests outstanding during an outage.
    """

    def __init__(
        self, url: str, rate_hz: float = 20.0, timeout_s: float = 5.0, max_in_flight: int = 64
    ) -> None:
        if rate_hz <= 0:
            raise ValueError("rate_hz must be positive")
        self.url = check_target(url)
        self.rate_hz = rate_hz
        self.timeout_s = timeout_s
        self.results: list[ProbeResult] = []
        self._slots = asyncio.Semaphore(max_in_flight)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._task = asyncio.create_task(self._run(), name="prober")

    async def _one(self) -> None:
        assert self._session is not None
        try:
            self.results.append(await probe_once(self._session, self.url, self.timeout_s))
        finally:
            self._slots.release()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate_hz
        next_at = loop.time()
        while True:
            await self._slots.acquire()
            task = asyncio.create_task(self._one())
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=self.timeout_s + 1)
        if self._session is not None:
            await self._session.close()

    def table(self) -> pd.DataFrame:
        return results_frame(self.results)


def results_frame(results: Sequence[ProbeResult]) -> pd.DataFrame:
    frame = pd.DataFrame([r.__dict__ for r in results], columns=list(PROBE_COLUMNS))
    return frame.sort_values("t_ms", kind="stable").reset_index(drop=True)


async def wait_serving(
    url: str, timeout_s: float = 60.0, successes: int = 3, interval_s: float = 0.1
) -> float:
    """Wait until ``url`` answers 2xx ``successes`` times in a row; returns the client
    time of the first of them. The gateway needs a moment after Pods turn ready to
    learn the endpoints from their EndpointSlice."""
    check_target(url)
    deadline = time.monotonic() + timeout_s
    streak: list[float] = []
    last: Mapping[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            result = await probe_once(session, url)
            if result.ok:
                streak.append(result.t_ms)
                if len(streak) >= successes:
                    return streak[0]
            else:
                streak.clear()
                last = {"status": result.status, "reason": result.reason, "error": result.error}
            await asyncio.sleep(interval_s)
    raise TimeoutError(f"{url} did not answer 2xx within {timeout_s:g} s (last: {last})")
