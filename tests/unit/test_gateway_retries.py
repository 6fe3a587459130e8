"""What the gateway tries again on another Pod, and what it must not.

A real gateway handler in front of real upstream servers on loopback addresses (the
routing table is fed the EndpointSlices a watch would deliver; no API server): a runtime
serving hello, a Pod "going away" (it takes the request and closes the connection without
an answer) and an address where nothing listens (the connection is refused).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from wasmop.gateway.server import POD_HEADER, Gateway, GatewaySettings, _dispatch
from wasmop.runtime import FunctionConfig, Runtime, start_server
from wasmop.runtime.abi import FAULT_STATUS, Fault
from wasmop.runtime.workloads import load_manifest
from wasmop.wellknown import REASON_HEADER, REFUSED_UNRUN_REASONS

GOOD, GOING, REFUSING, DRAINING = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"


@dataclass
class Setup:
    url: str
    gateway: Gateway
    going_requests: list[bytes]
    route: Callable[..., None]  # (address, pod, **conditions) entries of one slice


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    runtime = Runtime()
    hello = runtime.function(load_manifest()["hello"].wasm_path, FunctionConfig(name="hello"))
    good = await start_server(hello, host=GOOD, port=0)
    port = good.port
    going_requests: list[bytes] = []

    async def take_and_hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        going_requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    going = await asyncio.start_server(take_and_hang_up, GOING, port)

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nX-Wasmop-Reason: draining\r\n"
            b"Content-Length: 9\r\nConnection: close\r\n\r\ndraining\n"
        )
        await writer.drain()
        writer.close()

    draining = await asyncio.start_server(refuse, DRAINING, port)
    gateway = Gateway(kube=None, settings=GatewaySettings(port=0))  # type: ignore[arg-type]
    gateway.table.apply_service("ADDED", {"metadata": {"namespace": "ns", "name": "fn"}})

    def route(*endpoints: tuple[str, str, dict[str, Any]]) -> None:
        gateway.table.apply_slice(
            "MODIFIED",
            {
                "metadata": {
                    "name": "fn-1",
                    "namespace": "ns",
                    "labels": {"kubernetes.io/service-name": "fn"},
                },
                "ports": [{"port": port}],
                "endpoints": [
                    {"addresses": [a], "targetRef": {"name": pod}, "conditions": conditions}
                    for a, pod, conditions in endpoints
                ],
            },
        )

    gateway._session = aiohttp.ClientSession(auto_decompress=False)
    runner = web.ServerRunner(web.Server(_dispatch(gateway)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield Setup(f"http://127.0.0.1:{runner.addresses[0][1]}/ns/fn/", gateway, going_requests, route)
    await runner.cleanup()
    await gateway._session.close()
    for server in (going, draining):
        server.close()
        await server.wait_closed()
    await good.stop()
    runtime.close()


READY: dict[str, Any] = {"ready": True}


async def test_an_idempotent_request_cut_off_by_a_pod_going_away_is_served_by_another(
    setup: Setup,
) -> None:
    # Ties go round-robin: of two requests, one goes first to the Pod that hangs up.
    setup.route((GOING, "going", READY), (GOOD, "good", READY))
    async with aiohttp.ClientSession() as client:
        for _ in range(2):
            async with client.get(setup.url) as response:
                assert response.status == 200
                assert response.headers[POD_HEADER] == "good"
                assert await response.read() == b"Hello, world!\n"
    assert setup.going_requests, "one of them went to the Pod going away first"


async def test_a_post_cut_off_by_a_pod_going_away_is_not_sent_again(setup: Setup) -> None:
    """The Pod may have acted on it already: running it twice is not the gateway's call."""
    setup.route((GOING, "going", READY), (GOOD, "good", READY))
    statuses = []
    async with aiohttp.ClientSession() as client:
        for _ in range(2):  # ties go round-robin: one of the two goes to the Pod going away
            async with client.post(setup.url, data=b"x") as response:
                statuses.append(response.status)
    assert sorted(statuses) == [200, 502]
    assert len(setup.going_requests) == 1


async def test_a_refused_connection_is_retried_and_that_pod_passed_over(setup: Setup) -> None:
    setup.route((REFUSING, "gone", READY), (GOOD, "good", READY))
    async with aiohttp.ClientSession() as client:
        for _ in range(4):
            async with client.post(setup.url, data=b"x") as response:
                assert response.status == 200
                assert response.headers[POD_HEADER] == "good"
    entry = setup.gateway.table.lookup("ns", "fn")
    assert entry is not None
    [refusing] = [e for e in entry.all() if e.address == REFUSING]
    assert refusing.ejected(time.monotonic())
    # Passed over: of four requests only the first went there.
    assert setup.gateway.metrics.service("ns", "fn").retries._value.get() == 1


async def test_a_draining_pod_serves_while_no_ready_one_exists(setup: Setup) -> None:
    """The last Pod of a function scaled in, say: its endpoint is terminating but serving."""
    setup.route((GOOD, "good", {"ready": False, "serving": True, "terminating": True}))
    async with aiohttp.ClientSession() as client, client.get(setup.url) as response:
        assert response.status == 200
    setup.route((GOOD, "good", {"ready": False, "serving": False, "terminating": True}))
    setup.gateway.settings = GatewaySettings(port=0, cold_start_wait_s=0.1)
    async with aiohttp.ClientSession() as client, client.get(setup.url) as response:
        assert response.status == 503


async def test_a_refusal_made_before_running_goes_to_another_pod(setup: Setup) -> None:
    """A Pod that is draining (or full) ran nothing: any request may go elsewhere, and
    with nowhere else to go its refusal is the answer."""
    setup.route((DRAINING, "draining", READY), (GOOD, "good", READY))
    async with aiohttp.ClientSession() as client:
        for _ in range(2):
            async with client.post(setup.url, data=b"x") as response:
                assert response.status == 200
    setup.route((DRAINING, "draining", READY))
    async with aiohttp.ClientSession() as client, client.get(setup.url) as response:
        assert response.status == 503
        assert response.headers[REASON_HEADER] == "draining"


def test_the_reasons_retried_are_the_runtimes_refusals_before_running() -> None:
    assert {
        f.value for f in (Fault.DRAINING, Fault.QUEUE_FULL, Fault.QUEUE_TIMEOUT,
                          Fault.OVERLOADED, Fault.CONNECTION_LIMIT)
    } == REFUSED_UNRUN_REASONS  # fmt: skip
    assert all(FAULT_STATUS[Fault(reason)] == 503 for reason in REFUSED_UNRUN_REASONS)
