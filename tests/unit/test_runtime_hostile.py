"""The hostile corpus against the runtime alone, and the compile limits (issue 11): every
hostile module is contained with its documented status while hello keeps answering; a
compile bomb fails alone, in its own worker, and delays no other module."""

from __future__ import annotations

import asyncio
import gzip
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from wasmop.bench.hostile import HOSTILE_LIMITS, Hostile, compile_bomb, corpus
from wasmop.runtime import (
    CompiledModule,
    EngineFeatures,
    FunctionConfig,
    ModuleError,
    ModuleTooLarge,
    Runtime,
    RuntimeConfig,
    RuntimeConfigError,
    ServerHandle,
    check_module,
    start_server,
)
from wasmop.runtime.compiler import compile_pool
from wasmop.runtime.errors import CompileTimeout
from wasmop.runtime.workloads import load_manifest

COMPILE_DEADLINE_S = 2.0  # the bomb compiles for ~15 s; no test waits that long


def config_for(hostile: Hostile, **settings: object) -> RuntimeConfig:
    features = EngineFeatures(multi_memory="multi-memory" in hostile.features)
    return RuntimeConfig(features=features, compile_timeout_s=COMPILE_DEADLINE_S, **settings)


@pytest.fixture
async def hello() -> AsyncIterator[ServerHandle]:
    with Runtime() as runtime:
        function = runtime.function(load_manifest()["hello"].wasm_path, name="hello")
        handle = await start_server(function)
        yield handle
        await handle.stop(grace=0)


async def contain(hostile: Hostile) -> str:
    """Load and serve one hostile module over HTTP in its own runtime; what it got."""
    runtime = Runtime(config_for(hostile))
    try:
        try:
            module = await runtime.load_async(hostile.module, HOSTILE_LIMITS)
        except ModuleError as exc:
            return f"refused {exc.reason}"
        function = runtime.function(module, FunctionConfig(name="h", limits=HOSTILE_LIMITS))
        handle = await start_server(function)
        try:
            query = f"?{hostile.query}" if hostile.query else ""
            async with aiohttp.ClientSession() as client, client.get(handle.url + "/" + query) as r:
                await r.read()
                return f"{r.status} {r.headers.get('X-Wasmop-Reason')}"
        finally:
            await handle.stop(grace=0)
            await function.aclose(0)
    finally:
        await runtime.aclose()


async def test_every_hostile_module_is_contained_while_hello_keeps_answering(
    hello: ServerHandle,
) -> None:
    hello_statuses: list[int] = []
    done = asyncio.Event()

    async def keep_asking() -> None:
        async with aiohttp.ClientSession() as client:
            while not done.is_set():
                async with client.get(hello.url) as response:
                    assert await response.read() == b"Hello, world!\n"
                    hello_statuses.append(response.status)
                await asyncio.sleep(0.01)

    asker = asyncio.create_task(keep_asking())
    hostiles = corpus()
    outcomes = await asyncio.gather(*(contain(h) for h in hostiles))
    done.set()
    await asker
    assert {h.name: got for h, got in zip(hostiles, outcomes, strict=True)} == {
        h.name: h.expected for h in hostiles
    }
    assert len(hello_statuses) > 20 and set(hello_statuses) == {200}


def test_a_compile_bomb_fails_alone_and_delays_no_other() -> None:
    bomb = compile_bomb()
    config = RuntimeConfig(compile_timeout_s=COMPILE_DEADLINE_S)
    pool = compile_pool()
    pool.warm_up()
    killed_before = pool.killed
    failures: list[Exception] = []
    bomb_failed_at: list[float] = []

    def load_bomb() -> None:
        with Runtime(config) as runtime:
            try:
                runtime.load(bomb)
            except CompileTimeout as exc:
                failures.append(exc)
                bomb_failed_at.append(time.monotonic())
            # A Pod retrying it is refused at once, without another compile.
            started = time.monotonic()
            with pytest.raises(CompileTimeout):
                runtime.load(bomb)
            assert time.monotonic() - started < 0.5

    started = time.monotonic()
    thread = threading.Thread(target=load_bomb)
    thread.start()
    time.sleep(0.2)  # the bomb holds one worker now
    with Runtime() as other:
        loaded = [other.load(load_manifest()[name].wasm_path) for name in ("fib", "sha256")]
    others_done_at = time.monotonic()
    thread.join()
    assert all(isinstance(module, CompiledModule) for module in loaded)
    assert others_done_at < bomb_failed_at[0], "other modules waited behind the bomb"
    assert len(failures) == 1 and failures[0].reason == "CompileTimeout"
    assert pool.killed == killed_before + 1
    assert time.monotonic() - started < COMPILE_DEADLINE_S + 3


def test_a_gzip_bomb_is_refused_before_it_is_compiled() -> None:
    packed = gzip.compress(compile_bomb(), 9)
    with pytest.raises(ModuleTooLarge, match="expands"):
        check_module(packed)
    with Runtime() as runtime, pytest.raises(ModuleTooLarge):
        runtime.load(packed)
    # Ordinary modules compress 2-4x and pass, compressed or not.
    sqlite = load_manifest()["sqlite"].wasm_path.read_bytes()
    assert check_module(gzip.compress(sqlite)).size == len(sqlite)


def test_the_module_cache_must_be_a_private_directory(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    with Runtime(RuntimeConfig(cache_dir=fresh)):
        assert (os.stat(fresh).st_mode & 0o777) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with pytest.raises(RuntimeConfigError, match="mode 777"):
        Runtime(RuntimeConfig(cache_dir=shared))
    link = tmp_path / "link"
    link.symlink_to(fresh)
    with pytest.raises(RuntimeConfigError, match="not a directory"):
        Runtime(RuntimeConfig(cache_dir=link))


def test_a_cache_file_others_could_write_is_not_mapped(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    hello = load_manifest()["hello"].wasm_path
    with Runtime(RuntimeConfig(cache_dir=cache)) as runtime:
        runtime.load(hello)
    [entry] = cache.glob("*.cwasm")
    os.chmod(entry, 0o666)
    with Runtime(RuntimeConfig(cache_dir=cache)) as runtime:
        assert runtime.load(hello).origin == "compiled"


async def test_a_module_leaves_memory_and_disk_when_its_last_function_goes(
    tmp_path: Path,
) -> None:
    config = RuntimeConfig(cache_dir=tmp_path / "cache", evict_after_s=0)
    with Runtime(config) as runtime:
        module = runtime.load(load_manifest()["hello"].wasm_path)
        first = runtime.function(module, name="a")
        second = runtime.function(module, name="b")
        await first.aclose()
        assert runtime.cached(module.digest) is not None  # b still serves it
        assert list((tmp_path / "cache").glob("*.cwasm"))
        await second.aclose()
        assert runtime.cached(module.digest) is None
        assert not list((tmp_path / "cache").glob("*.cwasm"))
        assert runtime.stats()["evictions"] == 1
