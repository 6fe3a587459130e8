"""A function: one compiled module served with its own limits, grants and concurrency.

Each request runs in a fresh instance created from the module's `InstancePre` in a new
`Store` with a memory cap, an epoch deadline (the CPU bound), capped stdout, the CGI
environment and nothing else (no preopened directories or sockets, none of the host's
environment). A request can therefore only fail itself: a trap, a timeout, a memory bomb
or an output flood ends that request with the status in `abi.FAULT_STATUS`.

Requests run on the function's own worker threads (`max_concurrency` of them): wasmtime
releases the GIL while wasm runs, so functions and requests run in parallel, and a slow
function cannot take threads from another. Beyond `max_concurrency`, up to `max_queue`
requests wait in FIFO order; more get 503 queue-full. A function the ticker judges
heavy beside others runs at most `DEMOTED_CONCURRENCY` requests at once. A request that
is alone in the process skips the thread hop and runs on the event loop's thread within a
small budget (`Function._run_inline`), which roughly halves the latency of short functions.

Live figures for kubelet-style resource metrics are plain attributes and methods:
`cpu_seconds()`, `memory_bytes()`, `in_flight`, `queued` and `stats` (request counts,
duration histogram, instantiation time), read by `wasmop.runtime.metrics` and by node
agents directly.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import re
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

import wasmtime

from wasmop.runtime.abi import (
    BadResponse,
    Fault,
    Request,
    cgi_environ,
    fault_body,
    fault_headers,
    parse_cgi_output,
)
from wasmop.runtime.config import MIB, FunctionConfig, RuntimeConfig
from wasmop.runtime.epoch import EpochTicker
from wasmop.runtime.isolation import IsolatedWorker, WorkerGone
from wasmop.runtime.loader import CompiledModule, StoreLimits
from wasmop.runtime.wasi import (
    HostCallBounds,
    OutputCapture,
    c_strings,
    instance_export,
    release_memory_pages,
    wasi_config,
)

log = logging.getLogger("wasmop.runtime")

# Upper bounds of the request duration histogram, in seconds.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
# Fuel per request when the runtime consumes fuel and the function sets none.
DEFAULT_FUEL = 10_000_000_000
# How much longer than its CPU bound a request may take before the server answers 504
# anyway: only reached when wasm is blocked in a host call (a long WASI sleep), which an
# epoch deadline cannot interrupt.
DEADLINE_GRACE_S = 0.25
STDERR_IN_BODY = 1024
# What wasmtime stores per table element (a pointer), for the memory figures.
TABLE_ELEMENT_BYTES = 8
# The inline budget in epoch ticks: between one and two ticks (10-20 ms by default); one
# tick alone would interrupt a short request whenever a tick happens to fall inside it.
INLINE_TICKS = 2
# After a request overran the inline budget, the function uses worker threads this long.
INLINE_COOLDOWN_S = 10.0
# After an output overflow, the function's requests have stdout checked every millisecond
# (not every tick) this long: a flood then writes about a millisecond past its cap.
OUTPUT_WATCH_S = 10.0
# How many requests of a heavy function (one whose requests keep more than a core busy
# while other functions run: `epoch.LoadMeter.heavy`) run at once; the rest wait in its
# queue, and beyond `max_queue` get 503 queue-full. Demotion alone lowers each thread's
# priority, but a function's threads add up: this bounds its share of the cores.
DEMOTED_CONCURRENCY = 1
# What a request the runtime ended with a fault (a trap, an error, a non-zero exit: the
# memory cap ends a C program so) counts to its function's load at least: tearing down a
# trapped instance (its backtrace, its memories' pages) costs the process more than the
# request's own CPU time shows. A trap loop of 0.3 ms requests, 700 a second, kept
# hello's p99 5x its idle p99 without ever reaching `HEAVY_LOAD` by CPU time; at this
# charge it is heavy within a few dozen requests, and a function that traps once a
# second adds a hundredth of a core.
FAULT_CHARGE_S = 0.01
# WASI calls that can block the calling thread for long (sleeps, waits on clocks); a module
# importing one never runs on the event loop's thread.
_BLOCKING_IMPORTS = frozenset({"poll_oneoff"})
# Invocations in progress in this process (all functions, all servers): the inline path is
# only taken when a request is alone, so concurrent requests still use several cores.
_ACTIVE_INVOCATIONS = [0]


def _charged_cpu_s(cpu_s: float, faulted: bool) -> float:
    """The CPU time a request counts to its function's load (`FAULT_CHARGE_S`)."""
    return max(cpu_s, FAULT_CHARGE_S) if faulted else cpu_s


