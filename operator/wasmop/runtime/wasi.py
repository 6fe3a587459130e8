"""A request's WASI context and its output capture: everything below wasmtime-py's API.

wasmtime-py offers no public way to hand WASI many arguments and environment variables
without a Python list per call, stdin bytes without a file, one export without wrapping
all of them, or a compiled module's code size. Those paths are hot (one per request) or
unavailable, so this module reaches into ``wasmtime._ffi`` for them; it is the only
module that does, so a wasmtime upgrade that moves those internals breaks here alone.

Host calls: the only WASI call that can block is ``poll_oneoff`` (a sleep; there are no
sockets or files to wait on). wasmtime's own cannot be interrupted, so a module could sleep
far past its request's deadline holding a concurrency slot. The linker shadows it with
:func:`bounded_poll_oneoff`, which sleeps at most until the request's deadline and wakes
at once when the runtime closes; the epoch deadline, passed by then, ends the request.

Output capture: a guest's stdout and stderr go to memfd files through wasmtime's own
file output (``stdout_file`` on /proc/self/fd/N), so no Python code runs on wasmtime's
threads; that makes a request about three times cheaper than a Python write callback
and avoids the abort at exit such callbacks can cause. The epoch ticker enforces the
caps while a request runs (:meth:`OutputCapture.check`): a file over its cap is
truncated and sealed against growth, so every further write fails in the guest and
memory stays bounded (by roughly one tick's worth of writes).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import threading
import time
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._extern import wrap_extern

from wasmop.runtime.errors import ForbiddenImport

__all__ = [
    "HostCallBounds",
    "OutputCapture",
    "c_strings",
    "instance_export",
    "link",
    "module_image_bytes",
    "release_memory_pages",
    "wasi_config",
    "wasi_linker",
]

# --- output capture ---------------------------------------------------------------------


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

    __slots__ = (
        "close_watch", "done", "err", "err_cap", "lock", "out", "out_cap", "overflow_bytes",
        "overflowed",
    )  # fmt: skip

    def __init__(self, out_cap: int, err_cap: int, close_watch: bool = False) -> None:
        self.out = _acquire_file()
        self.err = _acquire_file()
        self.out_cap = out_cap
        self.err_cap = err_cap
        # Checked every millisecond from the start, not only past half the cap: for a
        # function that overflowed lately, whose next request likely floods again (at a
        # gigabyte a second, a tick of writing is ten times a 1 MiB cap).
        self.close_watch = close_watch
        self.overflowed = False
        self.overflow_bytes = 0  # how far stdout had got when it was cut
        self.done = False
        self.lock = threading.Lock()

    def check(self) -> bool:
        """Enforce the caps (called by the ticker thread while the request runs). True
        while stdout is past half its cap: the ticker then checks it every millisecond,
        so a module that nears its cap gradually overshoots it by a millisecond of
        writing (one that writes as fast as it can still passes it within a tick)."""
        with self.lock:
            if self.done:
                return False
            hot = False
            if not self.out.sealed:
                size = self.out.size()
                if size > self.out_cap:
                    self.overflowed = True
                    self.overflow_bytes = size
                    self.out.seal_at(0)
                else:
                    hot = self.close_watch or size > self.out_cap // 2
            if not self.err.sealed and self.err.size() > self.err_cap:
                self.err.seal_at(self.err_cap)
            return hot

    def finish(self) -> tuple[bytes, bytes]:
        """The captured streams; stdout is empty when it overflowed. Releases the files."""
        with self.lock:
            self.done = True
            out_size = self.out.size()
            err_size = self.err.size()
            if out_size > self.out_cap:
                self.overflowed = True
                self.overflow_bytes = out_size
            stdout = b"" if self.overflowed else self.out.read(out_size)
            stderr = self.err.read(min(err_size, self.err_cap)) if err_size else b""
            _release_file(self.out, out_size)
            _release_file(self.err, err_size)
        return stdout, stderr


# --- the WASI context of one request ------------------------------------------------------

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


# --- a finished request's memory ----------------------------------------------------------

# Memories smaller than this are left to the store's own unmapping.
RELEASE_PAGES_ABOVE = 1 << 20
# Released a chunk at a time: a range across several mappings (a module's data image
# beside its grown part) is released under the address-space lock, held for one chunk.
RELEASE_CHUNK = 1 << 20
_MADV_DONTNEED = 4
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.restype = ctypes.c_int


def release_memory_pages(items: list[Any], store: wasmtime.Store) -> int:
    """Give back the pages of a finished request's large memories before its store is
    dropped; the bytes released.

    Dropping a store unmaps its memories, and unmapping frees their pages under the
    process's address-space lock, which every other request's instantiation (an mmap)
    waits for: with four requests at a 64 MiB cap, another tenant's instantiation waited
    milliseconds at each. ``madvise(MADV_DONTNEED)`` frees them under that memory's own
    lock on current kernels, so the unmapping that follows has nothing left to free.
    Nothing reads the memory afterwards (the output is in its own files).
    """
    released = 0
    for item in items:
        if not isinstance(item, wasmtime.Memory):
            continue
        size = item.data_len(store)
        if size < RELEASE_PAGES_ABOVE:
            continue
        base = ctypes.cast(item.data_ptr(store), ctypes.c_void_p).value or 0
        for offset in range(0, size, RELEASE_CHUNK):
            length = min(RELEASE_CHUNK, size - offset)
            if _libc.madvise(base + offset, length, _MADV_DONTNEED) == 0:
                released += length
    return released


# --- linking, exports and code size -------------------------------------------------------


# --- bounded host calls ---------------------------------------------------------------


class HostCallBounds:
    """The deadline of the request running on this thread, for host calls that wait.

    Set by the function around each request (`enter`/`leave`); `wake` is set when the
    runtime closes, so every waiting host call returns at once.
    """

    def __init__(self) -> None:
        self.wake = threading.Event()
        self._local = threading.local()

    def enter(self, deadline: float) -> None:
        """`deadline` on time.monotonic(); the guest's monotonic clock starts now."""
        self._local.deadline = deadline
        self._local.origin_ns = time.monotonic_ns()
        self._local.cut = False

    def leave(self) -> bool:
        """End the request on this thread; True if a host call was cut short for it."""
        self._local.deadline = None
        return bool(getattr(self._local, "cut", False))

    def mark_cut(self) -> None:
        self._local.cut = True

    def current(self) -> tuple[float, int]:
        deadline = getattr(self._local, "deadline", None)
        if deadline is None:  # not inside a request (a check or a bare instantiate)
            return time.monotonic(), time.monotonic_ns()
        return deadline, self._local.origin_ns


