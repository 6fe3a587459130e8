"""Supervised long-lived tasks: restarted with back-off when they fail, never dead in silence.

A watch, heartbeat or probe loop that dies quietly leaves its process looking healthy
while it has stopped doing its job: one garbled watch line once ended a node agent's Pod
watch, and the agent kept reporting Ready with nobody managing its Pods. So every
long-lived task runs under a `TaskSupervisor`. An exception, a return, or a cancellation
that did not come from the supervisor is logged with its cause and the task starts again
after a back-off. While a task is down, not yet working, or silent for longer than it may
be, the supervisor's `problems()` say so, and the process's health endpoint with them.
`register_metrics` exposes the same as Prometheus series.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wasmop.kube import Kube, WatchEvent

log = logging.getLogger(__name__)

Work = Callable[["TaskState"], Coroutine[Any, Any, None]]

# Back-off before each restart of a task that keeps failing; it starts over once the task
# has run for STABLE_AFTER_S. Short first steps: a restart is cheap, a dead watch is not.
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
STABLE_AFTER_S = 30.0
# A healthy watch hears from the API server at least once a minute: kube-apiserver sends a
# bookmark every minute (its watch cache's default) and ends each watch request here after
# WATCH_TIMEOUT_S, when it resumes. Silence for WATCH_STALE_S means the server is lost.
WATCH_TIMEOUT_S = 60
WATCH_STALE_S = 150.0


@dataclass
class TaskState:
    """One supervised task as its owner and the health checks see it.

    The task calls `progress()` when it has done useful work (a watch: listed, or heard
    from the API server); a task that ``needs_progress`` counts as working only once it
    has made progress since its latest start, and one with ``stale_after_s`` stops
    counting as working when it has been silent that long.
    """

    name: str
    kind: str  # the metric label: a probe loop per Pod shares one
    essential: bool = True  # its problems are the process's problems
    needs_progress: bool = False
    stale_after_s: float | None = None
    running: bool = False
    restarts: int = 0
    last_error: str = ""
    started_at: float = 0.0  # time.monotonic()
    last_progress: float | None = None
    attempt: asyncio.Task[Any] | None = field(default=None, repr=False)

    def progress(self) -> None:
        self.last_progress = time.monotonic()

    def problem(self, now: float | None = None) -> str | None:
        """Why this task is not doing its job right now; None when it is."""
        now = time.monotonic() if now is None else now
        cause = f" after: {self.last_error}" if self.last_error else ""
        if not self.running:
            return f"{self.name} is down (restarts: {self.restarts}){cause}"
        progressed = self.last_progress is not None and self.last_progress >= self.started_at
        if self.needs_progress and not progressed:
            return f"{self.name} is starting (restarts: {self.restarts}){cause}"
        if self.stale_after_s is not None:
            silent = now - (self.last_progress if progressed else self.started_at)  # type: ignore[operator]
            if silent > self.stale_after_s:
                return f"{self.name} has made no progress for {silent:.0f} s"
        return None


class TaskSupervisor:
    """Runs a process's long-lived tasks and knows which of them are working."""

    def __init__(
        self,
        component: str,
        *,
        backoff_s: tuple[float, ...] = RESTART_BACKOFF_S,
        stable_after_s: float = STABLE_AFTER_S,
    ) -> None:
        self.component = component
        self.backoff_s = backoff_s
        self.stable_after_s = stable_after_s
        self.tasks: dict[str, TaskState] = {}
        self.restarts: collections.Counter[str] = collections.Counter()  # by kind, ever
        self._runners: dict[str, asyncio.Task[None]] = {}

    def start(
        self,
        name: str,
        work: Work,
        *,
        kind: str | None = None,
        essential: bool = True,
        needs_progress: bool = False,
        stale_after_s: float | None = None,
    ) -> TaskState:
        """Run ``work(state)`` until `stop`, starting it again whenever it ends."""
        if name in self._runners:
            raise ValueError(f"a task named {name!r} is already supervised")
        state = TaskState(
            name,
            kind or name,
            essential=essential,
            needs_progress=needs_progress,
            stale_after_s=stale_after_s,
        )
        self.tasks[name] = state
        self._runners[name] = asyncio.create_task(self._run(state, work), name=f"supervise {name}")
        return state

    def start_watch(
        self,
        name: str,
        kube: Kube,
        path: str,
        handle: Callable[[WatchEvent], Coroutine[Any, Any, None]],
        **params: Any,
    ) -> TaskState:
        """A supervised list-and-watch of ``path`` whose events go to ``handle``. It
        counts as working once it has listed, and stops counting when stale. Its view of
        the objects outlives restarts, so a restarted watch reports what went away while
        it was down."""
        known: dict[str, dict[str, Any]] = {}

        async def watch(task: TaskState) -> None:
            async for event in kube.list_and_watch(
                path,
                known=known,
                on_progress=task.progress,
                watch_timeout_s=WATCH_TIMEOUT_S,
                **params,
            ):
                await handle(event)

        return self.start(name, watch, needs_progress=True, stale_after_s=WATCH_STALE_S)

    async def stop(self, *names: str) -> None:
        """Stop these tasks (all when none are named) and forget them."""
        chosen = names or tuple(self._runners)
        runners = [self._runners.pop(n) for n in chosen if n in self._runners]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        for name in chosen:
            self.tasks.pop(name, None)

    def problems(self) -> list[str]:
        """What keeps this process from doing its job; empty when every essential task is
        working."""
        now = time.monotonic()
        found = (s.problem(now) for s in self.tasks.values() if s.essential)
        return [p for p in found if p]

    def by_kind(self) -> Iterator[tuple[str, int, int]]:
        """(kind, tasks working, restarts ever) for each kind of task seen."""
        now = time.monotonic()
        working: collections.Counter[str] = collections.Counter()
        for state in self.tasks.values():
            working[state.kind] += state.problem(now) is None
        for kind in sorted(set(working) | set(self.restarts)):
            yield kind, working[kind], self.restarts[kind]

    async def _run(self, state: TaskState, work: Work) -> None:
        failures = 0  # in a row, for the back-off
        me = asyncio.current_task()
        assert me is not None
        try:
            while True:
                state.running, state.started_at = True, time.monotonic()
                state.attempt = asyncio.create_task(work(state), name=state.name)
                cause: BaseException | None = None
                try:
                    await state.attempt
                    reason = "returned, but it must run until stopped"
                except asyncio.CancelledError:
                    if me.cancelling():
                        raise  # stop() or the process is ending
                    reason = "was cancelled from inside"
                except Exception as exc:
                    cause, reason = exc, f"{type(exc).__name__}: {exc}"
                if me.cancelling():  # stopped while the task swallowed its cancellation
                    raise asyncio.CancelledError
                state.running = False
                if time.monotonic() - state.started_at >= self.stable_after_s:
                    failures = 0
                delay = self.backoff_s[min(failures, len(self.backoff_s) - 1)]
                failures += 1
                state.restarts += 1
                state.last_error = reason
                self.restarts[state.kind] += 1
                log.error(
                    "%s: task %s %s; restarting it in %.1f s (restart %d)",
                    self.component, state.name, reason, delay, state.restarts,
                    exc_info=cause,
                )  # fmt: skip
                await asyncio.sleep(delay)
        finally:
            state.running = False
            if state.attempt is not None and not state.attempt.done():
                state.attempt.cancel()


def register_metrics(supervisor: TaskSupervisor, registry: Any) -> None:
    """Per-kind task liveness and restart counts on a prometheus_client registry."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector

    class TaskCollector(Collector):
        def collect(self) -> Iterator[Any]:
            up = GaugeMetricFamily(
                "wasmop_supervised_tasks_working",
                "Supervised long-lived tasks of each kind that are running and making progress",
                labels=["task"],
            )
            restarts = CounterMetricFamily(
                "wasmop_supervised_task_restarts",
                "Restarts of supervised tasks after they failed, returned or were cancelled",
                labels=["task"],
            )
            for kind, working, count in supervisor.by_kind():
                up.add_metric([kind], working)
                restarts.add_metric([kind], count)
            yield up
            yield restarts

    registry.register(TaskCollector())
