"""One queue of work for all functions: each key at most once in it, one worker per key at
a time, retries after a delay, and a bounded number of workers.

Watch events only mark a function as needing a reconcile (:meth:`WorkQueue.add`); the
workers reconcile it from the latest object seen. A burst of events for one function is
one reconcile, a function changed while it is being reconciled is reconciled once more
afterwards, and a failure is retried after a back-off that grows per function. Nothing
here keeps a timer per function unless that function is waiting for a retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


class Retry(Exception):
    """Raised by a handler: run this key again after ``delay`` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass
class WorkQueue:
    """``handler(key)`` for each key added, by ``workers`` tasks.

    A handler that raises :class:`Retry` runs again after its delay; one that raises
    anything else runs again after ``backoff_s`` doubled per consecutive failure, at most
    ``max_backoff_s``; each run is bounded by ``timeout_s``.
    """

    handler: Callable[[Hashable], Awaitable[None]]
    workers: int = 16
    timeout_s: float = 300.0
    backoff_s: float = 3.0
    max_backoff_s: float = 60.0
    name: str = "work"
    _queue: asyncio.Queue[Hashable] = field(default_factory=asyncio.Queue, init=False)
    _queued: set[Hashable] = field(default_factory=set, init=False)
    _active: set[Hashable] = field(default_factory=set, init=False)
    _dirty: set[Hashable] = field(default_factory=set, init=False)
    _timers: dict[Hashable, asyncio.TimerHandle] = field(default_factory=dict, init=False)
    _failures: dict[Hashable, int] = field(default_factory=dict, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _idle: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    processed: int = field(default=0, init=False)

    def add(self, key: Hashable, delay: float = 0.0, *, rerun: bool = True) -> None:
        """Run ``key`` (again) now, or after ``delay`` seconds; an earlier request wins.

        ``rerun=False``: not once more after a run in progress, for a caller that asks
        only that the key be brought in line, which that run does (the resync, whose
        listing shows a function being reconciled as not reconciled yet)."""
        if not rerun and key in self._active:
            return
        if delay > 0:
            if key in self._queued or key in self._timers:
                return
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(delay, self._due, key)
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._idle.clear()
            self._queue.put_nowait(key)

    def _due(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def forget(self, key: Hashable) -> None:
        """Drop a pending retry and the failure count of a key that is gone."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)

    @property
    def pending(self) -> int:
        """Keys waiting for a worker or for their retry."""
        return len(self._queued) + len(self._timers)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._work(), name=f"{self.name}-{i}")
                for i in range(self.workers)
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def join(self) -> None:
        """Until nothing is queued or running (retries waiting on a timer excepted)."""
        if self._queued or self._active or self._dirty:
            await self._idle.wait()

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                await self._run(key)
            finally:
                self._active.discard(key)
                self.processed += 1
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)
                if not (self._queued or self._active or self._dirty):
                    self._idle.set()

    async def _run(self, key: Hashable) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.handler(key)
        except Retry as exc:
            self._failures.pop(key, None)
            self.add(key, exc.delay)
            return
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the queue is stopping
            self._fail(key, exc)  # cancelled from inside the handler: a failure like any
            return
        except Exception as exc:  # one key's failure must never stop the queue
            self._fail(key, exc)
            return
        self._failures.pop(key, None)

    def _fail(self, key: Hashable, exc: BaseException) -> None:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1))
        log.warning("%s of %s failed (retry in %.0f s): %r", self.name, key, delay, exc)
        self.add(key, delay)
