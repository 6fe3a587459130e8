"""The runtime in-process: module cache, per-request isolation, limits and live figures."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime
from wasmop.runtime import (
    Fault,
    FunctionConfig,
    Limits,
    MemoryLimitExceeded,
    Request,
    Runtime,
    RuntimeConfig,
    engine,
)
from wasmop.runtime.config import MIB
from wasmop.runtime.workloads import Manifest, ensure_built

# Each request increments a global and prints it as one digit: always "1" in a fresh instance.
COUNTER_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $n (mut i32) (i32.const 0))
  (func (export "_start")
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (i32.store8 (i32.const 8) (i32.add (i32.const 48) (global.get $n)))
    (i32.store (i32.const 0) (i32.const 8))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
"""


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return ensure_built()


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    with Runtime() as rt:
        yield rt


def test_every_sample_in_process(runtime: Runtime, manifest: Manifest) -> None:
    for workload in manifest.servable():
        function = runtime.function(workload.wasm_path, workload.function_config())
        for sample in workload.samples:
            response = function.invoke_sync(sample.request.to_request())
            problems = sample.expect.problems(response.status, response.headers, response.body)
            assert not problems, f"{workload.name}/{sample.name}: {problems}"


def test_each_request_gets_a_fresh_instance(runtime: Runtime) -> None:
    function = runtime.function(bytes(wasmtime.wat2wasm(COUNTER_WAT)), name="counter")
    bodies = {function.invoke_sync(Request()).body for _ in range(5)}
    assert bodies == {b"1"}


def test_module_cache_compiles_once_per_digest(manifest: Manifest) -> None:
    with Runtime() as rt:
        path = manifest["fib"].wasm_path
        first = rt.load(path)
        second = rt.load(path.read_bytes())
        assert first.origin == "compiled"
        assert second.origin == "memory-cache"
        assert first.digest == second.digest
        assert second.module is first.module
        assert rt.stats()["compiles"] == 1


def test_concurrent_loads_of_one_module_compile_once(manifest: Manifest) -> None:
    with Runtime() as rt, concurrent.futures.ThreadPoolExecutor(4) as pool:
        data = manifest["sha256"].wasm_path.read_bytes()
        results = list(pool.map(lambda _: rt.load(data), range(8)))
        assert rt.stats()["compiles"] == 1
        assert {r.digest for r in results} == {results[0].digest}


def test_precompiled_disk_cache_survives_a_new_runtime(manifest: Manifest, tmp_path: Path) -> None:
    path = manifest["echo"].wasm_path
    config = RuntimeConfig(cache_dir=tmp_path)
    with Runtime(config) as first:
        assert first.load(path).origin == "compiled"
    cached = list(tmp_path.glob("*.cwasm"))
    assert len(cached) == 1
    with Runtime(config) as second:
        module = second.load(path)
        assert module.origin == "disk-cache"
        assert second.stats()["compiles"] == 0
        response = second.function(module, name="echo").invoke_sync(Request(body=b"x"))
        assert response.body == b"x"
    # A damaged cache entry is ignored and replaced, never trusted. (Replaced by rename,
    # as the runtime itself writes: precompiled files are mapped, never edited in place.)
    damaged = tmp_path / "damaged.tmp"
    damaged.write_bytes(b"garbage")
    damaged.replace(cached[0])
    with Runtime(config) as third:
        assert third.load(path).origin == "compiled"


