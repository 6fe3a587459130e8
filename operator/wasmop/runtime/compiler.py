"""Compiling untrusted modules in worker processes, each job bounded by a deadline.

Code generation is the one step whose cost a module's author controls: a few KiB of gzip
can expand to a module that takes Cranelift many seconds (and much memory) to compile.
No thread can be stopped mid-compile, so compiling happens in a pool of worker processes:
a job that passes its deadline has its worker killed (SIGKILL) and fails alone with
`CompileTimeout`, while the other workers go on with other modules. The node agents (every
Pod's module) and the operator (its compatibility check) use the same pool.

A worker validates, applies the runtime's policy, compiles (with the accounting exports,
see `loader.with_accounting_exports`) and links against WASI, then returns the module's
`ModuleInfo` and the compiled artefact (`Module.serialize()`), which the parent maps with
`Module.deserialize` for an engine built from the same `RuntimeConfig`. Workers are new
Python processes (not forks: the parent runs threads and an event loop), die with their
parent (PR_SET_PDEATHSIG), are replaced after `JOBS_PER_WORKER` jobs so memory a compile left
behind is returned, and exit after `WORKER_IDLE_EXIT_S` without work.

`check_module()` is the operator's in-process question "could a runtime with these
features serve this module?": the loader's inspection, and with `compile=True` a compile
in this pool as well.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import wasmtime

from wasmop.runtime import errors
from wasmop.runtime.config import EngineFeatures, Limits, RuntimeConfig
from wasmop.runtime.errors import CompileError, CompileTimeout, ModuleError
from wasmop.runtime.loader import (
    ModuleInfo,
    ModuleSource,
    build_engine,
    check_limits,
    classify_compile_error,
    decode_module_bytes,
    inspect,
    read_source,
    with_accounting_exports,
)
from wasmop.runtime.wasi import link, wasi_linker

log = logging.getLogger("wasmop.runtime.compiler")

JOBS_PER_WORKER = 25
# A worker with nothing to compile for this long exits (each holds some 50 MiB).
WORKER_IDLE_EXIT_S = 120.0
PR_SET_PDEATHSIG = 1
DEFAULT_WORKERS = max(2, min(4, os.cpu_count() or 2))


@dataclass(frozen=True)
class Compiled:
    """What a worker sends back: the module's facts and its compiled code."""

    info: ModuleInfo
    artefact: bytes  # Module.serialize(); empty for a check


# --- the worker side ---------------------------------------------------------------------

_ENGINES: dict[RuntimeConfig, wasmtime.Engine] = {}


def _compile(
    wasm: bytes, config: RuntimeConfig, compressed_size: int | None, keep: bool
) -> Compiled:
    engine = _ENGINES.get(config)
    if engine is None:
        engine = _ENGINES[config] = build_engine(config)
    info, parsed = inspect(wasm, engine, config, None, compressed_size)
    try:
        module = wasmtime.Module(engine, with_accounting_exports(wasm, parsed))
    except wasmtime.WasmtimeError as exc:
        raise classify_compile_error(exc) from exc
    link(wasi_linker(engine), module)  # imports with the wrong signature
    return Compiled(info=info, artefact=module.serialize() if keep else b"")


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def serve_compile_jobs(connection: Connection) -> None:
    """Serve jobs until the pipe closes: ("ok", Compiled) or ("error", reason, message)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    while True:
        try:
            if not connection.poll(WORKER_IDLE_EXIT_S):
                return  # idle: give the memory back; the pool starts another when needed
            job = connection.recv()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[Any, ...] = ("ok", _compile(*job))
        except ModuleError as exc:
            reply = ("error", type(exc).__name__, exc.message, exc.detail)
        except Exception as exc:  # a bug, not the module: say so, keep serving
            reply = ("error", "CompileError", f"compiler failure: {type(exc).__name__}: {exc}", {})
        connection.send(reply)


# --- the parent side ---------------------------------------------------------------------


class _Worker:
    """`python -m wasmop.runtime.compile_worker` on one end of a socket pair. A process of its
    own (not a multiprocessing child) so the parent's main module is never re-imported."""

    def __init__(self) -> None:
        parent, child = socket.socketpair()
        self.connection = Connection(parent.detach())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wasmop.runtime.compile_worker", str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            close_fds=True,
        )
        child.close()
        self.jobs = 0
        self.idle_since = time.monotonic()

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.connection.close()