# WASI preview 1 errno values, event types and clock ids poll_oneoff uses.
_ERRNO_SUCCESS, _ERRNO_BADF, _ERRNO_FAULT, _ERRNO_INVAL = 0, 8, 21, 28
_EVENT_CLOCK, _EVENT_FD_READ, _EVENT_FD_WRITE = 0, 1, 2
_CLOCK_REALTIME, _CLOCK_MONOTONIC = 0, 1
_ABSTIME = 1
_SUBSCRIPTION = struct.Struct("<QB7xQQQH6x")  # userdata, tag, u: (id or fd, timeout, ...)
_EVENT = struct.Struct("<QHB5xQH6x")  # userdata, error, type, nbytes, flags
_MAX_SUBSCRIPTIONS = 4096


def bounded_poll_oneoff(bounds: HostCallBounds) -> Any:
    """WASI's `poll_oneoff` (clock and stdio subscriptions) that never waits past the
    request's deadline. It never raises: a fault is an errno, as WASI defines."""

    def poll_oneoff(
        caller: wasmtime.Caller, in_ptr: int, out_ptr: int, count: int, nout: int
    ) -> int:
        try:
            return _poll(caller, bounds, in_ptr, out_ptr, count, nout)
        except Exception:  # raising here would race other threads' traps (wasmtime-py)
            return _ERRNO_FAULT

    return poll_oneoff


