"""A heavy function's requests in a worker process of their own, at the lowest priority.

Beside a hostile module that runs flat out (a trap loop, a memory bomb, an output flood),
demotion and the one-request cap were not enough: hello's p99 in the same process stayed
5-9x its idle p99 on a quiet machine, its slow requests waiting in the HTTP layer on the
event loop's thread, not in wasm (docs/security.md). In another process the heavy
function's Python work holds no GIL and no address-space lock that the node's other
tenants need, and at nice 19 the scheduler gives its thread only what they leave.

A `Function` gets an `IsolatedWorker` when its runtime isolates heavy functions; the
worker process starts when the function is first judged heavy and serves its requests
one at a time once ready, with the same limits, deadline, output cap and statuses (it runs
the same `Function` code on a copy of the compiled module sent over its pipe, so no
compile happens again). A request that overruns its deadline by the grace period gets
its 504 and the worker is killed; the next heavy request starts another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from wasmop.runtime.abi import Request
from wasmop.runtime.config import FunctionConfig, RuntimeConfig
from wasmop.runtime.loader import ModuleInfo

log = logging.getLogger("wasmop.runtime")

ISOLATED_NICE = 19
# How long a worker process may take to start and load its module (Python, wasmtime and
# the module's deserialisation, at nice 19 on a loaded machine); then it is given up.
START_TIMEOUT_S = 30.0
# Beyond the request's own deadline and grace: the pipe's round trip.
ROUND_TRIP_MARGIN_S = 0.25
_HEADER = struct.Struct("!Q")


@dataclass
class WorkerSetup:
    """What the worker process needs to serve one function: the engine's settings, the
    function's, and the compiled module (its serialised native code)."""

    runtime_config: RuntimeConfig
    function_config: FunctionConfig
    info: ModuleInfo
    artefact: bytes


class WorkerGone(Exception):
    """The worker process ended or overran; it has been killed."""


def write_frame(stream: BinaryIO, value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    while size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    return pickle.loads(_read_exact(fd, size, deadline))


class IsolatedWorker:
    """The parent's side: starts the worker process in the background, sends it one
    request at a time, kills it when a request overruns or the function closes."""

    def __init__(self, runtime_config: RuntimeConfig, function_config: FunctionConfig) -> None:
        self._runtime_config = dataclasses.replace(
            runtime_config, cache_dir=None, isolate_heavy=False
        )
        self._function_config = dataclasses.replace(
            function_config, max_concurrency=1, inline=False
        )
        self._lock = threading.Lock()  # one request at a time
        self._state = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._starting = False
        self._closed = False
        self.ready = False
        self.starts = 0
        self.peak_rss_bytes = 0  # the largest VmHWM of any worker process it ran

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and self.ready else None

    def start(self, module: Any) -> None:
        """Start the worker process in the background (once; again after it was killed)."""
        with self._state:
            if self._starting or self.ready or self._closed:
                return
            self._starting = True
        threading.Thread(
            target=self._spawn, args=(module,), name="wasmop-isolate", daemon=True
        ).start()

    def _spawn(self, module: Any) -> None:
        process = None
        try:
            setup = WorkerSetup(
                self._runtime_config,
                self._function_config,
                module.info,
                bytes(module.module.serialize()),
            )
            process = take_spare() or _start_process()
            if _keep_spare[0]:
                keep_spare()  # for the next heavy function
            assert process.stdin is not None and process.stdout is not None
            write_frame(process.stdin, setup)
            reply = read_frame(process.stdout.fileno(), time.monotonic() + START_TIMEOUT_S)
            if reply != "ready":
                raise WorkerGone(f"unexpected reply {reply!r}")
        except Exception as exc:
            log.warning("isolated worker did not start function=%s error=%s", self.name, exc)
            if process is not None:
                self._kill(process)
            with self._state:
                self._starting = False
            return
        with self._state:
            self._starting = False
            if self._closed:
                self._kill(process)
                return
            self._process = process
            self.starts += 1
            self.ready = True
        log.info("isolated worker ready function=%s pid=%d", self.name, process.pid)

    @property
    def name(self) -> str:
        return self._function_config.name

    def execute(self, request: Request, queued_s: float, timeout_s: float) -> Any:
        """One request in the worker process: its `Response`. Raises `WorkerGone` (the
        worker is then killed) when it overran `timeout_s` or died."""
        with self._lock:
            process = self._process
            if process is None or not self.ready:
                raise WorkerGone("not running")
            assert process.stdin is not None and process.stdout is not None
            plain = dataclasses.replace(request, headers=list(request.header_items()))
            try:
                write_frame(process.stdin, (plain, queued_s))
                return read_frame(
                    process.stdout.fileno(), time.monotonic() + timeout_s + ROUND_TRIP_MARGIN_S
                )
            except (OSError, EOFError, TimeoutError, pickle.UnpicklingError) as exc:
                self._retire(process)
                raise WorkerGone(type(exc).__name__) from exc

    def _retire(self, process: subprocess.Popen[bytes]) -> None:
        with self._state:
            self.ready = False
            if self._process is process:
                self._process = None
        self._kill(process)

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        self.peak_rss_bytes = max(self.peak_rss_bytes, peak_rss_bytes(process.pid))
        with contextlib.suppress(OSError):
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def close(self) -> None:
        """Kill the worker process (its requests have ended or been given up)."""
        with self._state:
            self._closed = True
            process, self._process = self._process, None
            self.ready = False
        if process is not None:
            self._kill(process)


_spare: list[subprocess.Popen[bytes]] = []
_spare_lock = threading.Lock()
_keep_spare = [False]


def _start_process() -> subprocess.Popen[bytes]:
    """A worker process: it lowers its priority, imports the runtime, then waits for
    the function it is to serve."""
    # The main thread is niced before anything is imported (the package's import is most
    # of the start); a thread started before that keeps the normal priority, to start the
    # epoch ticker from: deadlines and the output cap must act on time at nice 19 too.
    start = (
        "import os, queue, runpy, threading; calls = queue.SimpleQueue(); "
        "threading.Thread(target=lambda: [f() for f in iter(calls.get, None)], daemon=True)"
        f".start(); os.nice({ISOLATED_NICE}); "
        "runpy.run_module('wasmop.runtime.isolated_worker', "
        "init_globals={'NORMAL_PRIORITY': calls}, run_name='__main__')"
    )
    return subprocess.Popen(
        [sys.executable, "-c", start],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        close_fds=True,
    )


def keep_spare() -> None:
    """Keep one started worker process waiting in this process from now on (a server
    calls this): a function judged heavy is then served by it within a few
    milliseconds, not after Python and wasmtime start (0.3 s or more of a core)."""
    with _spare_lock:
        _keep_spare[0] = True
        if _spare and _spare[0].poll() is None:
            return
        _spare[:] = [_start_process()]


def take_spare() -> subprocess.Popen[bytes] | None:
    with _spare_lock:
        process = _spare.pop() if _spare else None
    if process is not None and process.poll() is None:
        return process
    return None


def peak_rss_bytes(pid: int) -> int:
    """A process's peak resident memory (VmHWM), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