def trap_message(trap: wasmtime.Trap) -> str:
    """The cause of a trap ("wasm trap: integer divide by zero"), without the backtrace."""
    lines = [line.strip() for line in str(trap).strip().splitlines() if line.strip()]
    if "Caused by:" in lines:
        causes = lines[lines.index("Caused by:") + 1 :]
        if causes:
            return re.sub(r"^\d+:\s*", "", causes[-1])
    return lines[0] if lines else "trap"


class _Draining(Exception):
    """Set on queued requests' waiters when the function closes."""


@dataclass
class InvokeStats:
    """What one request cost."""

    queue_s: float = 0.0  # waiting for a concurrency slot
    instantiate_s: float = 0.0  # Store + instance from the InstancePre
    wasm_s: float = 0.0  # wall time running `_start`
    cpu_s: float = 0.0  # thread CPU time of instantiate + `_start`
    # All linear memories and tables at the end (they never shrink: the request's peak).
    memory_bytes: int = 0
    at_limit: str | None = None  # which memory or table ended at its cap, if one did
    host_call_cut: bool = False  # a host call (a sleep) was cut short at the deadline
    output_bytes: int = 0
    overflow_bytes: int = 0  # stdout written when the cap cut it (0: not cut)
    exit_code: int | None = None
    trap: str | None = None  # the trap's cause, e.g. "wasm trap: interrupt"
    trap_code: str | None = None  # wasmtime.TrapCode name, e.g. "INTERRUPT"


@dataclass
class Response:
    """A function's HTTP response; `fault` is set when the runtime ended the request."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    fault: Fault | None = None
    stats: InvokeStats = field(default_factory=InvokeStats)
    stderr: bytes = b""

    @property
    def reason(self) -> str | None:
        return self.fault.value if self.fault else None

    def header(self, name: str, default: str | None = None) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), default)


class FunctionStats:
    """Cumulative counters of one function, safe to read from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: collections.Counter[tuple[int, str]] = collections.Counter()
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)  # last one is +Inf
        self.duration_sum = 0.0
        self.duration_count = 0
        self.instantiate_sum = 0.0
        self.instantiate_count = 0
        self.cpu_seconds = 0.0
        self.peak_memory_bytes = 0
        self.inline_runs = 0  # requests served on the event loop's thread
        self.inline_overruns = 0  # inline attempts abandoned for a worker thread
        self.isolated_runs = 0  # requests served by the isolated worker process

    def record_request(self, status: int, reason: str, seconds: float) -> None:
        with self.lock:
            self.requests[(status, reason)] += 1
            self.duration_buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1
            self.duration_sum += seconds
            self.duration_count += 1

    def record_execution(self, stats: InvokeStats, instantiated: bool) -> None:
        with self.lock:
            self.cpu_seconds += stats.cpu_s
            if instantiated:
                self.instantiate_sum += stats.instantiate_s
                self.instantiate_count += 1
            self.peak_memory_bytes = max(self.peak_memory_bytes, stats.memory_bytes)

    def total(self) -> int:
        with self.lock:
            return sum(self.requests.values())

    def snapshot(self) -> dict[str, object]:
        with self.lock:
            return {
                "requests": {f"{s} {r}": n for (s, r), n in sorted(self.requests.items())},
                "duration_sum": self.duration_sum,
                "duration_count": self.duration_count,
                "instantiate_sum": self.instantiate_sum,
                "instantiate_count": self.instantiate_count,
                "cpu_seconds": self.cpu_seconds,
                "peak_memory_bytes": self.peak_memory_bytes,
                "inline_runs": self.inline_runs,
                "inline_overruns": self.inline_overruns,
                "isolated_runs": self.isolated_runs,
            }


