"""The epoch ticker: every request's CPU bound, the enforcer of its output caps, and
the demoter of long requests.

One daemon thread per engine advances the engine's epoch every tick while any request
runs, so a Store's epoch deadline (in ticks) bounds how long its wasm may run; that is
much cheaper than fuel. On each tick it also checks the output capture of every running
request against its caps, and lowers the scheduling priority of the thread of any
request that has run longer than `DEMOTE_AFTER_S` (nice `DEMOTED_NICE`): many tenants
share one process and its cores, so a request that burns CPU for seconds must not slow
the millisecond requests of others (a node's short functions keep their latency while
a neighbour loops). The thread gets its priority back when the request ends.

Short requests escape that rule however much they add up to: a function that keeps
several requests of a few milliseconds each running at once (an output flood answered
within a tick, a trap loop) takes cores from everyone while no single request lasts 10 ms.
So the ticker also keeps each function's CPU load (`LoadMeter`: CPU seconds of its
requests, decayed over `LOAD_TAU_S`); a request of a function whose load exceeds
`HEAVY_LOAD` cores, while other functions run too, runs demoted from its first
instruction, and no more than `function.DEMOTED_CONCURRENCY` of its requests run at
once (the rest wait in its queue). Without contention a demoted thread runs as fast as
any; with it, functions within their core go first. Nice alone was not enough: four
threads of an output flood writing at nice 10 still kept a neighbour's thread waiting
on the run queue (the kernel's fair share gives nice 10 a tenth, times four threads).

Both rules act within a few ticks: a request is demoted at the first tick after one tick
of running, and a function that starts keeping two cores busy is heavy after about 15 ms
(`LOAD_TAU_S` 50 ms, `HEAVY_LOAD` half a core: at one core, four flood threads on a
loaded two-core machine got half a core between them and were heavy a seventh of the
time). With a quarter second and 20 ms, a flood of short requests ran
at full priority for its first 170 ms and a looping request for 20-30 ms, which in a
second of a neighbour's requests is more than its slowest percent.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from dataclasses import dataclass

import wasmtime

from wasmop.runtime.wasi import OutputCapture

log = logging.getLogger("wasmop.runtime")

DEMOTE_AFTER_S = 0.01
HOT_CHECK_S = 0.001
DEMOTED_NICE = 10
LOAD_TAU_S = 0.05
HEAVY_LOAD = 0.5  # cores a function's requests keep busy on average
# A heavy function stays heavy until its load falls below this fraction of `HEAVY_LOAD`:
# held to `DEMOTED_CONCURRENCY` requests at once, a flood keeps about one core busy, and
# without the margin it would be let go and take every core again every few ticks.
HEAVY_RELEASE = 0.25
_LOADS_PRUNE_AT = 1024
_OTHER_ACTIVE = 0.001  # cores: another function counts as present above this


class LoadMeter:
    """CPU load per function: CPU seconds of its finished requests, decayed
    exponentially with time constant `tau_s`; load = decayed seconds / tau_s (cores).

    One meter serves the whole process (`PROCESS_LOADS`, every engine's ticker): a
    function on an engine of its own (another feature set, multi-memory say) is still
    beside the process's other functions. Thread-safe."""

    def __init__(self, tau_s: float = LOAD_TAU_S, heavy: float = HEAVY_LOAD) -> None:
        self.tau_s = tau_s
        self.heavy_load = heavy
        self._lock = threading.RLock()
        self._loads: dict[str, tuple[float, float]] = {}  # group -> (seconds, at)
        self._over: set[str] = set()  # groups past `heavy` and not yet below the release

    def load(self, group: str, now: float) -> float:
        with self._lock:
            seconds, at = self._loads.get(group, (0.0, now))
        return seconds * math.exp(-max(0.0, now - at) / self.tau_s) / self.tau_s

    def add(self, group: str, cpu_s: float, now: float) -> None:
        with self._lock:
            self._add(group, cpu_s, now)

    def _add(self, group: str, cpu_s: float, now: float) -> None:
        self._loads[group] = (self.load(group, now) * self.tau_s + cpu_s, now)
        if len(self._loads) > _LOADS_PRUNE_AT:  # functions come and go on a node
            for key in [k for k in self._loads if self.load(k, now) < 1e-3]:
                del self._loads[key]
                self._over.discard(key)

    def heavy(self, group: str, now: float) -> bool:
        """Over `heavy` cores while another function has run lately: demotion only
        matters between tenants, and a function alone keeps its full priority (against
        the load generator of a benchmark, say). Past `heavy` a function stays heavy
        until its load falls below `HEAVY_RELEASE` of it."""
        with self._lock:
            return self._heavy(group, now)

    def _heavy(self, group: str, now: float) -> bool:
        load = self.load(group, now)
        if load > self.heavy_load:
            self._over.add(group)
        elif load < self.heavy_load * HEAVY_RELEASE:
            self._over.discard(group)
        if group not in self._over:
            return False
        return any(k != group and self.load(k, now) > _OTHER_ACTIVE for k in self._loads)


PROCESS_LOADS = LoadMeter()


@dataclass
class _Running:
    thread_id: int  # the kernel's id of the thread running the request
    started: float
    demotable: bool  # never the event loop's own thread
    demoted: bool = False


class EpochTicker:
    """Advances the engine's epoch every `tick_s` while at least one request is running.

    Idle, it sleeps on an event, so a node agent with many idle functions wakes no one.
    """

    def __init__(self, engine: wasmtime.Engine, tick_s: float) -> None:
        self.engine = engine
        self.tick_s = tick_s
        self._lock = threading.Lock()
        self._active = 0
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._captures: dict[int, OutputCapture] = {}
        self._running: dict[int, _Running] = {}
        self.loads = PROCESS_LOADS

    def deadline_ticks(self, timeout_s: float) -> int:
        # +1: the first tick can come at any time within the current interval.
        return max(1, int(-(-timeout_s // self.tick_s)) + 1)

    def enter(
        self, capture: OutputCapture | None = None, demotable: bool = True, group: str = ""
    ) -> None:
        """A request starts on this thread; `group` names its function for the load
        rule (a heavy function's request starts demoted)."""
        now = time.monotonic()
        with self._lock:
            self._active += 1
            demote = False
            if capture is not None:
                demote = demotable and bool(group) and self.loads.heavy(group, now)
                self._captures[id(capture)] = capture
                self._running[id(capture)] = _Running(
                    threading.get_native_id(), now, demotable, demoted=demote
                )
            self._start_thread()
            self._wake.set()
        if demote:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DEMOTED_NICE)

    def exit(
        self, capture: OutputCapture | None = None, group: str = "", cpu_s: float = 0.0
    ) -> None:
        """The request ends; `cpu_s` (its thread's CPU time) counts to `group`'s load."""
        with self._lock:
            self._active -= 1
            running = None
            if capture is not None:
                self._captures.pop(id(capture), None)
                running = self._running.pop(id(capture), None)
            if group:
                self.loads.add(group, cpu_s, time.monotonic())
            if self._active == 0:
                self._wake.clear()
        if running is not None and running.demoted:
            # Back to normal for the thread's next request (needs CAP_SYS_NICE; without
            # it the thread stays demoted, which only slows its own function).
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, running.thread_id, 0)

    def start(self) -> None:
        """Start the ticking thread now (it inherits this thread's priority), idle."""
        with self._lock:
            self._start_thread()

    def _start_thread(self) -> None:
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._run, name="wasmop-epoch", daemon=True)
            self._thread.start()

    def heavy(self, group: str) -> bool:
        """Whether `group`'s requests start demoted now (any thread may ask)."""
        with self._lock:
            return self.loads.heavy(group, time.monotonic())

    def interrupt_all(self, ticks: int) -> None:
        """Advance the epoch past every deadline: every running request traps now."""
        for _ in range(ticks):
            self.engine.increment_epoch()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._wake.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    def _run(self) -> None:
        """Tick on a fixed schedule: a late wake-up (a loaded machine sleeps longer than
        asked) advances the epoch by every tick that has passed, so deadlines follow the
        wall clock rather than drifting behind it."""
        next_at: float | None = None
        hot: list[OutputCapture] = []
        while True:
            if not self._wake.is_set():
                next_at = None  # idle: the schedule starts afresh when a request comes
            self._wake.wait()
            if self._stopped:
                return
            now = time.monotonic()
            if next_at is None:
                next_at = now + self.tick_s
            while next_at > now:
                if not hot:
                    time.sleep(next_at - now)
                else:  # an output near its cap: check it every millisecond until the tick
                    time.sleep(min(HOT_CHECK_S, next_at - now))
                    hot = self._check_captures(list(hot))
                now = time.monotonic()
            due = 1 + max(0, int((now - next_at) // self.tick_s))
            for _ in range(due):
                self.engine.increment_epoch()
            next_at += due * self.tick_s
            hot = self._check_captures(list(self._captures.values()))
            self._demote_long_requests(now)

    @staticmethod
    def _check_captures(captures: list[OutputCapture]) -> list[OutputCapture]:
        """Enforce output caps; the captures near their cap."""
        hot = []
        for capture in captures:
            try:
                if capture.check():
                    hot.append(capture)
            except OSError as exc:  # pragma: no cover - fd trouble must not stop ticking
                log.warning("output check failed: %s", exc)
        return hot

    def _demote_long_requests(self, now: float) -> None:
        with self._lock:
            due = [
                r
                for r in self._running.values()
                if r.demotable and not r.demoted and now - r.started >= DEMOTE_AFTER_S
            ]
            for running in due:
                running.demoted = True
        for running in due:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, running.thread_id, DEMOTED_NICE)
