"""The operator's one work queue: a key at most once, one run per key at a time, retries."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from wasmop.operator.workqueue import Retry, WorkQueue


def gated_queue() -> tuple[list[Hashable], asyncio.Event, WorkQueue]:
    """A started queue of four workers whose runs record their key and wait for the gate."""
    runs: list[Hashable] = []
    gate = asyncio.Event()

    async def handler(key: Hashable) -> None:
        runs.append(key)
        await gate.wait()

    queue = WorkQueue(handler, workers=4)
    queue.start()
    return runs, gate, queue


async def test_a_burst_of_adds_is_one_run_and_a_change_during_a_run_is_one_more() -> None:
    runs, gate, queue = gated_queue()
    for _ in range(5):
        queue.add("a")
    await asyncio.sleep(0.01)
    assert runs == ["a"]  # the other four found it queued, then running
    for _ in range(3):
        queue.add("a")  # changed while running: run once more afterwards
    gate.set()
    await queue.join()
    assert runs == ["a", "a"]
    await queue.stop()


async def test_keys_run_side_by_side_but_never_one_key_twice_at_once() -> None:
    active: set[Hashable] = set()
    overlap = []

    async def handler(key: Hashable) -> None:
        if key in active:
            overlap.append(key)
        active.add(key)
        await asyncio.sleep(0.01)
        active.discard(key)

    queue = WorkQueue(handler, workers=8)
    queue.start()
    for round_ in range(3):
        for key in range(10):
            queue.add(key)
        await asyncio.sleep(0.003 * round_)
    await queue.join()
    assert overlap == []
    await queue.stop()


async def test_retry_runs_again_after_its_delay_and_a_failure_backs_off() -> None:
    runs: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def handler(key: Hashable) -> None:
        runs.append((str(key), loop.time() - start))
        count = sum(1 for k, _ in runs if k == key)
        if key == "wait" and count == 1:
            raise Retry("not yet", delay=0.05)
        if key == "broken" and count <= 2:
            raise RuntimeError("boom")

    queue = WorkQueue(handler, workers=2, backoff_s=0.02, max_backoff_s=0.03)
    queue.start()
    queue.add("wait")
    queue.add("broken")
    await asyncio.sleep(0.3)
    waits = [t for k, t in runs if k == "wait"]
    broken = [t for k, t in runs if k == "broken"]
    assert len(waits) == 2 and waits[1] - waits[0] >= 0.045
    assert len(broken) == 3  # two failures, each retried after its back-off
    assert broken[1] - broken[0] >= 0.015 and broken[2] - broken[1] >= 0.025
    assert queue.pending == 0
    await queue.stop()


async def test_an_earlier_add_wins_over_a_pending_retry_and_forget_cancels_it() -> None:
    runs: list[Hashable] = []

    async def handler(key: Hashable) -> None:
        runs.append(key)

    queue = WorkQueue(handler, workers=1)
    queue.start()
    queue.add("a", delay=10.0)
    assert queue.pending == 1
    queue.add("a")  # now, not in ten seconds
    await queue.join()
    assert runs == ["a"] and queue.pending == 0
    queue.add("b", delay=10.0)
    queue.forget("b")
    assert queue.pending == 0
    await queue.stop()


async def test_a_run_past_its_timeout_is_retried_not_stuck() -> None:
    runs = 0

    async def handler(key: Hashable) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            await asyncio.sleep(10)

    queue = WorkQueue(handler, workers=1, timeout_s=0.02, backoff_s=0.01)
    queue.start()
    queue.add("slow")
    await asyncio.sleep(0.2)
    assert runs == 2
    await queue.stop()


async def test_a_handler_cancelled_from_inside_is_a_failure_and_the_worker_lives_on() -> None:
    runs = 0

    async def handler(key: Hashable) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise asyncio.CancelledError  # e.g. a shared future another task cancelled

    queue = WorkQueue(handler, workers=1, backoff_s=0.01)
    queue.start()
    queue.add("a")
    await asyncio.sleep(0.1)
    assert runs == 2  # retried by the same, still living worker
    queue.add("b")
    await queue.join()
    assert runs == 3
    await queue.stop()


async def test_an_add_that_asks_no_rerun_leaves_a_running_key_to_its_run() -> None:
    """The resync's add: a function it lists while its reconcile runs is not reconciled
    a second time (a burst's applies doubled when a resync fell within it)."""
    runs, gate, queue = gated_queue()
    queue.add("a")
    await asyncio.sleep(0.01)
    queue.add("a", rerun=False)  # running: its run brings it in line
    queue.add("b", rerun=False)  # idle: runs
    await asyncio.sleep(0.01)
    gate.set()
    await queue.join()
    assert sorted(runs) == ["a", "b"]
    # Not running: a resync's add runs it as any add does.
    queue.add("a", rerun=False)
    await queue.join()
    assert sorted(runs) == ["a", "a", "b"]
    await queue.stop()
