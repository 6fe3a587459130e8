"""Request admission before a body is read, and host calls bounded by the deadline
(issue 11): each test is a client misbehaving against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from wasmop.runtime import FunctionConfig, Limits, Runtime, ServerHandle, start_server
from wasmop.runtime.admission import Admission, AdmissionSettings
from wasmop.runtime.workloads import Manifest, load_manifest

REASON = "x-wasmop-reason"


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return load_manifest()


async def read_head(reader: asyncio.StreamReader, within_s: float = 2.0) -> tuple[int, dict]:
    """Status and headers of one response (the test fails if none comes in time)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within_s)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


async def raw(
    handle: ServerHandle, data: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(handle.host, handle.port)
    writer.write(data)
    await writer.drain()
    return reader, writer


@contextlib.asynccontextmanager
async def serving(workload: str, admission: Admission) -> AsyncIterator[ServerHandle]:
    """One workload served with its own admission counters."""
    with Runtime() as runtime:
        function = runtime.function(load_manifest()[workload].wasm_path, name=workload)
        handle = await start_server(function, admission=admission)
        try:
            yield handle
        finally:
            await handle.stop(grace=0)


@pytest.fixture
async def sleeper(manifest: Manifest) -> AsyncIterator[tuple[Runtime, object]]:
    runtime = Runtime()
    function = runtime.function(
        manifest["sleep"].wasm_path,
        FunctionConfig(name="sleep", max_concurrency=1, max_queue=0, limits=Limits(timeout_s=5)),
    )
    yield runtime, function
    await function.aclose(0)
    await runtime.aclose()


async def test_a_full_queue_refuses_before_the_body_is_read(sleeper) -> None:  # type: ignore[no-untyped-def]
    _, function = sleeper
    handle = await start_server(function, admission=Admission())
    try:
        _, busy = await raw(handle, b"GET /?ms=2000 HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.2)  # the one slot is taken
        # Declares 10 MiB and sends none of it: the answer must not wait for the body.
        reader, writer = await raw(
            handle, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n"
        )
        status, headers = await read_head(reader)
        assert (status, headers[REASON]) == (503, "queue-full")
        writer.close()
        busy.close()
    finally:
        await handle.stop(grace=0)


async def test_the_body_budget_is_shared_and_refusals_say_so(manifest: Manifest) -> None:
    admission = Admission(AdmissionSettings(body_budget_bytes=1_000_000))
    with Runtime() as runtime:
        echo = runtime.function(manifest["echo"].wasm_path, FunctionConfig(name="echo"))
        other = runtime.function(manifest["sha256"].wasm_path, FunctionConfig(name="sha"))
        one = await start_server(echo, admission=admission)
        two = await start_server(other, admission=admission)
        try:
            # A slow upload to one server holds 800 kB of the budget...
            _, slow = await raw(
                one, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 800000\r\n\r\nab"
            )
            await asyncio.sleep(0.2)
            assert admission.body_bytes == 800_000
            # ...so another server of the same process cannot take 800 kB more.
            reader, writer = await raw(
                two, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 800000\r\n\r\n"
            )
            status, headers = await read_head(reader)
            assert (status, headers[REASON], headers.get("retry-after")) == (503, "overloaded", "1")
            writer.close()
            slow.close()
            await asyncio.sleep(0.2)
            assert admission.body_bytes == 0  # released when the request ended
        finally:
            await one.stop(grace=0)
            await two.stop(grace=0)


async def test_a_body_that_stops_arriving_gets_408(manifest: Manifest) -> None:
    admission = Admission(AdmissionSettings(body_timeout_s=0.5))
    async with serving("echo", admission) as handle:
        reader, writer = await raw(
            handle, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nhalf"
        )
        status, headers = await read_head(reader, within_s=3)
        assert (status, headers[REASON]) == (408, "body-timeout")
        assert await asyncio.wait_for(reader.read(), 2) is not None  # then closed
        assert admission.body_bytes == 0
        writer.close()


async def test_a_request_head_that_never_completes_is_disconnected(manifest: Manifest) -> None:
    admission = Admission(AdmissionSettings(header_timeout_s=0.5))
    async with serving("hello", admission) as handle:
        started = time.monotonic()
        reader, writer = await raw(handle, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        assert time.monotonic() - started < 3
        writer.close()
        assert admission.connections == 0


async def test_connections_over_the_cap_are_refused_with_a_reason(manifest: Manifest) -> None:
    admission = Admission(AdmissionSettings(per_server_connections=2))
    async with serving("hello", admission) as handle:
        held = [await asyncio.open_connection(handle.host, handle.port) for _ in range(2)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection(handle.host, handle.port)
        status, headers = await read_head(reader)
        assert (status, headers[REASON]) == (503, "connection-limit")
        writer.close()
        for _, w in held:
            w.close()
        await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as client, client.get(handle.url) as response:
            assert response.status == 200  # room again


async def test_a_sleeping_host_call_ends_at_the_deadline_and_frees_its_slot(
    manifest: Manifest,
) -> None:
    with Runtime() as runtime:
        function = runtime.function(
            manifest["sleep"].wasm_path,
            FunctionConfig(name="sleep", max_concurrency=1, limits=Limits(timeout_s=0.5)),
        )
        started = time.monotonic()
        response = await function.invoke(_get("ms=600000"))
        assert (response.status, response.reason) == (504, "timeout")
        await asyncio.sleep(0.3)
        assert function.in_flight == 0  # the slot is free, not held for ten minutes
        assert time.monotonic() - started < 3
        ok = await function.invoke(_get("ms=10"))
        assert ok.status == 200, ok.body


async def test_closing_wakes_a_sleeping_host_call(manifest: Manifest) -> None:
    runtime = Runtime()
    function = runtime.function(
        manifest["sleep"].wasm_path, FunctionConfig(name="sleep", limits=Limits(timeout_s=600))
    )
    request = asyncio.ensure_future(function.invoke(_get("ms=600000")))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await runtime.aclose(grace_s=30)
    assert time.monotonic() - started < 5
    response = await asyncio.wait_for(request, 5)
    assert response.status == 504, response.body


def test_a_server_that_cannot_stop_is_ended_after_its_grace_period() -> None:
    """The last resort: a process whose shutdown hangs exits anyway."""
    code = (
        "import time; from wasmop.console import exit_after_grace; "
        "exit_after_grace(0.3); time.sleep(60)"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert time.monotonic() - started < 10
    assert result.returncode != 0
    assert "grace" in result.stderr


def _get(query: str):  # type: ignore[no-untyped-def]
    from wasmop.runtime import Request

    return Request(query=query)
