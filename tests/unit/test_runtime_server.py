"""The HTTP server: every workload over HTTP, faults, probes, metrics, many servers per loop."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from wasmop.runtime import Function, FunctionConfig, Runtime, start_server
from wasmop.runtime.server import ServerHandle
from wasmop.runtime.workloads import Manifest, ensure_built

MANIFEST = ensure_built()
SAMPLES = [
    pytest.param(workload.name, sample.name, id=f"{workload.name}-{sample.name}")
    for workload in MANIFEST.servable()
    for sample in workload.samples
]


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return MANIFEST


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    with Runtime() as rt:
        yield rt


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def all_functions(runtime: Runtime, manifest: Manifest) -> AsyncIterator[ServerHandle]:
    """One server with every workload under /<name>/."""
    functions = [runtime.function(w.wasm_path, w.function_config()) for w in manifest.servable()]
    handle = await start_server(functions)
    yield handle
    await handle.stop()
    for function in functions:
        await function.aclose()


@pytest.mark.parametrize(("workload", "sample"), SAMPLES)
async def test_every_sample_over_http(
    all_functions: ServerHandle,
    client: aiohttp.ClientSession,
    manifest: Manifest,
    workload: str,
    sample: str,
) -> None:
    request = manifest[workload].sample(sample).request
    url = all_functions.url_for(workload) + request.target
    async with client.request(
        request.method, url, headers=dict(request.headers), data=request.body
    ) as response:
        body = await response.read()
        problems = (
            manifest[workload]
            .sample(sample)
            .expect.problems(response.status, response.headers, body)
        )
    assert not problems, problems


async def test_faults_while_hello_keeps_succeeding(
    all_functions: ServerHandle, client: aiohttp.ClientSession
) -> None:
    async def get(name: str, query: str = "") -> tuple[int, str | None]:
        async with client.get(f"{all_functions.url_for(name)}/?{query}") as response:
            await response.read()
            return response.status, response.headers.get("X-Wasmop-Reason")

    faults = [
        asyncio.create_task(get(name, query))
        for name, query in [
            ("loop", ""),
            ("grow", ""),
            ("flood", ""),
            ("trap", ""),
            ("trap", "kind=exit"),
            ("alloc", "mib=512"),
        ]
    ]
    hellos = await asyncio.gather(*(get("hello") for _ in range(40)))
    assert hellos == [(200, None)] * 40
    assert await asyncio.gather(*faults) == [
        (504, "timeout"),
        (507, "memory-limit"),
        (502, "output-too-large"),
        (500, "trap"),
        (500, "exit-status"),
        (507, "memory-limit"),
    ]
    # ...and after all that, the faulty functions still serve normal requests.
    assert await get("alloc", "mib=1") == (200, None)
    assert await get("flood", "mib=0") == (200, None)


async def test_probes_and_unknown_function(
    all_functions: ServerHandle, client: aiohttp.ClientSession
) -> None:
    async with client.get(all_functions.url + "/healthz") as response:
        assert response.status == 200
    async with client.get(all_functions.url + "/readyz") as response:
        assert response.status == 200
    async with client.get(all_functions.url + "/nosuch/") as response:
        assert response.status == 404
        assert response.headers["X-Wasmop-Reason"] == "no-such-function"


async def test_metrics_count_requests(
    all_functions: ServerHandle, client: aiohttp.ClientSession
) -> None:
    for _ in range(3):
        async with client.get(all_functions.url_for("hello") + "/") as response:
            await response.read()
    async with client.get(all_functions.url_for("trap") + "/") as response:
        await response.read()
    async with client.get(all_functions.url + "/metrics") as response:
        text = await response.text()
    assert 'wasmop_function_requests_total{code="200",function="hello",reason="ok"} 3.0' in text
    assert 'wasmop_function_requests_total{code="500",function="trap",reason="trap"} 1.0' in text
    for name in (
        "wasmop_function_request_duration_seconds_bucket",
        "wasmop_function_instantiate_seconds_count",
        "wasmop_function_cpu_seconds_total",
        "wasmop_function_memory_bytes",
        "wasmop_function_in_flight",
        "wasmop_function_queued",
    ):
        assert f'{name}{{function="hello"' in text, name
    digest = all_functions.functions["hello"].digest
    assert f'wasmop_function_info{{digest="{digest}",function="hello"}} 1.0' in text


async def test_request_body_over_the_cap_gets_413(
    runtime: Runtime, manifest: Manifest, client: aiohttp.ClientSession
) -> None:
    from wasmop.runtime import Limits

    echo = runtime.function(
        manifest["echo"].wasm_path, FunctionConfig(name="echo", limits=Limits(body_bytes=1000))
    )
    async with await start_server(echo) as handle:
        async with client.post(handle.url + "/", data=b"x" * 1001) as response:
            assert response.status == 413
            assert response.headers["X-Wasmop-Reason"] == "body-too-large"
        async with client.post(handle.url + "/", data=b"x" * 1000) as response:
            assert response.status == 200
            assert len(await response.read()) == 1000
    assert echo.stats.snapshot()["requests"] == {"413 body-too-large": 1, "200 ok": 1}


async def test_queue_full_over_http(
    runtime: Runtime, manifest: Manifest, client: aiohttp.ClientSession
) -> None:
    sleep = runtime.function(
        manifest["sleep"].wasm_path,
        FunctionConfig(name="sleep", max_concurrency=1, max_queue=0),
    )
    async with await start_server(sleep) as handle:
        slow = asyncio.create_task(client.get(handle.url + "/?ms=300"))
        await asyncio.sleep(0.1)
        async with client.get(handle.url + "/?ms=1") as response:
            assert response.status == 503
            assert response.headers["X-Wasmop-Reason"] == "queue-full"
            assert response.headers["Retry-After"] == "1"
        async with await slow as response:
            assert response.status == 200
    await sleep.aclose()


async def test_many_servers_in_one_loop_stop_independently(
    runtime: Runtime, manifest: Manifest, client: aiohttp.ClientSession
) -> None:
    """As in a node agent: one server per pod, on a socket the agent created."""
    hello = runtime.function(manifest["hello"].wasm_path, name="hello")
    echo = runtime.function(manifest["echo"].wasm_path, name="echo")
    handles = []
    for function in (hello, echo, hello):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        handles.append(await start_server(function, sock=sock))
    ports = {h.port for h in handles}
    assert len(ports) == 3

    await handles[0].stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with client.get(handles[0].url + "/") as response:
            await response.read()
    async with client.post(handles[1].url + "/", data=b"still here") as response:
        assert await response.read() == b"still here"
    async with client.get(handles[2].url + "/") as response:
        assert await response.read() == b"Hello, world!\n"
    # Metrics are per server: the stopped server's requests do not leak into another's.
    async with client.get(handles[1].url + "/metrics") as response:
        text = await response.text()
    assert 'function="echo"' in text and 'function="hello"' not in text
    for handle in handles[1:]:
        await handle.stop()


async def test_stop_waits_for_in_flight_requests(
    runtime: Runtime, manifest: Manifest, client: aiohttp.ClientSession
) -> None:
    sleep = runtime.function(manifest["sleep"].wasm_path, name="sleep-stop")
    handle = await start_server(sleep)
    pending = asyncio.create_task(client.get(handle.url + "/?ms=300"))
    await asyncio.sleep(0.1)
    await handle.stop()
    async with await pending as response:
        assert response.status == 200
        assert await response.read() == b"slept 300 ms\n"
    await sleep.aclose()


async def test_readyz_reports_draining(
    runtime: Runtime, manifest: Manifest, client: aiohttp.ClientSession
) -> None:
    hello: Function = runtime.function(manifest["hello"].wasm_path, name="hello-ready")
    async with await start_server(hello) as handle:
        async with client.get(handle.url + "/readyz") as response:
            assert response.status == 200
        await hello.aclose()
        async with client.get(handle.url + "/readyz") as response:
            assert response.status == 503
        async with client.get(handle.url + "/") as response:
            assert response.status == 503
            body = json.loads(await response.read())
            assert body["reason"] == "draining"
