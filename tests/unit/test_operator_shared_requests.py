"""Requests a burst of reconciles shares (``function_controller.shared``): one in flight
per key, its outcome for every caller, a cancellation that stays the caller's own."""

from __future__ import annotations

import asyncio

import pytest
from wasmop.operator.function_controller import RetryLater, shared


def test_callers_at_the_same_moment_share_one_call() -> None:
    calls = []

    async def create() -> str:
        calls.append(1)
        await asyncio.sleep(0.01)
        return "created"

    async def burst() -> list[str]:
        running: dict[str, asyncio.Future[str]] = {}
        results = await asyncio.gather(*(shared(running, "cm", create) for _ in range(16)))
        assert running == {}  # nothing left behind
        return list(results)

    assert asyncio.run(burst()) == ["created"] * 16
    assert calls == [1]


def test_each_key_and_each_later_moment_gets_its_own_call() -> None:
    calls: list[str] = []

    def start(key: str):  # type: ignore[no-untyped-def]
        async def call() -> str:
            calls.append(key)
            await asyncio.sleep(0)
            return key

        return call

    async def run() -> None:
        running: dict[str, asyncio.Future[str]] = {}
        both = await asyncio.gather(
            shared(running, "a", start("a")), shared(running, "b", start("b"))
        )
        assert both == ["a", "b"]
        assert await shared(running, "a", start("a")) == "a"  # the first one is over

    asyncio.run(run())
    assert calls == ["a", "b", "a"]


def test_a_failure_reaches_every_caller() -> None:
    async def refused() -> None:
        await asyncio.sleep(0.01)
        raise PermissionError("forbidden")

    async def run() -> list[BaseException | None]:
        running: dict[str, asyncio.Future[None]] = {}
        return await asyncio.gather(
            *(shared(running, "cm", refused) for _ in range(3)), return_exceptions=True
        )

    outcomes = asyncio.run(run())
    assert all(isinstance(o, PermissionError) for o in outcomes)


def test_the_first_callers_cancellation_is_a_retry_for_the_others() -> None:
    async def slow() -> str:
        await asyncio.sleep(10)
        return "late"

    async def run() -> None:
        running: dict[str, asyncio.Future[str]] = {}
        first = asyncio.create_task(shared(running, "cm", slow))
        await asyncio.sleep(0)
        second = asyncio.create_task(shared(running, "cm", slow))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        with pytest.raises(RetryLater):
            await second
        assert running == {}

    asyncio.run(run())