class Function:
    """A servable function. Create through `Runtime.function(...)`."""

    def __init__(
        self,
        module: CompiledModule,
        config: FunctionConfig,
        *,
        engine: wasmtime.Engine,
        ticker: EpochTicker,
        consume_fuel: bool,
        host_calls: HostCallBounds | None = None,
        on_close: Callable[[str], None] | None = None,
        isolation: RuntimeConfig | None = None,
    ) -> None:
        self.engine = engine
        self.ticker = ticker
        self.host_calls = host_calls or HostCallBounds()
        self._on_close = on_close
        self.module = module
        self.config = config
        self.name = config.name
        self.stats = FunctionStats()
        self._limits = config.limits
        self._ticks = ticker.deadline_ticks(config.limits.timeout_s)
        self._argv = (1, c_strings([config.name]))
        self._granted = dict(config.env)
        self._fuel = (config.limits.fuel or DEFAULT_FUEL) if consume_fuel else None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        # Event-loop side (only touched from the loop that serves the function).
        self._running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # Thread side: executions in progress and their current linear memory.
        self._active = 0
        self._idle = threading.Condition()
        self._live_memory: dict[int, int] = {}
        info = module.info
        self._store_limits = StoreLimits.of(
            len(info.memory_min_pages), len(info.table_min_elements), config.limits
        )
        self._accounting = module.accounting_exports
        self._closing = False
        self._inline = config.inline and not any(
            imp.name in _BLOCKING_IMPORTS for imp in module.info.imports
        )
        self._inline_cooldown_until = 0.0
        self._output_watch_until = 0.0  # until then, stdout is checked every millisecond
        # While heavy, requests run in a worker process of their own (`isolation`).
        self.isolated = IsolatedWorker(isolation, config) if isolation is not None else None

    # -- live figures

    @property
    def digest(self) -> str:
        return self.module.digest

    @property
    def in_flight(self) -> int:
        """Requests holding a concurrency slot (running, or abandoned but still running)."""
        return self._running

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def ready(self) -> bool:
        return not self._closing

    def admits(self) -> tuple[Fault, str] | None:
        """Why a request arriving now would be refused without running, if it would be:
        checked before its body is read, so a refusal costs no upload."""
        if self._closing:
            return Fault.DRAINING, "the function is shutting down"
        if (self._running >= self._slot_limit() or self._waiters) and len(
            self._waiters
        ) >= self.config.max_queue:
            return Fault.QUEUE_FULL, self._queue_full_message()
        return None

    def _slot_limit(self) -> int:
        """Requests that may run at once now: fewer while the function is heavy."""
        limit = self.config.max_concurrency
        if limit > DEMOTED_CONCURRENCY and self.ticker.heavy(self.name):
            return DEMOTED_CONCURRENCY
        return limit

    def _queue_full_message(self) -> str:
        return (
            f"{self._running} requests running and {len(self._waiters)} queued "
            f"(limits {self._slot_limit()} and {self.config.max_queue})"
        )

    def cpu_seconds(self) -> float:
        """Cumulative thread CPU time spent instantiating and running this function's wasm."""
        with self.stats.lock:
            return self.stats.cpu_seconds

    def memory_bytes(self) -> int:
        """Current memory: compiled code image plus the memories and tables of running
        instances.

        They are sampled when an instance starts; wasm memory only grows, so this can lag
        behind a request that is growing right now.
        """
        return self.module.image_bytes + sum(list(self._live_memory.values()))

    # -- invoking

    def invoke_sync(self, request: Request) -> Response:
        """Run one request in the calling thread (no concurrency limit, no queue)."""
        started = time.perf_counter()
        if self._closing:
            response = self._fault(Fault.DRAINING, "the function is shutting down")
        elif len(request.body) > self._limits.body_bytes:
            response = self._fault(
                Fault.BODY_TOO_LARGE,
                f"request body exceeds {self._limits.body_bytes} bytes",
            )
        else:
            response = self._execute(request, 0.0)
        self._record(response, time.perf_counter() - started)
        return response

    def reject(self, fault: Fault, message: str) -> Response:
        """A fault decided outside the function (e.g. by the HTTP layer), counted as a request."""
        response = self._fault(fault, message)
        self._record(response, 0.0)
        return response

    async def invoke(self, request: Request) -> Response:
        """Run one request within the concurrency limit and queue (see `_run_inline`)."""
        started = time.perf_counter()
        _ACTIVE_INVOCATIONS[0] += 1
        try:
            response = await self._invoke(request, started)
        finally:
            _ACTIVE_INVOCATIONS[0] -= 1
        self._record(response, time.perf_counter() - started)
        return response

    async def _invoke(self, request: Request, started: float) -> Response:
        if self._closing:
            return self._fault(Fault.DRAINING, "the function is shutting down")
        limits = self._limits
        if len(request.body) > limits.body_bytes:
            return self._fault(
                Fault.BODY_TOO_LARGE, f"request body exceeds {limits.body_bytes} bytes"
            )
        loop = asyncio.get_running_loop()
        if self._running >= self._slot_limit() or self._waiters:
            if len(self._waiters) >= self.config.max_queue:
                return self._fault(Fault.QUEUE_FULL, self._queue_full_message())
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(self.config.queue_timeout_s):
                    await waiter
            except _Draining:
                return self._fault(Fault.DRAINING, "the function is shutting down")
            except (TimeoutError, asyncio.CancelledError) as exc:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._release()  # the slot was handed over just as we gave up
                else:
                    waiter.cancel()
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return self._fault(
                    Fault.QUEUE_TIMEOUT,
                    f"no free slot within {self.config.queue_timeout_s} s",
                )
        else:
            self._running += 1
            if self._may_run_inline():
                response = self._run_inline(request)
                if response is not None:
                    self._release()
                    return response
        # A slot is held from here; it is released when the worker thread finishes, even if
        # this coroutine is cancelled or gives up waiting first.
        queued_s = time.perf_counter() - started
        try:
            future = loop.run_in_executor(self._worker_pool(), self._run, request, queued_s)
        except RuntimeError:  # executor shut down by close() in the meantime
            self._release()
            return self._fault(Fault.DRAINING, "the function is shutting down")
        future.add_done_callback(self._release_done)
        done, _ = await asyncio.wait({future}, timeout=limits.timeout_s + DEADLINE_GRACE_S)
        if not done:
            return self._fault(
                Fault.TIMEOUT,
                f"no response within {limits.timeout_s} s (blocked in a host call)",
            )
        try:
            return future.result()
        except Exception:
            log.exception("runtime error function=%s", self.name)
            return self._fault(Fault.INTERNAL, "internal runtime error")

    def _may_run_inline(self) -> bool:
        """Whether this request may try the fast path on the event loop's own thread."""
        return (
            self._inline
            and _ACTIVE_INVOCATIONS[0] == 1  # nothing else in this process is being served
            and time.monotonic() >= self._inline_cooldown_until
        )

    def _run_inline(self, request: Request) -> Response | None:
        """Run on the calling (event loop) thread with a CPU budget of `INLINE_TICKS`.

        Saves the two thread wake-ups of the worker path, which on a virtual machine cost
        more than running hello itself. A request that overruns the budget is abandoned
        and run again on a worker with its full limits: a fresh instance with only stdin,
        stdout and clocks has no side effects to repeat. The function then stays on the
        worker path for a while, so a slow function blocks the loop at most once a
        cool-down, for at most two ticks.
        """
        if self._ticks <= INLINE_TICKS:
            response = self._execute(request, 0.0)  # the budget is the function's whole bound
        else:
            response = self._execute(request, 0.0, ticks=INLINE_TICKS)
            if response.fault is Fault.TIMEOUT and response.stats.trap_code == "INTERRUPT":
                self._inline_cooldown_until = time.monotonic() + INLINE_COOLDOWN_S
                with self.stats.lock:
                    self.stats.inline_overruns += 1
                return None
        if self._costly_inline(response):
            # Answered, but the loop was held too long, or the runtime ended the request:
            # workers for a while, as after an overrun. An output flood ends by its cap
            # (checked at a tick), not by the CPU bound, and would otherwise hold the loop
            # on every request; a function that keeps faulting (a trap loop) would run
            # every other request of its own on the loop, and its neighbours wait there.
            self._inline_cooldown_until = time.monotonic() + INLINE_COOLDOWN_S
            with self.stats.lock:
                self.stats.inline_overruns += 1
        with self.stats.lock:
            self.stats.inline_runs += 1
        return response

    def _costly_inline(self, response: Response) -> bool:
        """An inline request that the runtime ended (a trap, the memory cap, the output
        cap, a timeout: the function misbehaves and likely will again) or that took a
        tick of CPU time."""
        stats = response.stats
        return response.fault is not None or (
            stats is not None and stats.cpu_s >= self.ticker.tick_s
        )

    def _release_done(self, future: asyncio.Future[Response]) -> None:
        if not future.cancelled():
            future.exception()  # mark retrieved; _invoke reports it
        self._release()

    def _release(self) -> None:
        """A slot is free: hand it to the first waiter, unless the function runs more
        than it may now (it became heavy), in which case the slot goes. While a request
        runs a later release hands over, so waiters are never stranded."""
        while self._waiters and self._running <= self._slot_limit():
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # hand the slot over without freeing it
                return
        self._running -= 1

    def _worker_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                if self._closing:
                    raise RuntimeError("function is closed")
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.config.max_concurrency,
                    thread_name_prefix=f"wasm-{self.name}",
                )
            return self._executor

    # -- one request in a fresh instance (any thread)

    def _run(self, request: Request, queued_s: float) -> Response:
        """A worker thread's request: in the isolated worker process while the function
        is heavy and that process is ready (it starts at the first heavy request), here
        otherwise."""
        worker = self.isolated
        if worker is not None and self.ticker.heavy(self.name):
            if worker.ready:
                response = self._execute_isolated(worker, request, queued_s)
                if response is not None:
                    return response
            worker.start(self.module)
        return self._execute(request, queued_s)

    def _execute_isolated(
        self, worker: IsolatedWorker, request: Request, queued_s: float
    ) -> Response | None:
        """One request in the worker process; its CPU time counts to this function's
        load here, so the function stays heavy while it keeps the worker busy. None if
        the worker was not running after all."""
        with self._idle:
            self._active += 1
        self.ticker.enter(None, group=self.name)
        cpu_s = 0.0
        try:
            response: Response = worker.execute(
                request, queued_s, self._limits.timeout_s + DEADLINE_GRACE_S
            )
            cpu_s = _charged_cpu_s(response.stats.cpu_s, response.fault is not None)
        except WorkerGone as exc:
            if str(exc) == "not running":
                return None
            log.warning("isolated worker killed function=%s cause=%s", self.name, exc)
            return self._fault(
                Fault.TIMEOUT,
                f"no response within {self._limits.timeout_s} s (its worker was killed)",
            )
        finally:
            self.ticker.exit(None, group=self.name, cpu_s=cpu_s)
            with self._idle:
                self._active -= 1
                if self._active == 0:
                    self._idle.notify_all()
        stats = response.stats
        self.stats.record_execution(stats, stats.instantiate_s > 0)
        with self.stats.lock:
            self.stats.isolated_runs += 1
        if stats.overflow_bytes:
            self._output_watch_until = time.monotonic() + OUTPUT_WATCH_S
        return response

    def _execute(self, request: Request, queued_s: float, ticks: int | None = None) -> Response:
        limits = self._limits
        stats = InvokeStats(queue_s=queued_s)
        env = cgi_environ(
            request, function=self.name, digest=self.module.digest, granted=self._granted
        )
        capture = OutputCapture(
            limits.output_bytes,
            limits.stderr_bytes,
            close_watch=time.monotonic() < self._output_watch_until,
        )
        ticker = self.ticker
        store: wasmtime.Store | None = None
        accounted: list[wasmtime.Memory | wasmtime.Table] = []
        trap: wasmtime.Trap | None = None
        error: wasmtime.WasmtimeError | None = None
        instantiated = False
        key = id(capture)
        with self._idle:
            self._active += 1
        # An inline request runs on the event loop's thread, which is never demoted.
        ticker.enter(capture, demotable=ticks is None, group=self.name)
        self.host_calls.enter(time.monotonic() + limits.timeout_s)
        cpu_start = time.thread_time()
        t_start = t_instance = time.perf_counter()
        try:
            store = wasmtime.Store(self.engine)
            store.set_wasi(wasi_config(self._argv, env, request.body, capture))
            self._store_limits.apply(store)
            store.set_epoch_deadline(self._ticks if ticks is None else ticks)
            if self._fuel is not None:
                store.set_fuel(self._fuel)
            instance = self.module.pre.instantiate(store)
            instantiated = True
            t_instance = time.perf_counter()
            memories, tables = self._accounting
            for name in (*memories, *tables):
                item = instance_export(instance, store, name)
                if isinstance(item, wasmtime.Memory | wasmtime.Table):
                    accounted.append(item)
            self._live_memory[key] = self._footprint(accounted, store)[0]
            start = instance_export(instance, store, b"_start")
            assert isinstance(start, wasmtime.Func)
            try:
                start(store)
                stats.exit_code = 0
            except wasmtime.ExitTrap as exc:
                stats.exit_code = exc.code
        except wasmtime.Trap as exc:
            trap = exc
        except wasmtime.WasmtimeError as exc:
            error = exc
        finally:
            t_end = time.perf_counter()
            stats.cpu_s = time.thread_time() - cpu_start
            faulted = trap is not None or error is not None or bool(stats.exit_code)
            ticker.exit(capture, group=self.name, cpu_s=_charged_cpu_s(stats.cpu_s, faulted))
            stats.host_call_cut = self.host_calls.leave()
            if instantiated:
                stats.instantiate_s = t_instance - t_start
                stats.wasm_s = t_end - t_instance
            else:
                stats.instantiate_s = t_end - t_start
            if accounted and store is not None:
                stats.memory_bytes, stats.at_limit = self._footprint(accounted, store)
                release_memory_pages(accounted, store)
            self._live_memory.pop(key, None)
            if store is not None:
                store.close()
            stdout, stderr = capture.finish()
            with self._idle:
                self._active -= 1
                if self._active == 0:
                    self._idle.notify_all()
        stats.output_bytes = len(stdout)
        self.stats.record_execution(stats, instantiated)
        if capture.overflowed:
            stats.overflow_bytes = capture.overflow_bytes
            self._output_watch_until = time.monotonic() + OUTPUT_WATCH_S
        response = self._classify(stats, stdout, capture.overflowed, stderr, trap, error)
        response.stats = stats
        return response

    def _footprint(
        self, accounted: list[wasmtime.Memory | wasmtime.Table], store: wasmtime.Store
    ) -> tuple[int, str | None]:
        """Bytes of all memories and tables, and the first one at (or near) its cap.

        A memory counts as at its cap within 1/8 of its share (at least 1 MiB): a C
        program's allocator asks for more than one page at a time, so its last, failed
        growth usually stops short of the exact cap.
        """
        shares = self._store_limits
        total = 0
        at_limit: str | None = None
        memory_index = table_index = 0
        for item in accounted:
            if isinstance(item, wasmtime.Memory):
                size = item.data_len(store)
                total += size
                share = shares.memory_size
                if at_limit is None and size >= share - max(share // 8, MIB):
                    which = f"memory {memory_index}" if shares.memories > 1 else "linear memory"
                    at_limit = f"{which} reached {size} of its {share}-byte share"
                memory_index += 1
            else:
                elements = item.size(store)
                total += elements * TABLE_ELEMENT_BYTES
                share = shares.table_elements
                if at_limit is None and elements >= share - max(share // 8, 1):
                    at_limit = (
                        f"table {table_index} reached {elements} of its "
                        f"{shares.table_elements}-element share"
                    )
                table_index += 1
        return total, at_limit

    def _classify(
        self,
        stats: InvokeStats,
        output: bytes,
        overflowed: bool,
        stderr: bytes,
        trap: wasmtime.Trap | None,
        error: wasmtime.WasmtimeError | None,
    ) -> Response:
        limits = self._limits
        if overflowed:
            # Checked first: a flood that ignores its failed writes ends by timeout or exit,
            # but what ended it is the output cap.
            return self._fault(
                Fault.OUTPUT_TOO_LARGE,
                f"output exceeded {limits.output_bytes} bytes; further writes failed",
                stderr,
            )
        if stats.host_call_cut:
            return self._fault(
                Fault.TIMEOUT,
                f"still waiting in a host call (a sleep) at its {limits.timeout_s} s deadline",
                stderr,
            )
        if trap is not None:
            message = trap_message(trap)
            stats.trap = message
            code = trap.trap_code
            stats.trap_code = code.name if code is not None else None
            if code == wasmtime.TrapCode.INTERRUPT:
                return self._fault(
                    Fault.TIMEOUT, f"exceeded its CPU bound of {limits.timeout_s} s", stderr
                )
            if code == wasmtime.TrapCode.OUT_OF_FUEL:
                return self._fault(Fault.TIMEOUT, f"ran out of fuel ({self._fuel})", stderr)
            if stats.at_limit:
                return self._memory_fault(stats, stderr, message)
            return self._fault(Fault.TRAP, message, stderr)
        if error is not None:
            text = str(error).strip()
            if "memory" in text and ("limit" in text or "exceed" in text):
                return self._memory_fault(stats, stderr, text.splitlines()[0])
            log.warning("wasmtime error function=%s error=%s", self.name, text.splitlines()[:1])
            return self._fault(Fault.INTERNAL, text.splitlines()[0] if text else "error", stderr)
        if stats.exit_code:
            if stats.at_limit:
                return self._memory_fault(stats, stderr, f"exit status {stats.exit_code}")
            return self._fault(
                Fault.EXIT_STATUS, f"the function exited with status {stats.exit_code}", stderr
            )
        try:
            parsed = parse_cgi_output(output)
        except BadResponse as exc:
            return self._fault(Fault.BAD_RESPONSE, str(exc), stderr)
        headers = parsed.headers
        headers.append(
            (
                "Server-Timing",
                f"queue;dur={stats.queue_s * 1000:.3f}, "
                f"instantiate;dur={stats.instantiate_s * 1000:.3f}, "
                f"wasm;dur={stats.wasm_s * 1000:.3f}",
            )
        )
        return Response(parsed.status, headers, parsed.body, None, stats, stderr)

    def _memory_fault(self, stats: InvokeStats, stderr: bytes, detail: str) -> Response:
        return self._fault(
            Fault.MEMORY_LIMIT,
            f"{stats.at_limit or 'memory reached its limit'}; "
            f"{stats.memory_bytes} bytes in all, limit {self._limits.memory_bytes} bytes "
            f"and {self._limits.table_elements} table elements ({detail})",
            stderr,
        )

    def _fault(self, fault: Fault, message: str, stderr: bytes = b"") -> Response:
        tail = stderr[-STDERR_IN_BODY:].decode("utf-8", errors="replace") if stderr else None
        log.debug("request fault function=%s reason=%s message=%s", self.name, fault.value, message)
        return Response(
            fault.status,
            fault_headers(fault),
            fault_body(fault, message, stderr=tail),
            fault,
            stderr=stderr,
        )

    def _record(self, response: Response, seconds: float) -> None:
        self.stats.record_request(response.status, response.reason or "ok", seconds)

    # -- shutdown

    def begin_close(self) -> None:
        """Refuse new requests (503 draining); running ones continue."""
        self._closing = True

    def join_workers(self, timeout: float) -> bool:
        """Wait for running executions to finish, then let the worker threads go."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle.wait(remaining)
            idle = self._active == 0
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=idle, cancel_futures=True)
        if self.isolated is not None:
            self.isolated.close()
        return idle

    async def aclose(self, grace_s: float = 10.0) -> bool:
        """Drain: refuse new requests, wait up to `grace_s` for running ones, stop threads."""
        self.begin_close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(_Draining())
        idle = await asyncio.to_thread(self.join_workers, grace_s)
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self.digest)  # once: the runtime may now let the module go
        return idle

    def __repr__(self) -> str:
        return f"<Function {self.name} digest={self.digest[:12]} in_flight={self.in_flight}>"
