"""A request's WASI context and its output capture: everything below wasmtime-py's API.

wasmtime-py offers no public way to hand WASI many arguments and environment variables
without a Python list per call, stdin bytes without a file, one export without wrapping
all of them, or a compiled module's code size. Those paths are hot (one per request) or
unavailable, so this module reaches into ``wasmtime._ffi`` for them; it is the only
module that does, so a wasmtime upgrade that moves those internals breaks here alone.

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
import threading
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._extern import wrap_extern

from wasmop.runtime.errors import ForbiddenImport

__all__ = [
    "OutputCapture",
    "c_strings",
    "instance_export",
    "link",
    "module_image_bytes",
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


# --- linking, exports and code size -------------------------------------------------------


def wasi_linker(engine: wasmtime.Engine) -> wasmtime.Linker:
    """A linker that provides WASI preview 1 and nothing else."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
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
