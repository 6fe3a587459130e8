"""The process-wide runtime: one wasmtime Engine, its compiled-module cache and epoch ticker.

A node agent hosts many pods in one process, so everything expensive is shared here:

- one `wasmtime.Engine` per `RuntimeConfig` (features, fuel, optimisation level);
- one WASI `Linker` and, per module, one `InstancePre` (imports resolved once), so a
  request only creates a Store and instantiates;
- compiled modules cached by sha256 digest in memory and, with `cache_dir`, precompiled
  on disk (`Module.deserialize_file` maps them in a few milliseconds where SQLite takes
  most of a second to compile; the files are mapped, so they are only ever replaced by
  rename, never edited in place);
- one epoch ticker (:mod:`wasmop.runtime.epoch`), the thread that enforces every
  request's CPU bound and output caps.

No Python code ever runs on wasmtime's own threads (output goes to memfd files, see
:mod:`wasmop.runtime.wasi`), and `Runtime.close()` (also run automatically when the
process exits normally) interrupts running requests by advancing the epoch past every
deadline and joins the worker threads before the interpreter finalises. Together these
keep shutdown clean: wasmtime-py's own stdout callbacks once aborted the interpreter at
exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import stat
import threading
import time
import weakref
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import wasmtime

from wasmop.private_file import ensure_private_dir, write_private
from wasmop.runtime.compiler import compile_pool
from wasmop.runtime.config import FunctionConfig, Limits, RuntimeConfig
from wasmop.runtime.epoch import EpochTicker
from wasmop.runtime.errors import CompileError, ModuleError, RuntimeConfigError
from wasmop.runtime.function import Function
from wasmop.runtime.loader import (
    ACCOUNTING_REVISION,
    CompiledModule,
    ModuleInfo,
    ModuleSource,
    build_engine,
    check_limits,
    decode_module_bytes,
    digest_of,
    inspect,
    read_source,
)
from wasmop.runtime.wasi import HostCallBounds, link, module_image_bytes, wasi_linker

log = logging.getLogger("wasmop.runtime")

# How long a module that failed to load is refused without trying again.
FAILED_MODULE_TTL_S = 300.0


class Runtime:
    """One engine and everything shared by the functions that run on it.

    Thread-safe: modules may be loaded from any thread (or with `load_async` from the
    event loop), and functions run requests on their own worker threads.
    """

    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self.config = config or RuntimeConfig()
        self.engine = build_engine(self.config)
        # Host calls that wait (WASI sleeps) end at their request's deadline, or at once
        # when the runtime closes.
        self.host_calls = HostCallBounds()
        self.linker = wasi_linker(self.engine, self.host_calls)
        self.ticker = EpochTicker(self.engine, self.config.epoch_tick_s)
        self._modules: dict[str, CompiledModule] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._functions: weakref.WeakSet[Function] = weakref.WeakSet()
        # Functions serving each digest; a module nothing serves for `evict_after_s` is
        # dropped from memory and from the disk cache.
        self._users: dict[str, int] = {}
        self._idle_since: dict[str, float] = {}
        # Modules that failed recently: a Pod retrying a compile bomb fails at once.
        self._failed: dict[str, tuple[float, ModuleError]] = {}
        self._closed = False
        self.compiles = 0
        self.disk_hits = 0
        self.memory_hits = 0
        self.evictions = 0
        if self.config.cache_dir is not None:
            try:
                ensure_private_dir(Path(self.config.cache_dir))
            except PermissionError as exc:
                raise RuntimeConfigError(f"unsafe module cache directory: {exc}") from exc
            for leftover in Path(self.config.cache_dir).glob("*.partial"):
                leftover.unlink(missing_ok=True)
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
        wasm, compressed_size = decode_module_bytes(
            raw, self.config.max_module_bytes, self.config.max_compression_ratio
        )
        digest = digest_of(wasm)
        self._raise_if_failed_recently(digest)
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
                    except ModuleError as exc:
                        with self._lock:
                            self._failed[digest] = (time.monotonic(), exc)
                        raise
                    finally:
                        with self._lock:
                            self._loading.pop(digest, None)
                    with self._lock:
                        self._modules[digest] = cached
        if limits is not None:
            self._check_limits(cached, limits)
        if not origin_hit:
            return cached
        return self._memory_hit(cached, started)

    def load_cached(self, digest: str) -> CompiledModule | None:
        """The compiled module with this sha256 if this runtime holds it, else None: a Pod
        that pins its module's digest starts from here without its bytes being read."""
        started = time.perf_counter()
        cached = self.cached(digest)
        return None if cached is None else self._memory_hit(cached, started)

    def _memory_hit(self, cached: CompiledModule, started: float) -> CompiledModule:
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
        """Like `compiler.check_module(..., compile=True)`, but the compiled result is kept."""
        return self.load(source, limits).info

    def _raise_if_failed_recently(self, digest: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key, (when, _) in list(self._failed.items()):
                if now - when > FAILED_MODULE_TTL_S:
                    del self._failed[key]
            failure = self._failed.get(digest)
        if failure is not None:
            error = failure[1]
            raise type(error)(error.message, **error.detail)

    def cached(self, digest: str) -> CompiledModule | None:
        with self._lock:
            return self._modules.get(digest)

    def evict(self, digest: str) -> bool:
        """Forget a compiled module, in memory and on disk (functions already using it
        keep working)."""
        with self._lock:
            found = self._modules.pop(digest, None) is not None
            self._idle_since.pop(digest, None)
            if found:
                self.evictions += 1
        path = self._cache_path(digest)
        if path is not None:
            path.unlink(missing_ok=True)
        return found

    def _function_closed(self, digest: str) -> None:
        """A function stopped serving `digest`: once none has for `evict_after_s`, the
        compiled module goes (its Pods are gone; a new one would map it again quickly
        from the disk cache until then)."""
        with self._lock:
            users = self._users.get(digest, 0) - 1
            if users > 0:
                self._users[digest] = users
                return
            self._users.pop(digest, None)
            self._idle_since[digest] = time.monotonic()
        delay = self.config.evict_after_s
        if delay <= 0:
            self._sweep()
            return
        timer = threading.Timer(delay + 0.05, self._sweep)
        timer.daemon = True
        timer.start()

    def _sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [
                digest
                for digest, since in self._idle_since.items()
                if now - since >= self.config.evict_after_s and digest not in self._users
            ]
        for digest in due:
            self.evict(digest)
            log.info("module evicted digest=%s (no function serves it)", digest[:12])

    def _check_limits(self, compiled: CompiledModule, limits: Limits) -> None:
        check_limits(compiled.info.memory_min_pages, compiled.info.table_min_elements, limits)

    def _cache_path(self, digest: str) -> Path | None:
        if self.config.cache_dir is None:
            return None
        key = f"{wasmtime_version()}|{self.config.fingerprint()}|{ACCOUNTING_REVISION}"
        flavour = hashlib.sha256(key.encode()).hexdigest()[:16]
        return Path(self.config.cache_dir) / f"{digest}-{flavour}.cwasm"

    def _compile(
        self, wasm: bytes, digest: str, compressed_size: int | None, started: float
    ) -> CompiledModule:
        cache_path = self._cache_path(digest)
        module: wasmtime.Module | None = None
        origin = "compiled"
        if cache_path is not None and _own_regular_file(cache_path):
            try:
                module = wasmtime.Module.deserialize_file(self.engine, str(cache_path))
                origin = "disk-cache"
            except wasmtime.WasmtimeError as exc:
                log.warning("ignoring unusable precompiled module %s: %s", cache_path, exc)
                cache_path.unlink(missing_ok=True)
        artefact = b""
        if module is None:
            # Checked and compiled in a worker process under the compile deadline; what
            # comes back is mapped into this process's engine.
            compiled = compile_pool().compile(wasm, self.config, compressed_size)
            info, artefact = compiled.info, compiled.artefact
            try:
                module = wasmtime.Module.deserialize(self.engine, artefact)
            except wasmtime.WasmtimeError as exc:
                raise CompileError(f"cannot load the compiled module: {exc}") from exc
        else:
            info, _ = inspect(wasm, self.engine, self.config, None, compressed_size, validated=True)
        pre = link(self.linker, module)
        if origin == "compiled":
            with self._lock:
                self.compiles += 1
            if cache_path is not None:
                self._store_precompiled(artefact, cache_path)
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
            image_bytes=module_image_bytes(module, len(wasm)),
        )

    def adopt(self, info: ModuleInfo, artefact: bytes) -> CompiledModule:
        """A module another runtime with the same settings compiled and checked (its
        `serialize()` output): an isolated worker's copy of its parent's module."""
        started = time.perf_counter()
        module = wasmtime.Module.deserialize(self.engine, artefact)
        compiled = CompiledModule(
            info=info,
            module=module,
            pre=link(self.linker, module),
            origin="memory-cache",
            load_seconds=time.perf_counter() - started,
            image_bytes=module_image_bytes(module, info.size),
        )
        with self._lock:
            self._modules[info.digest] = compiled
        return compiled

    def _store_precompiled(self, artefact: bytes, path: Path) -> None:
        try:
            write_private(path, artefact)  # 0600, renamed into place: never half a file
        except OSError as exc:
            log.warning("cannot write precompiled module %s: %s", path, exc)

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
        if config is None:
            settings.setdefault("name", "fn")
            config = FunctionConfig(**settings)
        elif settings:
            raise TypeError("pass either config or settings, not both")
        if not isinstance(module, CompiledModule):
            module = self.load(module, config.limits)
        else:
            self._check_limits(module, config.limits)
        function = Function(
            module,
            config,
            engine=self.engine,
            ticker=self.ticker,
            host_calls=self.host_calls,
            consume_fuel=self.config.consume_fuel,
            on_close=self._function_closed,
            isolation=self.config if self.config.isolate_heavy else None,
        )
        with self._lock:
            self._users[module.digest] = self._users.get(module.digest, 0) + 1
            self._idle_since.pop(module.digest, None)
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
        self.host_calls.wake.set()  # sleeping host calls return now
        # Every deadline is at most this many ticks away; passing them all traps every
        # running instance at its next loop head or call; sleeping host calls were woken
        # above, so joining below waits only for instances to reach such a point.
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
                "evictions": self.evictions,
            }


def _own_regular_file(path: Path) -> bool:
    """A cache entry is used only if it is a regular file (not a link) of this user that
    no one else may write: mapping it runs its code."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        log.warning("ignoring precompiled module %s: not a private file of this user", path)
        return False
    return True


@functools.cache
def wasmtime_version() -> str:
    """The wasmtime package's version: part of the precompiled-module cache key."""
    try:
        return version("wasmtime")
    except PackageNotFoundError:  # pragma: no cover - metadata missing in odd installs
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