def _poll(
    caller: wasmtime.Caller,
    bounds: HostCallBounds,
    in_ptr: int,
    out_ptr: int,
    count: int,
    nout: int,
) -> int:
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        return _ERRNO_FAULT
    if count == 0 or count > _MAX_SUBSCRIPTIONS:
        return _ERRNO_INVAL
    size = memory.data_len(caller)
    in_end = in_ptr + count * _SUBSCRIPTION.size
    if in_end > size or out_ptr + count * _EVENT.size > size or nout + 4 > size:
        return _ERRNO_FAULT
    raw = bytes(memory.read(caller, in_ptr, in_end))
    deadline, origin_ns = bounds.current()
    ready: list[bytes] = []
    clocks: list[tuple[float, int]] = []  # (seconds to wait, userdata)
    for index in range(count):
        userdata, tag, what, timeout, _, flags = _SUBSCRIPTION.unpack_from(
            raw, index * _SUBSCRIPTION.size
        )
        if tag == _EVENT_CLOCK:
            clock = what & 0xFFFFFFFF
            if clock not in (_CLOCK_REALTIME, _CLOCK_MONOTONIC):
                ready.append(_EVENT.pack(userdata, _ERRNO_INVAL, tag, 0, 0))
                continue
            wait_ns = timeout
            if flags & _ABSTIME:
                now = (
                    time.time_ns() if clock == _CLOCK_REALTIME else time.monotonic_ns() - origin_ns
                )
                wait_ns = timeout - now
            clocks.append((max(0, wait_ns) / 1e9, userdata))
        elif tag in (_EVENT_FD_READ, _EVENT_FD_WRITE):
            fd = what & 0xFFFFFFFF
            usable = fd == 0 if tag == _EVENT_FD_READ else fd in (1, 2)
            error = _ERRNO_SUCCESS if usable else _ERRNO_BADF
            ready.append(_EVENT.pack(userdata, error, tag, 0, 0))
        else:
            return _ERRNO_INVAL
    if not ready and clocks:
        first = min(wait for wait, _ in clocks)
        allowed = min(first, max(0.0, deadline - time.monotonic()))
        if allowed > 0:
            bounds.wake.wait(allowed)
        if allowed < first or bounds.wake.is_set():
            # Cut short: the request is over (it is answered as a timeout, whatever the
            # guest does next). The guest hears that its earliest timer fired.
            bounds.mark_cut()
        ready = [_EVENT.pack(u, 0, _EVENT_CLOCK, 0, 0) for w, u in clocks if w <= first]
    else:
        ready += [_EVENT.pack(u, 0, _EVENT_CLOCK, 0, 0) for w, u in clocks if w <= 0]
    memory.write(caller, b"".join(ready), out_ptr)
    memory.write(caller, struct.pack("<I", len(ready)), nout)
    return _ERRNO_SUCCESS


def wasi_linker(engine: wasmtime.Engine, bounds: HostCallBounds | None = None) -> wasmtime.Linker:
    """A linker that provides WASI preview 1 and nothing else; with `bounds`, its
    `poll_oneoff` waits no longer than the calling request may run."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    if bounds is not None:
        linker.allow_shadowing = True
        linker.define_func(
            "wasi_snapshot_preview1",
            "poll_oneoff",
            # A new type each time: wasmtime-py hands it over to the linker.
            wasmtime.FuncType([wasmtime.ValType.i32()] * 4, [wasmtime.ValType.i32()]),
            bounded_poll_oneoff(bounds),
            access_caller=True,
        )
        linker.allow_shadowing = False
    return linker


def link(linker: wasmtime.Linker, module: wasmtime.Module) -> wasmtime.InstancePre:
    """Resolve a module's imports once; a mismatch with WASI is a ForbiddenImport."""
    try:
        return linker.instantiate_pre(module)
    except wasmtime.WasmtimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ForbiddenImport(f"the module's imports do not match WASI preview 1: {first}") from exc


_EXPORT_NAMES: dict[bytes, ctypes.Array[ctypes.c_char]] = {}


def instance_export(instance: wasmtime.Instance, store: wasmtime.Store, name: bytes) -> object:
    """One export by name, without wrapping every export of the instance first."""
    buffer = _EXPORT_NAMES.get(name)
    if buffer is None:
        buffer = _EXPORT_NAMES[name] = ctypes.create_string_buffer(name, len(name))
    item = ffi.wasmtime_extern_t()
    found = ffi.wasmtime_instance_export_get(
        store._context(), ctypes.byref(instance._instance), buffer, len(name), ctypes.byref(item)
    )
    return wrap_extern(item) if found else None


def module_image_bytes(module: wasmtime.Module, fallback: int) -> int:
    """The size of a compiled module's code image (what it adds to a process's memory)."""
    start, end = ctypes.c_void_p(), ctypes.c_void_p()
    try:
        ffi.wasmtime_module_image_range(module.ptr(), ctypes.byref(start), ctypes.byref(end))
    except (AttributeError, ctypes.ArgumentError):
        return fallback
    if start.value is None or end.value is None:
        return fallback
    return max(0, end.value - start.value)