class CompilePool:
    """Worker processes that compile modules; each job has a deadline (thread-safe)."""

    def __init__(self, workers: int = DEFAULT_WORKERS) -> None:
        self.size = workers
        self._idle: list[_Worker] = []
        self._slots = threading.Semaphore(workers)
        self._lock = threading.Lock()
        self._closed = False
        self.killed = 0  # workers killed at a deadline, for tests and metrics

    def warm_up(self) -> None:
        """Start the workers now, so the first module does not wait for them."""
        with self._lock:
            missing = self.size - len(self._idle)
        started = [_Worker() for _ in range(missing)]
        with self._lock:
            self._idle.extend(started)

    def compile(
        self,
        wasm: bytes,
        config: RuntimeConfig,
        compressed_size: int | None = None,
        *,
        keep: bool = True,
        deadline_s: float | None = None,
    ) -> Compiled:
        """Check and compile `wasm` (uncompressed) as a runtime with `config` would; raises
        the `ModuleError` the worker found, or `CompileTimeout` past the deadline."""
        deadline_s = config.compile_timeout_s if deadline_s is None else deadline_s
        with self._slots:
            worker = self._take()
            started = time.monotonic()
            try:
                worker.connection.send((wasm, config, compressed_size, keep))
                if not worker.connection.poll(deadline_s):
                    self._discard(worker, killed=True)
                    raise CompileTimeout(
                        f"compiling the module took longer than {deadline_s:g} s; "
                        "its compiler was stopped",
                        compile_timeout_s=deadline_s,
                    )
                reply = worker.connection.recv()
            except (EOFError, OSError, BrokenPipeError) as exc:
                self._discard(worker)
                raise CompileError(
                    f"the compiler process ended while compiling the module ({exc!r}); "
                    "it may have run out of memory"
                ) from exc
            self._give_back(worker)
        log.debug("compiled in a worker seconds=%.3f", time.monotonic() - started)
        if reply[0] == "ok":
            return reply[1]
        _, kind, message, detail = reply
        error_type = getattr(errors, kind, CompileError)
        if not (isinstance(error_type, type) and issubclass(error_type, ModuleError)):
            error_type = CompileError
        raise error_type(message, **detail)

    def check(self, wasm: bytes, config: RuntimeConfig, limits: Limits | None = None) -> ModuleInfo:
        """The operator's question: would a node compile this? `ModuleInfo`, or raises."""
        info = self.compile(wasm, config, keep=False).info
        if limits is not None:
            check_limits(info.memory_min_pages, info.table_min_elements, limits)
        return info

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise CompileError("the compile pool is closed")
            while self._idle:
                worker = self._idle.pop()
                # One close to its idle exit is not trusted with a job: it may be leaving.
                fresh = time.monotonic() - worker.idle_since < WORKER_IDLE_EXIT_S - 10
                if fresh and worker.alive():
                    return worker
                worker.kill()
        return _Worker()

    def _give_back(self, worker: _Worker) -> None:
        worker.jobs += 1
        worker.idle_since = time.monotonic()
        with self._lock:
            if not self._closed and worker.jobs < JOBS_PER_WORKER:
                self._idle.append(worker)
                return
        worker.kill()

    def _discard(self, worker: _Worker, killed: bool = False) -> None:
        worker.kill()
        if killed:
            with self._lock:
                self.killed += 1

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()


_POOL: CompilePool | None = None
_POOL_LOCK = threading.Lock()


def compile_pool() -> CompilePool:
    """The process's compile pool, created on first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._closed:
            _POOL = CompilePool()
        return _POOL


# --- checking a module without serving it -------------------------------------------------

_CHECK_ENGINES: dict[RuntimeConfig, wasmtime.Engine] = {}
_CHECK_ENGINES_LOCK = threading.Lock()


def _check_engine(config: RuntimeConfig) -> wasmtime.Engine:
    """Validation-only engines, one per config, kept for repeated checks."""
    with _CHECK_ENGINES_LOCK:
        engine = _CHECK_ENGINES.get(config)
        if engine is None:
            engine = _CHECK_ENGINES[config] = build_engine(config)
        return engine


def check_module(
    source: ModuleSource,
    *,
    config: RuntimeConfig | None = None,
    features: EngineFeatures | None = None,
    limits: Limits | None = None,
    compile: bool = False,
) -> ModuleInfo:
    """Check that a runtime with `config` (or just `features`) could serve this module.

    Raises a `ModuleError` subclass: NotWasm, ModuleTooLarge, FetchError, CompileError,
    UnsupportedFeature, ForbiddenImport, MissingEntrypoint or MemoryLimit. With
    `compile=True` the module is also compiled and linked against WASI (slower: about a
    second for SQLite) which additionally catches imports with the wrong signature.
    """
    if config is None:
        config = RuntimeConfig(features=features or EngineFeatures())
    elif features is not None:
        raise ValueError("pass either config or features, not both")
    raw = read_source(source, config.max_module_bytes)
    wasm, compressed_size = decode_module_bytes(
        raw, config.max_module_bytes, config.max_compression_ratio
    )
    info, _ = inspect(wasm, _check_engine(config), config, limits, compressed_size)
    if compile:
        # Code generation runs in a compile worker, under the compile deadline.
        compile_pool().compile(wasm, config, compressed_size, keep=False)
    return info
