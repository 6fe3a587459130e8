"""The process-wide runtime: one wasmtime Engine, its compiled-module cache and epoch ticker.

A node agent hosts many pods in one process, so everything expensive is shared here:

- one `wasmtime.Engine` per `RuntimeConfig` (features, fuel, optimisation level);
- one WASI `Linker` and, per module, one `InstancePre` (imports resolved once), so a
  request only creates a Store and instantiates;
- compiled modules cached by sha256 digest in memory and, with `cache_dir`, precompiled
  on disk (`Module.deserialize_file` maps them in a few milliseconds where SQLite takes
  most of a second to compile; the files are mapped, so they are only ever replaced by
  rename, never edited in place);
- one daemon thread that advances the engine's epoch while any request runs, which is how
  every request's CPU bound is enforced (much cheaper than fuel), and that enforces the
  output caps.

No Python code ever runs on wasmtime's own threads (output goes to memfd files, see
below), and `Runtime.close()` (also run automatically when the process exits normally)
interrupts running requests by advancing the epoch past every deadline and joins the
worker threads before the interpreter finalises. Together these keep shutdown clean:
wasmtime-py's own stdout callbacks once aborted the interpreter at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import wasmtime
from wasmtime import _ffi as ffi

from wasmop.runtime.config import FunctionConfig, Limits, RuntimeConfig
from wasmop.runtime.errors import ForbiddenImport, MemoryLimitExceeded
from wasmop.runtime.loader import (
    ModuleInfo,
    ModuleSource,
    build_engine,
    classify_compile_error,
    decode_module_bytes,
    digest_of,
    inspect,
    read_source,
)

if TYPE_CHECKING:
    from wasmop.runtime.function import Function

log = logging.getLogger("wasmop.runtime")


# --- output capture --------------------------------------------------------------------
#
# A guest's stdout and stderr go to memfd files through wasmtime's own file output
# (`stdout_file` on /proc/self/fd/N): no Python code runs on wasmtime's threads, which
# makes a request about three times cheaper than a Python write callback and avoids the
# abort at exit that such callbacks can cause. The ticker thread enforces the caps while
# a request runs: once a file is over its cap it is truncated and sealed against growth,
# so every further write fails in the guest and memory stays bounded (by roughly one
# tick's worth of writes).


class OutputFile:
    """One reusable memfd. Sealed files (after an overflow) are never reused."""

    __slots__ = ("fd", "path", "sealed")

    def __init__(self) -> None:
        self.fd = os.memfd_create("wasmop-output", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        self.path = f"/proc/self/fd/{self.fd}"
        self.sealed = False

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def seal_at(self, size: int) -> None:
        """Cut the file to `size` bytes and forbid it to grow: later writes fail."""
        os.ftruncate(self.fd, size)
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)
        self.sealed = True

    def read(self, size: int) -> bytes:
        chunks, offset = [], 0
        while offset < size:
            chunk = os.pread(self.fd, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)


_POOL: list[OutputFile] = []
_POOL_LOCK = threading.Lock()
_POOL_MAX = 256


def _acquire_file() -> OutputFile:
    with _POOL_LOCK:
        if _POOL:
            return _POOL.pop()
    return OutputFile()


def _release_file(file: OutputFile, size: int) -> None:
    if not file.sealed:
        if size > 64 * 1024:
            os.ftruncate(file.fd, 0)  # give the pages back now, not at the next request
        with _POOL_LOCK:
            if len(_POOL) < _POOL_MAX:
                _POOL.append(file)
                return
    os.close(file.fd)


class OutputCapture:
    """stdout and stderr of one request, with their caps."""

    __slots__ = ("done", "err", "err_cap", "lock", "out", "out_cap", "overflowed")

    def __init__(self, out_cap: int, err_cap: int) -> None:
        self.out = _acquire_file()
        self.err = _acquire_file()
        self.out_cap = out_cap
        self.err_cap = err_cap
        self.overflowed = False
        self.done = False
        self.lock = threading.Lock()

    def check(self) -> None:
        """Enforce the caps (called by the ticker thread while the request runs)."""
        with self.lock:
            if self.done:
                return
            if not self.out.sealed and self.out.size() > self.out_cap:
                self.overflowed = True
                self.out.seal_at(0)
            if not self.err.sealed and self.err.size() > self.err_cap:
                self.err.seal_at(self.err_cap)

    def finish(self) -> tuple[bytes, bytes]:
        """The captured streams; stdout is empty when it overflowed. Releases the files."""
        with self.lock:
            self.done = True
            out_size = self.out.size()
            err_size = self.err.size()
            if out_size > self.out_cap:
                self.overflowed = True
            stdout = b"" if self.overflowed else self.out.read(out_size)
            stderr = self.err.read(min(err_size, self.err_cap)) if err_size else b""
            _release_file(self.out, out_size)
            _release_file(self.err, err_size)
        return stdout, stderr


_CHAR_PP = ctypes.POINTER(ctypes.POINTER(ctypes.c_char))


def c_strings(values: list[str]) -> Any:
    """A C array of NUL-terminated UTF-8 strings (wasmtime copies them)."""
    array = (ctypes.c_char_p * len(values))(*[v.encode() for v in values])
    return ctypes.cast(array, _CHAR_PP)


def wasi_config(
    argv: Any, env: list[tuple[str, str]], stdin: bytes, capture: OutputCapture
) -> wasmtime.WasiConfig:
    """A WASI context with no preopened directories or sockets: CGI env, stdin and capture.

    `argv` is `(count, c_strings(...))`, built once per function.
    """
    config = wasmtime.WasiConfig()
    pointer = config.ptr()
    ffi.wasi_config_set_argv(pointer, argv[0], argv[1])
    names = c_strings([name for name, _ in env])
    values = c_strings([value.replace("\0", "") for _, value in env])
    ffi.wasi_config_set_env(pointer, len(env), names, values)
    if stdin:
        vec = ffi.wasm_byte_vec_t()
        buffer = ctypes.cast(ctypes.c_char_p(stdin), ctypes.POINTER(ffi.wasm_byte_t))
        ffi.wasm_byte_vec_new(ctypes.byref(vec), len(stdin), buffer)
        ffi.wasi_config_set_stdin_bytes(pointer, ctypes.byref(vec))  # takes ownership
    config.stdout_file = capture.out.path
    config.stderr_file = capture.err.path
    return config


# --- the epoch ticker ------------------------------------------------------------------


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

    def deadline_ticks(self, timeout_s: float) -> int:
        # +1: the first tick can come at any time within the current interval.
        return max(1, int(-(-timeout_s // self.tick_s)) + 1)

    def enter(self, capture: OutputCapture | None = None) -> None:
        with self._lock:
            self._active += 1
            if capture is not None:
                self._captures[id(capture)] = capture
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="wasmop-epoch", daemon=True)
                self._thread.start()
            self._wake.set()

    def exit(self, capture: OutputCapture | None = None) -> None:
        with self._lock:
            self._active -= 1
            if capture is not None:
                self._captures.pop(id(capture), None)
            if self._active == 0:
                self._wake.clear()

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
        while True:
            self._wake.wait()
            if self._stopped:
                return
            time.sleep(self.tick_s)
            self.engine.increment_epoch()
            for capture in list(self._captures.values()):
                try:
                    capture.check()
                except OSError as exc:  # pragma: no cover - fd trouble must not stop ticking
                    log.warning("output check failed: %s", exc)


# --- compiled modules ------------------------------------------------------------------


@dataclass
class CompiledModule:
    """A checked, compiled module with its imports pre-linked; shared by all its functions."""

    info: ModuleInfo
    module: wasmtime.Module
    pre: wasmtime.InstancePre
    origin: str  # "compiled", "disk-cache" or "memory-cache" (how this load was satisfied)
    load_seconds: float
    image_bytes: int  # size of the compiled code image (what it adds to a process's memory)

    @property
    def digest(self) -> str:
        return self.info.digest


def _image_bytes(module: wasmtime.Module, fallback: int) -> int:
    start, end = ctypes.c_void_p(), ctypes.c_void_p()
    try:
        ffi.wasmtime_module_image_range(module.ptr(), ctypes.byref(start), ctypes.byref(end))
    except (AttributeError, ctypes.ArgumentError):
        return fallback
    if start.value is None or end.value is None:
        return fallback
    return max(0, end.value - start.value)


def _wasi_linker(engine: wasmtime.Engine) -> wasmtime.Linker:
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    return linker


def link_check(engine: wasmtime.Engine, wasm: bytes) -> None:
    """Compile and resolve the imports against WASI (catches wrong import signatures)."""
    try:
        module = wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        raise classify_compile_error(exc) from exc
    try:
        _wasi_linker(engine).instantiate_pre(module)
    except wasmtime.WasmtimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ForbiddenImport(f"the module's imports do not match WASI preview 1: {first}") from exc


class Runtime:
    """One engine and everything shared by the functions that run on it.

    Thread-safe: modules may be loaded from any thread (or with `load_async` from the
    event loop), and functions run requests on their own worker threads.
    """

    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self.config = config or RuntimeConfig()
        self.engine = build_engine(self.config)
        self.linker = _wasi_linker(self.engine)
        self.ticker = EpochTicker(self.engine, self.config.epoch_tick_s)
        self._modules: dict[str, CompiledModule] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._functions: weakref.WeakSet[Function] = weakref.WeakSet()
        self._closed = False
        self.compiles = 0
        self.disk_hits = 0
        self.memory_hits = 0
        if self.config.cache_dir is not None:
            Path(self.config.cache_dir).mkdir(parents=True, exist_ok=True)
        _register_for_exit(self)

    # -- loading

    def load(self, source: ModuleSource, limits: Limits | None = None) -> CompiledModule:
        """Read, check and compile a module (bytes, gzip bytes, path or URL), cached by digest.

        Raises a `ModuleError` (see `wasmop.runtime.errors`) for anything unservable; a
        bad module never leaves anything behind in the cache.
        """
        if self._closed:
            raise RuntimeError("runtime is closed")
        started = time.perf_counter()
        raw = read_source(source, self.config.max_module_bytes)
        wasm, compressed_size = decode_module_bytes(raw, self.config.max_module_bytes)
        digest = digest_of(wasm)
        with self._lock:
            cached = self._modules.get(digest)
            lock = self._loading.setdefault(digest, threading.Lock())
        origin_hit = cached is not None
        if cached is None:
            # One compile per digest even when several pods of a module start at once.
            with lock:
                with self._lock:
                    cached = self._modules.get(digest)
                origin_hit = cached is not None
                if cached is None:
                    try:
                        cached = self._compile(wasm, digest, compressed_size, started)
                    finally:
                        with self._lock:
                            self._loading.pop(digest, None)
                    with self._lock:
                        self._modules[digest] = cached
        if limits is not None:
            self._check_limits(cached, limits)
        if not origin_hit:
            return cached
        with self._lock:
            self.memory_hits += 1
        return CompiledModule(
            info=cached.info,
            module=cached.module,
            pre=cached.pre,
            origin="memory-cache",
            load_seconds=time.perf_counter() - started,
            image_bytes=cached.image_bytes,
        )

    async def load_async(
        self, source: ModuleSource, limits: Limits | None = None
    ) -> CompiledModule:
        """`load` on a worker thread, so compiling never blocks the event loop."""
        return await asyncio.to_thread(self.load, source, limits)

    def check(self, source: ModuleSource, limits: Limits | None = None) -> ModuleInfo:
        """Like `loader.check_module(..., compile=True)`, but the compiled result is kept."""
        return self.load(source, limits).info

    def cached(self, digest: str) -> CompiledModule | None:
        with self._lock:
            return self._modules.get(digest)

    def evict(self, digest: str) -> bool:
        """Forget a compiled module (functions already using it keep working)."""
        with self._lock:
            return self._modules.pop(digest, None) is not None

    def _check_limits(self, compiled: CompiledModule, limits: Limits) -> None:
        minimum = compiled.info.memory_min_bytes
        if minimum > limits.memory_bytes:
            raise MemoryLimitExceeded(
                f"the module's initial memory ({minimum} bytes) exceeds the per-request "
                f"memory limit ({limits.memory_bytes} bytes)",
                memory_min_bytes=minimum,
                memory_limit_bytes=limits.memory_bytes,
            )

    def _cache_path(self, digest: str) -> Path | None:
        if self.config.cache_dir is None:
            return None
        flavour = hashlib.sha256(
            f"{wasmtime_version()}|{self.config.fingerprint()}".encode()
        ).hexdigest()[:16]
        return Path(self.config.cache_dir) / f"{digest}-{flavour}.cwasm"

    def _compile(
        self, wasm: bytes, digest: str, compressed_size: int | None, started: float
    ) -> CompiledModule:
        cache_path = self._cache_path(digest)
        module: wasmtime.Module | None = None
        origin = "compiled"
        if cache_path is not None and cache_path.is_file():
            try:
                module = wasmtime.Module.deserialize_file(self.engine, str(cache_path))
                origin = "disk-cache"
            except wasmtime.WasmtimeError as exc:
                log.warning("ignoring unusable precompiled module %s: %s", cache_path, exc)
                cache_path.unlink(missing_ok=True)
        if module is None:
            # Policy first (cheap, and gives the clearest errors), then code generation.
            inspect(wasm, self.engine, self.config, None, compressed_size)
            try:
                module = wasmtime.Module(self.engine, wasm)
            except wasmtime.WasmtimeError as exc:
                raise classify_compile_error(exc) from exc
        info = inspect(wasm, self.engine, self.config, None, compressed_size, module=module)
        try:
            pre = self.linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ForbiddenImport(
                f"the module's imports do not match WASI preview 1: {first}"
            ) from exc
        if origin == "compiled":
            with self._lock:
                self.compiles += 1
            if cache_path is not None:
                self._store_precompiled(module, cache_path)
        else:
            with self._lock:
                self.disk_hits += 1
        seconds = time.perf_counter() - started
        log.info(
            "module loaded digest=%s size=%d origin=%s seconds=%.3f",
            digest[:12],
            len(wasm),
            origin,
            seconds,
        )
        return CompiledModule(
            info=info,
            module=module,
            pre=pre,
            origin=origin,
            load_seconds=seconds,
            image_bytes=_image_bytes(module, len(wasm)),
        )

    def _store_precompiled(self, module: wasmtime.Module, path: Path) -> None:
        partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
        try:
            partial.write_bytes(module.serialize())
            partial.replace(path)  # atomic: readers never see half a file
        except OSError as exc:
            log.warning("cannot write precompiled module %s: %s", path, exc)
            partial.unlink(missing_ok=True)

    # -- functions

    def function(
        self,
        module: CompiledModule | ModuleSource,
        config: FunctionConfig | None = None,
        **settings: Any,
    ) -> Function:
        """A servable function: a compiled module plus limits, env grants and concurrency.

        `module` may be a `CompiledModule` or anything `load` accepts; `settings` are
        `FunctionConfig` fields used when `config` is not given (name defaults to "fn").
        """
        from wasmop.runtime.function import Function

        if config is None:
            settings.setdefault("name", "fn")
            config = FunctionConfig(**settings)
        elif settings:
            raise TypeError("pass either config or settings, not both")
        if not isinstance(module, CompiledModule):
            module = self.load(module, config.limits)
        else:
            self._check_limits(module, config.limits)
        function = Function(self, module, config)
        self._functions.add(function)
        return function

    def functions(self) -> list[Function]:
        return list(self._functions)

    # -- shutdown

    def close(self, timeout: float = 10.0) -> None:
        """Interrupt running requests, join worker threads, stop the ticker. Idempotent."""
        if self._closed:
            return
        self._closed = True
        functions = list(self._functions)
        for function in functions:
            function.begin_close()
        # Every deadline is at most this many ticks away; passing them all traps every
        # running instance at its next loop head or call. Host calls (a WASI sleep) finish
        # first, so joining below can still take as long as the longest sleep.
        longest = max((f.config.limits.timeout_s for f in functions), default=0.0)
        self.ticker.interrupt_all(self.ticker.deadline_ticks(longest) + 1)
        deadline = time.monotonic() + timeout
        for function in functions:
            function.join_workers(max(0.0, deadline - time.monotonic()))
        self.ticker.stop()
        _unregister_for_exit(self)

    async def aclose(self, grace_s: float = 10.0) -> None:
        """`close` on a worker thread, for use from the event loop."""
        await asyncio.to_thread(self.close, grace_s)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "modules": len(self._modules),
                "compiles": self.compiles,
                "disk_hits": self.disk_hits,
                "memory_hits": self.memory_hits,
            }


@functools.cache
def wasmtime_version() -> str:
    try:
        from importlib.metadata import version

        return version("wasmtime")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return "unknown"


# --- process exit ----------------------------------------------------------------------
#
# threading._register_atexit hooks run at the start of interpreter shutdown, before
# non-daemon threads are joined and long before finalisation; the executor's own hook
# (which joins its workers) runs after ours, so running requests are interrupted first.

_LIVE: weakref.WeakSet[Runtime] = weakref.WeakSet()
_EXIT_HOOK_INSTALLED = False
_EXIT_LOCK = threading.Lock()


def _close_all_at_exit() -> None:
    for runtime in list(_LIVE):
        with contextlib.suppress(Exception):
            runtime.close(timeout=5.0)


def _register_for_exit(runtime: Runtime) -> None:
    global _EXIT_HOOK_INSTALLED
    with _EXIT_LOCK:
        _LIVE.add(runtime)
        if not _EXIT_HOOK_INSTALLED:
            register = getattr(threading, "_register_atexit", None)
            if register is not None:
                register(_close_all_at_exit)
            else:  # pragma: no cover - every supported Python has it
                import atexit

                atexit.register(_close_all_at_exit)
            _EXIT_HOOK_INSTALLED = True


def _unregister_for_exit(runtime: Runtime) -> None:
    with _EXIT_LOCK:
        _LIVE.discard(runtime)


_DEFAULT: Runtime | None = None


def default_runtime() -> Runtime:
    """A process-wide runtime with the default config, created on first use."""
    global _DEFAULT
    with _EXIT_LOCK:
        if _DEFAULT is None or _DEFAULT._closed:
            _DEFAULT = Runtime()
        return _DEFAULT
