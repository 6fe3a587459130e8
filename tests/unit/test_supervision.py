"""The supervision primitive: a long-lived task that fails is restarted and said to be
down meanwhile; one that is stopped stays stopped."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from wasmop.supervision import TaskState, TaskSupervisor, register_metrics

QUICK = (0.01,)


async def until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.005)


def runs_forever(starts: list[float]):  # type: ignore[no-untyped-def]
    async def work(task: TaskState) -> None:
        starts.append(asyncio.get_running_loop().time())
        task.progress()
        await asyncio.Event().wait()

    return work


def fails_once(error: Exception, runs: list[int]):  # type: ignore[no-untyped-def]
    """Work that raises ``error`` on its first run and then runs until stopped."""

    async def work(task: TaskState) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise error
        await asyncio.Event().wait()

    return work


async def test_a_task_that_raises_is_restarted_and_the_cause_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []
    tasks = TaskSupervisor("test", backoff_s=QUICK)
    state = tasks.start("watch", fails_once(ValueError("garbled"), runs))
    await until(lambda: len(runs) == 2)
    assert state.restarts == 1 and state.running
    assert state.last_error == "ValueError: garbled"
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "task watch ValueError: garbled; restarting" in record.getMessage()
    assert record.exc_info is not None  # the traceback is in the log
    await tasks.stop()


async def test_a_task_that_returns_or_is_cancelled_from_inside_is_restarted() -> None:
    """Neither is a way for a long-lived task to end: both are restarts."""
    starts: list[float] = []
    tasks = TaskSupervisor("test", backoff_s=QUICK)
    state = tasks.start("heartbeat", runs_forever(starts))
    await until(lambda: len(starts) == 1)
    assert state.attempt is not None
    state.attempt.cancel()  # someone kills the task itself, not its supervisor
    await until(lambda: len(starts) == 2)
    assert state.last_error == "was cancelled from inside"

    async def returns(task: TaskState) -> None:
        starts.append(0.0)

    tasks.start("returns", returns)
    await until(lambda: len(starts) >= 4)
    assert tasks.tasks["returns"].last_error.startswith("returned")
    await tasks.stop()


async def test_stop_ends_the_task_for_good() -> None:
    starts: list[float] = []
    tasks = TaskSupervisor("test", backoff_s=QUICK)
    state = tasks.start("watch", runs_forever(starts))
    await until(lambda: len(starts) == 1)
    attempt = state.attempt
    await tasks.stop("watch")
    assert attempt is not None and attempt.cancelled()
    await asyncio.sleep(0.05)
    assert len(starts) == 1 and "watch" not in tasks.tasks and state.restarts == 0


async def test_stop_works_on_a_task_that_swallows_its_cancellation() -> None:
    started = asyncio.Event()

    async def stubborn(task: TaskState) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # wrong, but it must not keep the supervisor going

    tasks = TaskSupervisor("test", backoff_s=QUICK)
    state = tasks.start("stubborn", stubborn)
    await started.wait()
    await asyncio.wait_for(tasks.stop(), 1.0)
    assert not state.running and state.restarts == 0


async def test_the_back_off_grows_while_a_task_keeps_failing() -> None:
    starts: list[float] = []

    async def broken(task: TaskState) -> None:
        starts.append(asyncio.get_running_loop().time())
        raise RuntimeError("no")

    tasks = TaskSupervisor("test", backoff_s=(0.01, 0.08))
    tasks.start("broken", broken)
    await until(lambda: len(starts) >= 4)
    await tasks.stop()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.01 and gaps[1] >= 0.08 and gaps[2] >= 0.08


async def test_problems_name_tasks_down_starting_or_stale() -> None:
    gate = asyncio.Event()

    async def fails_then_waits(task: TaskState) -> None:
        if task.restarts == 0:
            raise ConnectionError("API server away")
        await gate.wait()
        task.progress()
        await asyncio.Event().wait()

    tasks = TaskSupervisor("test", backoff_s=(0.2,))
    state = tasks.start("Pod watch", fails_then_waits, needs_progress=True)
    tasks.start("probe", fails_then_waits, essential=False)
    await until(lambda: state.restarts == 1)
    assert tasks.problems() == [
        "Pod watch is down (restarts: 1) after: ConnectionError: API server away"
    ]
    await until(lambda: state.running)
    assert tasks.problems() == [
        "Pod watch is starting (restarts: 1) after: ConnectionError: API server away"
    ]
    gate.set()
    await until(lambda: not tasks.problems())
    state.stale_after_s = 0.05
    await asyncio.sleep(0.1)
    [problem] = tasks.problems()
    assert problem.startswith("Pod watch has made no progress for")
    state.progress()
    assert tasks.problems() == []
    await tasks.stop()


async def test_a_dead_supervisor_task_is_a_problem_too() -> None:
    """If the supervising task itself is killed, the task is down and says so."""
    starts: list[float] = []
    tasks = TaskSupervisor("test", backoff_s=QUICK)
    tasks.start("watch", runs_forever(starts))
    await until(lambda: len(starts) == 1)
    tasks._runners["watch"].cancel()
    await until(lambda: bool(tasks.problems()))
    assert tasks.problems() == ["watch is down (restarts: 0)"]
    await tasks.stop()


async def test_metrics_count_working_tasks_and_restarts_by_kind() -> None:
    runs: list[int] = []
    tasks = TaskSupervisor("test", backoff_s=QUICK)
    registry = CollectorRegistry()
    register_metrics(tasks, registry)
    tasks.start("probe a", fails_once(RuntimeError("once"), runs), kind="probe", essential=False)
    tasks.start("probe b", runs_forever([]), kind="probe", essential=False)
    await until(lambda: len(runs) == 2)
    text = generate_latest(registry).decode()
    assert 'wasmop_supervised_tasks_working{task="probe"} 2.0' in text
    assert 'wasmop_supervised_task_restarts_total{task="probe"} 1.0' in text
    await tasks.stop("probe a")  # a stopped task leaves its restarts on the counter
    text = generate_latest(registry).decode()
    assert 'wasmop_supervised_tasks_working{task="probe"} 1.0' in text
    assert 'wasmop_supervised_task_restarts_total{task="probe"} 1.0' in text
    await tasks.stop()


async def test_names_are_unique() -> None:
    tasks = TaskSupervisor("test")
    tasks.start("watch", runs_forever([]))
    with pytest.raises(ValueError, match="already supervised"):
        tasks.start("watch", runs_forever([]))
    await tasks.stop()
