"""A heavy function's requests run in an isolated worker process of their own (issue 11:
hello's p99 beside a hostile module in the same process stayed 5-9x its idle p99), with
the same statuses; other functions never run there."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from wasmop.bench.hostile import HOSTILE_LIMITS, corpus
from wasmop.runtime import EngineFeatures, FunctionConfig, Limits, Request, Runtime, RuntimeConfig
from wasmop.runtime.abi import Fault
from wasmop.runtime.epoch import LoadMeter
from wasmop.runtime.function import Function
from wasmop.runtime.workloads import load_manifest

HOSTILES = {h.name: h for h in corpus()}


def make_heavy(runtime: Runtime, name: str) -> None:
    """A slow-decaying meter on which `name` keeps four cores busy beside hello."""
    runtime.ticker.loads = LoadMeter(tau_s=600.0)
    now = time.monotonic()
    runtime.ticker.loads.add(name, 600.0 * 4, now)
    runtime.ticker.loads.add("hello", 1.0, now)


async def until_isolated(function: Function, query: str) -> list[tuple[int, str | None]]:
    """Requests until one was served by the isolated worker (it starts at the first
    heavy request); their statuses."""
    statuses = []
    deadline = time.monotonic() + 60
    while function.stats.isolated_runs == 0:
        assert time.monotonic() < deadline, "the isolated worker never served a request"
        response = await function.invoke(Request(query=query))
        statuses.append((response.status, response.reason))
    return statuses


def test_a_heavy_functions_requests_keep_their_statuses_in_its_isolated_worker() -> None:
    async def main() -> None:
        with Runtime() as runtime:
            hello = runtime.function(
                load_manifest()["hello"].wasm_path, FunctionConfig(name="hello", inline=False)
            )
            for name in ("deep-recursion", "table-growth", "output-flood"):
                hostile = HOSTILES[name]
                function = runtime.function(
                    runtime.load(hostile.module, HOSTILE_LIMITS),
                    FunctionConfig(name=name, limits=HOSTILE_LIMITS, inline=False),
                )
                make_heavy(runtime, name)
                statuses = await until_isolated(function, hostile.query)
                worker = function.isolated
                assert worker is not None and worker.pid not in (None, os.getpid())
                pid = worker.pid
                assert pid is not None
                for _ in range(3):
                    response = await function.invoke(Request(query=hostile.query))
                    statuses.append((response.status, response.reason))
                assert function.stats.isolated_runs >= 4
                expected = (hostile.status, hostile.reason)
                assert set(statuses) == {expected}, (name, statuses)
                # Hello, judged not heavy, is served here and never starts a worker.
                assert (await hello.invoke(Request())).status == 200
                await function.aclose(1)
                assert _gone(pid)  # killed and reaped
                assert worker.peak_rss_bytes > 0
            assert hello.stats.isolated_runs == 0
            assert hello.isolated is not None and hello.isolated.starts == 0
            await hello.aclose(1)

    asyncio.run(main())


def _gone(pid: int) -> bool:
    return not os.path.exists(f"/proc/{pid}")


def test_an_isolated_request_that_overruns_is_a_504_and_its_worker_is_replaced() -> None:
    """A worker that does not answer within the deadline and its grace (stopped here, as
    one stuck past the reach of its epoch deadline would be) is killed; the request gets
    504 timeout, and the next heavy request starts another worker."""

    async def main() -> None:
        with Runtime() as runtime:
            limits = Limits(timeout_s=0.3)
            function = runtime.function(
                load_manifest()["hello"].wasm_path,
                FunctionConfig(name="slow", limits=limits, inline=False),
            )
            make_heavy(runtime, "slow")
            await until_isolated(function, "")
            worker = function.isolated
            assert worker is not None and worker.pid is not None
            stuck = worker.pid
            os.kill(stuck, signal.SIGSTOP)
            response = await function.invoke(Request())
            assert (response.status, response.fault) == (504, Fault.TIMEOUT)
            deadline = time.monotonic() + 10
            while worker.pid is None or worker.pid == stuck:
                assert time.monotonic() < deadline
                await function.invoke(Request())  # the next heavy request restarts it
                await asyncio.sleep(0.05)
            assert worker.starts == 2
            assert _gone(stuck)
            response = await function.invoke(Request())
            assert response.status == 200
            await function.aclose(1)

    asyncio.run(main())


def test_functions_on_different_engines_are_neighbours_for_the_load_rule() -> None:
    """A function is heavy only beside other functions; one on an engine of its own (a
    multi-memory module, say) was judged alone, so it was never demoted, capped or
    isolated, however hard it ran beside hello."""
    with (
        Runtime() as plain,
        Runtime(RuntimeConfig(features=EngineFeatures(multi_memory=True))) as multi,
    ):
        now = time.monotonic()
        plain.ticker.loads.add("neighbour-hello", 0.005, now)  # 0.1 core
        multi.ticker.loads.add("neighbour-bomb", 10.0, now)
        assert multi.ticker.heavy("neighbour-bomb")
        assert not plain.ticker.heavy("neighbour-hello")


def test_a_function_whose_requests_keep_faulting_becomes_heavy() -> None:
    """A trap loop's requests take 0.3 ms of CPU each: hundreds a second stayed below
    `HEAVY_LOAD` while hello's p99 beside them was 5x idle. Each fault counts at least
    `FAULT_CHARGE_S`, so sixty faults in a row make the function heavy; as many good
    requests do not."""
    with Runtime() as runtime:
        runtime.ticker.loads = LoadMeter(tau_s=1.0, heavy=0.5)
        runtime.ticker.loads.add("hello", 0.01, time.monotonic())
        hostile = HOSTILES["deep-recursion"]
        trap = runtime.function(
            runtime.load(hostile.module, HOSTILE_LIMITS),
            FunctionConfig(name="trap", limits=HOSTILE_LIMITS),
        )
        good = runtime.function(load_manifest()["hello"].wasm_path, FunctionConfig(name="good"))
        for _ in range(60):
            assert trap.invoke_sync(Request()).fault is Fault.TRAP
            assert good.invoke_sync(Request()).status == 200
        assert runtime.ticker.heavy("trap")
        assert not runtime.ticker.heavy("good")


def test_a_spare_worker_exits_quietly_when_its_parent_goes() -> None:
    """A server keeps a spare worker waiting; when the node process exits (its pipe
    closes) before the spare was needed, the spare exits with status 0 and no traceback
    in the node's log."""
    from wasmop.runtime.isolation import _start_process

    process = _start_process()
    assert process.stdin is not None
    process.stdin.close()
    assert process.wait(timeout=60) == 0