def test_a_new_module_is_inspected_once_per_load(
    manifest: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compiling or mapping a precompiled module reads its interface and applies the
    policy once (it used to validate, parse and check a freshly compiled module twice);
    a compile does so in its worker process, a mapped module here."""
    calls: list[bool] = []
    real_inspect = engine.inspect

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(bool(kwargs.get("validated")))
        return real_inspect(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "inspect", counted)
    wasm = manifest["fib"].wasm_path.read_bytes()
    with Runtime(RuntimeConfig(cache_dir=tmp_path)) as rt:
        assert rt.load(wasm).origin == "compiled"
    assert calls == []  # checked once, in the compile worker, before code generation
    calls.clear()
    with Runtime(RuntimeConfig(cache_dir=tmp_path)) as rt:
        assert rt.load(wasm).origin == "disk-cache"
    assert calls == [True]  # from the bytes, already validated when they were compiled


def test_different_features_do_not_share_cache_entries(manifest: Manifest, tmp_path: Path) -> None:
    path = manifest["hello"].wasm_path
    with Runtime(RuntimeConfig(cache_dir=tmp_path)) as rt:
        rt.load(path)
    from wasmop.runtime import EngineFeatures

    config = RuntimeConfig(cache_dir=tmp_path, features=EngineFeatures(tail_call=False))
    with Runtime(config) as rt:
        assert rt.load(path).origin == "compiled"
    assert len(list(tmp_path.glob("*.cwasm"))) == 2


def test_function_refuses_module_whose_memory_exceeds_its_cap(
    runtime: Runtime, manifest: Manifest
) -> None:
    module = runtime.load(manifest["hello"].wasm_path)
    with pytest.raises(MemoryLimitExceeded):
        runtime.function(module, name="tiny", limits=Limits(memory_bytes=64 * 1024))


def test_granted_env_is_visible_and_nothing_else(
    runtime: Runtime, manifest: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WASMOP_HOST_SECRET", "leak")
    function = runtime.function(
        manifest["env"].wasm_path, FunctionConfig(name="env", env={"GREETING": "hello"})
    )
    text = function.invoke_sync(Request(path="/x")).body.decode()
    assert "env GREETING=hello" in text
    assert "WASMOP_HOST_SECRET" not in text
    assert "argv[0]=env" in text
    assert "open /etc/hostname: opened" not in text  # no filesystem


def test_fault_responses_carry_reason_and_stderr(runtime: Runtime, manifest: Manifest) -> None:
    grow = runtime.function(
        manifest["grow"].wasm_path, name="grow", limits=Limits(memory_bytes=32 * MIB)
    )
    response = grow.invoke_sync(Request())
    assert response.fault is Fault.MEMORY_LIMIT
    assert response.status == 507
    assert response.header("X-Wasmop-Reason") == "memory-limit"
    assert b"allocation failed" in response.body  # the module's stderr, for the researcher
    assert response.stats.memory_bytes <= 32 * MIB


def test_timeout_ends_an_infinite_loop(runtime: Runtime, manifest: Manifest) -> None:
    loop = runtime.function(manifest["loop"].wasm_path, name="loop", limits=Limits(timeout_s=0.2))
    response = loop.invoke_sync(Request())
    assert response.fault is Fault.TIMEOUT
    assert response.status == 504
    assert response.stats.cpu_s > 0


def test_fuel_bounds_cpu_deterministically(manifest: Manifest) -> None:
    with Runtime(RuntimeConfig(consume_fuel=True)) as rt:
        loop = rt.function(
            manifest["loop"].wasm_path, name="loop", limits=Limits(fuel=1_000_000, timeout_s=30)
        )
        response = loop.invoke_sync(Request())
        assert response.fault is Fault.TIMEOUT
        assert "fuel" in response.body.decode()
        hello = rt.function(manifest["hello"].wasm_path, name="hello")
        assert hello.invoke_sync(Request()).status == 200


def test_output_cap_is_enforced_while_running(runtime: Runtime, manifest: Manifest) -> None:
    flood = runtime.function(
        manifest["flood"].wasm_path, name="flood", limits=Limits(output_bytes=256 * 1024)
    )
    response = flood.invoke_sync(Request(query="mib=64"))
    assert response.fault is Fault.OUTPUT_TOO_LARGE
    assert response.status == 502
    # The guest saw its writes fail and gave up long before writing 64 MiB.
    assert b"write failed" in response.body


def test_body_over_the_cap_is_refused(runtime: Runtime, manifest: Manifest) -> None:
    echo = runtime.function(manifest["echo"].wasm_path, name="echo", limits=Limits(body_bytes=10))
    assert echo.invoke_sync(Request(body=b"x" * 11)).fault is Fault.BODY_TOO_LARGE
    assert echo.invoke_sync(Request(body=b"x" * 10)).status == 200


def test_live_figures(runtime: Runtime, manifest: Manifest) -> None:
    fib = runtime.function(manifest["fib"].wasm_path, name="fib-figures")
    idle_memory = fib.memory_bytes()
    assert idle_memory == fib.module.image_bytes > 0
    assert fib.cpu_seconds() == 0
    fib.invoke_sync(Request(query="n=27"))
    assert fib.cpu_seconds() > 0
    snapshot = fib.stats.snapshot()
    assert snapshot["requests"] == {"200 ok": 1}
    assert snapshot["instantiate_count"] == 1
    assert fib.stats.peak_memory_bytes >= fib.module.info.memory_min_bytes


async def test_memory_of_in_flight_requests_is_counted(
    runtime: Runtime, manifest: Manifest
) -> None:
    sleep = runtime.function(manifest["sleep"].wasm_path, name="sleep-memory")
    task = asyncio.create_task(sleep.invoke(Request(query="ms=300")))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if sleep.memory_bytes() > sleep.module.image_bytes:
            break
    assert sleep.in_flight == 1
    assert sleep.memory_bytes() >= sleep.module.image_bytes + sleep.module.info.memory_min_bytes
    assert (await task).status == 200
    assert sleep.memory_bytes() == sleep.module.image_bytes
    await sleep.aclose()


async def test_concurrency_limit_and_queue(runtime: Runtime, manifest: Manifest) -> None:
    sleep = runtime.function(
        manifest["sleep"].wasm_path,
        FunctionConfig(name="sleep-queue", max_concurrency=1, max_queue=1),
    )
    first = asyncio.create_task(sleep.invoke(Request(query="ms=300")))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(sleep.invoke(Request(query="ms=1")))
    await asyncio.sleep(0.05)
    assert (sleep.in_flight, sleep.queued) == (1, 1)
    third = await sleep.invoke(Request(query="ms=1"))
    assert third.fault is Fault.QUEUE_FULL
    assert third.status == 503
    assert third.header("Retry-After") == "1"
    assert (await first).status == 200
    assert (await second).status == 200
    assert (sleep.in_flight, sleep.queued) == (0, 0)
    await sleep.aclose()


async def test_queue_timeout(runtime: Runtime, manifest: Manifest) -> None:
    sleep = runtime.function(
        manifest["sleep"].wasm_path,
        FunctionConfig(name="sleep-qt", max_concurrency=1, queue_timeout_s=0.05),
    )
    first = asyncio.create_task(sleep.invoke(Request(query="ms=300")))
    await asyncio.sleep(0.02)
    waited = await sleep.invoke(Request(query="ms=1"))
    assert waited.fault is Fault.QUEUE_TIMEOUT
    assert (await first).status == 200
    assert sleep.queued == 0
    await sleep.aclose()


async def test_a_host_call_past_the_deadline_gets_504_and_frees_its_slot(
    runtime: Runtime, manifest: Manifest
) -> None:
    sleep = runtime.function(
        manifest["sleep"].wasm_path,
        FunctionConfig(name="sleep-deadline", limits=Limits(timeout_s=0.1), max_concurrency=1),
    )
    response = await sleep.invoke(Request(query="ms=800"))
    assert response.fault is Fault.TIMEOUT
    assert b"host call" in response.body  # the sleep was cut at the deadline...
    assert sleep.in_flight == 0  # ...so the slot is free at once
    assert sleep.stats.snapshot()["requests"] == {"504 timeout": 1}
    await sleep.aclose()


async def test_draining_function_refuses_new_requests(runtime: Runtime, manifest: Manifest) -> None:
    hello = runtime.function(manifest["hello"].wasm_path, name="hello-drain")
    assert (await hello.invoke(Request())).status == 200
    assert await hello.aclose()
    response = await hello.invoke(Request())
    assert response.fault is Fault.DRAINING
    assert not hello.ready


async def test_faults_do_not_disturb_concurrent_requests(
    runtime: Runtime, manifest: Manifest
) -> None:
    hello = runtime.function(manifest["hello"].wasm_path, name="hello-neighbour")
    faulty = [
        runtime.function(w.wasm_path, w.function_config(name=f"{w.name}-neighbour"))
        for w in (manifest["loop"], manifest["grow"], manifest["flood"], manifest["trap"])
    ]
    faults = [asyncio.create_task(f.invoke(Request())) for f in faulty]
    await asyncio.sleep(0.05)  # let them start: the hellos below run beside them
    assert sum(f.in_flight for f in faulty) >= 1
    hellos = [await hello.invoke(Request()) for _ in range(30)]
    assert all(r.status == 200 and r.body == b"Hello, world!\n" for r in hellos)
    reasons = [(await task).reason for task in faults]
    assert reasons == ["timeout", "memory-limit", "output-too-large", "trap"]
    for function in (hello, *faulty):
        await function.aclose()


def test_process_exits_cleanly_after_serving(manifest: Manifest, tmp_path: Path) -> None:
    """wasmtime once aborted the interpreter at exit after output callbacks; not here."""
    script = tmp_path / "serve_once.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, urllib.request
            from wasmop.runtime import Runtime, start_server

            async def main():
                runtime = Runtime()
                hello = runtime.function({str(manifest["hello"].wasm_path)!r}, name="hello")
                flood = runtime.function({str(manifest["flood"].wasm_path)!r}, name="flood")
                server = await start_server([hello, flood])
                def get(path):
                    try:
                        return urllib.request.urlopen(server.url + path).read()
                    except Exception as exc:
                        return exc
                print(await asyncio.to_thread(get, "/hello/"))
                print(await asyncio.to_thread(get, "/flood/?mib=64"))
                await server.stop()
                # The runtime is deliberately not closed: exit must still be clean.

            asyncio.run(main())
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Hello, world!" in result.stdout
    assert "panicked" not in result.stderr


async def test_a_lone_request_runs_inline_and_a_slow_one_falls_back(
    runtime: Runtime, manifest: Manifest
) -> None:
    hello = runtime.function(manifest["hello"].wasm_path, name="hello-inline")
    assert (await hello.invoke(Request())).status == 200
    assert hello.stats.inline_runs == 1

    loop = runtime.function(
        manifest["loop"].wasm_path, name="loop-inline", limits=Limits(timeout_s=0.3)
    )
    response = await loop.invoke(Request())
    # The inline attempt was abandoned after one tick and the request ran again on a
    # worker with its full budget, so the timeout is the function's own.
    assert response.fault is Fault.TIMEOUT
    assert "0.3 s" in response.body.decode()
    assert (loop.stats.inline_runs, loop.stats.inline_overruns) == (0, 1)
    assert loop.stats.snapshot()["requests"] == {"504 timeout": 1}
    await loop.invoke(Request())
    assert loop.stats.inline_overruns == 1  # cooling down: straight to a worker
    for function in (hello, loop):
        await function.aclose()


async def test_modules_that_can_block_never_run_inline(
    runtime: Runtime, manifest: Manifest
) -> None:
    sleep = runtime.function(manifest["sleep"].wasm_path, name="sleep-inline")
    assert (await sleep.invoke(Request(query="ms=1"))).status == 200
    assert sleep.stats.inline_runs == 0
    disabled = runtime.function(
        manifest["hello"].wasm_path, FunctionConfig(name="hello-no-inline", inline=False)
    )
    assert (await disabled.invoke(Request())).status == 200
    assert disabled.stats.inline_runs == 0
    for function in (sleep, disabled):
        await function.aclose()


async def test_closing_the_runtime_interrupts_running_requests(manifest: Manifest) -> None:
    runtime = Runtime()
    loop = runtime.function(
        manifest["loop"].wasm_path,
        FunctionConfig(name="loop-close", limits=Limits(timeout_s=600), inline=False),
    )
    running = asyncio.create_task(loop.invoke(Request()))
    for _ in range(500):
        if loop.memory_bytes() > loop.module.image_bytes:  # instantiated and running
            break
        await asyncio.sleep(0.01)
    assert loop.in_flight == 1
    await runtime.aclose()
    response = await running
    assert response.fault is Fault.TIMEOUT  # not the 600 s bound: the close interrupted it
    assert not loop.ready
    assert (await loop.invoke(Request())).fault is Fault.DRAINING
