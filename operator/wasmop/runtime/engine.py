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
import threading
import time
import weakref
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import wasmtime

from wasmop.runtime.config import FunctionConfig, Limits, RuntimeConfig
from wasmop.runtime.epoch import EpochTicker
from wasmop.runtime.function import Function
from wasmop.runtime.loader import (
    ACCOUNTING_REVISION,
    CompiledModule,
    ModuleInfo,
    ModuleSource,
    build_engine,
    check_limits,
    classify_compile_error,
    decode_module_bytes,
    digest_of,
    inspect,
    read_source,
    with_accounting_exports,
)
from wasmop.runtime.wasi import HostCallBounds, link, module_image_bytes, wasi_linker

log = logging.getLogger("wasmop.runtime")


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
        if cache_path is not None and cache_path.is_file():
            try:
                module = wasmtime.Module.deserialize_file(self.engine, str(cache_path))
                origin = "disk-cache"
            except wasmtime.WasmtimeError as exc:
                log.warning("ignoring unusable precompiled module %s: %s", cache_path, exc)
                cache_path.unlink(missing_ok=True)
        if module is None:
            # Policy first (cheap, and gives the clearest errors), then code generation.
            info, parsed = inspect(wasm, self.engine, self.config, None, compressed_size)
            try:
                module = wasmtime.Module(self.engine, with_accounting_exports(wasm, parsed))
            except wasmtime.WasmtimeError as exc:
                raise classify_compile_error(exc) from exc
        else:
            info, _ = inspect(wasm, self.engine, self.config, None, compressed_size, validated=True)
        pre = link(self.linker, module)
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
            image_bytes=module_image_bytes(module, len(wasm)),
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
        )
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
            }


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
