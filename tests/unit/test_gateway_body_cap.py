"""The gateway and the runtime share one request-body cap, and both refuse with a reason.

A real gateway handler in front of a real runtime server on 127.0.0.1 (the routing table
is fed the objects a watch would deliver; no API server is involved).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from wasmop.gateway.server import Gateway, GatewaySettings, _dispatch
from wasmop.runtime import FunctionConfig, Runtime, start_server
from wasmop.runtime.workloads import load_manifest
from wasmop.wellknown import MAX_REQUEST_BODY_BYTES, REASON_HEADER


@pytest.fixture
async def gateway_url() -> AsyncIterator[str]:
    runtime = Runtime()
    sha = runtime.function(load_manifest()["sha256"].wasm_path, FunctionConfig(name="sha256"))
    upstream = await start_server(sha)
    gateway = Gateway(kube=None, settings=GatewaySettings(port=0))  # type: ignore[arg-type]
    gateway.table.apply_service("ADDED", {"metadata": {"namespace": "ns", "name": "echo"}})
    gateway.table.apply_slice(
        "ADDED",
        {
            "metadata": {
                "name": "echo-1",
                "namespace": "ns",
                "labels": {"kubernetes.io/service-name": "echo"},
            },
            "ports": [{"port": upstream.port}],
            "endpoints": [{"addresses": ["127.0.0.1"], "targetRef": {"name": "echo-pod"}}],
        },
    )
    gateway._session = aiohttp.ClientSession(auto_decompress=False)
    runner = web.ServerRunner(web.Server(_dispatch(gateway)))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/ns/echo/"
    await runner.cleanup()
    await gateway._session.close()
    await upstream.stop()
    runtime.close()


async def test_body_at_the_cap_passes_both_and_one_byte_more_is_refused_with_a_reason(
    gateway_url: str,
) -> None:
    async with aiohttp.ClientSession() as client:
        body = b"x" * MAX_REQUEST_BODY_BYTES
        async with client.post(gateway_url, data=body) as response:
            assert response.status == 200, await response.text()
            assert (await response.text()).strip() == hashlib.sha256(body).hexdigest()
        async with client.post(gateway_url, data=body + b"x") as response:
            assert response.status == 413
            assert response.headers[REASON_HEADER] == "body-too-large"


async def test_chunked_body_over_the_cap_is_refused_with_a_reason(gateway_url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_REQUEST_BODY_BYTES // 65536 + 2):
            yield b"y" * 65536

    async with (
        aiohttp.ClientSession() as client,
        client.post(gateway_url, data=chunks()) as response,
    ):
        assert response.status == 413
        assert response.headers[REASON_HEADER] == "body-too-large"
