"""Reading a module (bytes, gzip bytes, file, URL) and checking it without serving it.

`check_module()` is what the operator calls in-process to validate a module against a
runtime's features before deploying it: it reads the module, validates it with a wasmtime
engine configured like the runtime (fast: no code generation unless `compile=True`),
and applies the runtime's policy (only WASI preview 1 imports, a `_start` entry point and
an exported memory, an initial memory within the per-request cap). It returns a
`ModuleInfo` or raises a `ModuleError` whose `reason` is machine-readable.

A module is identified by the sha256 of its uncompressed wasm bytes (hex), whatever form
it arrived in, so gzip-compressed and plain copies of one module share a digest.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import wasmtime

from wasmop.runtime.config import WASM_PAGE, EngineFeatures, Limits, RuntimeConfig
from wasmop.runtime.errors import (
    CompileError,
    FetchError,
    ForbiddenImport,
    MemoryLimitExceeded,
    MissingEntrypoint,
    ModuleError,
    ModuleTooLarge,
    NotWasm,
    UnsupportedFeature,
)
from wasmop.runtime.wasi import link, wasi_linker

ModuleSource = bytes | bytearray | memoryview | str | os.PathLike[str]

WASM_MAGIC = b"\0asm"
CORE_VERSION = b"\x01\x00\x00\x00"
GZIP_MAGIC = b"\x1f\x8b"
URL_TIMEOUT_S = 30.0

# Every function WASI preview 1 defines; wasmtime's linker provides all of them. Sockets
# can only be used on preopened sockets and the runtime preopens none, and there are no
# preopened directories, so no function here reaches the network or the filesystem.
WASI_P1_FUNCTIONS = frozenset(
    [
        "args_get",
        "args_sizes_get",
        "environ_get",
        "environ_sizes_get",
        "clock_res_get",
        "clock_time_get",
        "fd_advise",
        "fd_allocate",
        "fd_close",
        "fd_datasync",
        "fd_fdstat_get",
        "fd_fdstat_set_flags",
        "fd_fdstat_set_rights",
        "fd_filestat_get",
        "fd_filestat_set_size",
        "fd_filestat_set_times",
        "fd_pread",
        "fd_prestat_get",
        "fd_prestat_dir_name",
        "fd_pwrite",
        "fd_read",
        "fd_readdir",
        "fd_renumber",
        "fd_seek",
        "fd_sync",
        "fd_tell",
        "fd_write",
        "path_create_directory",
        "path_filestat_get",
        "path_filestat_set_times",
        "path_link",
        "path_open",
        "path_readlink",
        "path_remove_directory",
        "path_rename",
        "path_symlink",
        "path_unlink_file",
        "poll_oneoff",
        "proc_exit",
        "proc_raise",
        "sched_yield",
        "random_get",
        "sock_accept",
        "sock_recv",
        "sock_send",
        "sock_shutdown",
    ]
)

_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


@dataclass(frozen=True)
class ImportInfo:
    module: str
    name: str
    kind: str

    def __str__(self) -> str:
        return f"{self.module}::{self.name}"


@dataclass(frozen=True)
class ExportInfo:
    name: str
    kind: str


@dataclass(frozen=True)
class ModuleInfo:
    """What the operator records about a module: identity, size and interface."""

    digest: str  # sha256 of the uncompressed wasm bytes, hex
    size: int  # uncompressed wasm bytes
    compressed_size: int | None  # bytes as received, when they were gzip-compressed
    imports: tuple[ImportInfo, ...]
    exports: tuple[ExportInfo, ...]
    memory_min_bytes: int
    memory_max_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["imports"] = [str(i) for i in self.imports]
        data["exports"] = [e.name for e in self.exports]
        return data


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


# --- reading ---------------------------------------------------------------------------


def _is_url(text: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text) is not None


def read_source(source: ModuleSource, max_bytes: int) -> bytes:
    """The raw bytes of a module source (still compressed, if it was)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    text = os.fspath(source)
    if isinstance(source, str) and _is_url(text):
        return _fetch_url(text, max_bytes)
    path = Path(text)
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise FetchError(f"cannot read module file {path}: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise ModuleTooLarge(f"module file {path} is larger than {max_bytes} bytes")
    return data


def _fetch_url(url: str, max_bytes: int) -> bytes:
    if not url.startswith(("http://", "https://", "file://")):
        raise FetchError(f"unsupported module URL scheme: {url} (use http, https or file)")
    request = urllib.request.Request(url, headers={"User-Agent": "wasmop-runtime"})
    try:
        with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response:
            data = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"fetching {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"fetching {url} failed: {reason}") from exc
    if len(data) > max_bytes:
        raise ModuleTooLarge(f"module at {url} is larger than {max_bytes} bytes")
    return data


def decode_module_bytes(raw: bytes, max_bytes: int) -> tuple[bytes, int | None]:
    """Uncompress gzip (detected by magic) and check the wasm header.

    Returns (wasm bytes, compressed size or None). Decompression stops at `max_bytes`, so
    a small gzip bomb cannot exhaust memory.
    """
    compressed_size: int | None = None
    if raw[:2] == GZIP_MAGIC:
        compressed_size = len(raw)
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(raw, max_bytes + 1)
        except zlib.error as exc:
            raise NotWasm(f"gzip-compressed module is corrupt: {exc}") from exc
        if len(data) > max_bytes:
            raise ModuleTooLarge(f"module is larger than {max_bytes} bytes once uncompressed")
        if not inflater.eof:
            raise NotWasm("gzip-compressed module is truncated")
        raw = data
    if len(raw) > max_bytes:
        raise ModuleTooLarge(f"module is {len(raw)} bytes; the limit is {max_bytes}")
    if raw[:4] != WASM_MAGIC:
        hint = ""
        if raw.lstrip()[:7] == b"(module":
            hint = " (it looks like WebAssembly text; compile it to binary first)"
        elif raw[:4] == b"\x7fELF":
            hint = " (it is a native ELF executable)"
        raise NotWasm(
            f"not a WebAssembly module: expected the magic bytes \\0asm, got {raw[:4]!r}{hint}",
            size=len(raw),
        )
    version = raw[4:8]
    if version != CORE_VERSION:
        if len(version) == 4 and version[2:] == b"\x01\x00":
            raise UnsupportedFeature(
                "this is a WebAssembly component; the runtime runs WASI preview 1 core modules",
                feature="component-model",
            )
        raise NotWasm(f"not a WebAssembly module: unknown binary version {version!r}")
    return raw, compressed_size


def digest_of(wasm: bytes) -> str:
    return hashlib.sha256(wasm).hexdigest()


# --- a minimal reader for the import, memory and export sections ------------------------


class _Reader:
    """Just enough of the binary format to list imports, memories and exports."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise ValueError("unexpected end of section")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uleb(self) -> int:
        result = shift = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ValueError("LEB128 integer too long")

    def name(self) -> str:
        length = self.uleb()
        if self.pos + length > self.end:
            raise ValueError("name runs past the section")
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def limits(self) -> tuple[int, int | None, bool]:
        flags = self.byte()
        minimum = self.uleb()
        maximum = self.uleb() if flags & 0x01 else None
        if flags & 0x08:  # custom page size: log2 of the page size follows
            self.uleb()
        return minimum, maximum, bool(flags & 0x04)

    def reftype(self) -> None:
        code = self.byte()
        if code in (0x63, 0x64):  # (ref null? heaptype): heaptype is an s33
            self.uleb()

    def sections(self) -> Iterator[tuple[int, _Reader]]:
        self.pos = 8
        while self.pos < self.end:
            section_id = self.byte()
            size = self.uleb()
            start = self.pos
            if start + size > self.end:
                raise ValueError("section runs past the end of the module")
            self.pos = start + size
            yield section_id, _Reader(self.data, start, start + size)


@dataclass
class _Parsed:
    imports: list[ImportInfo]
    exports: list[ExportInfo]
    memory_min_pages: int
    memory_max_pages: int | None


def parse_interface(wasm: bytes) -> _Parsed:
    """Imports, exports and the first memory's limits, straight from the binary.

    Only called after wasmtime has validated the module, so malformed input here is a
    bug in this reader rather than in the module; callers fall back to compiling.
    """
    imports: list[ImportInfo] = []
    exports: list[ExportInfo] = []
    memories: list[tuple[int, int | None]] = []
    for section_id, reader in _Reader(wasm).sections():
        if section_id == 2:
            for _ in range(reader.uleb()):
                module, name = reader.name(), reader.name()
                kind = reader.byte()
                if kind == 0:
                    reader.uleb()
                elif kind == 1:
                    reader.reftype()
                    reader.limits()
                elif kind == 2:
                    minimum, maximum, _ = reader.limits()
                    memories.append((minimum, maximum))
                elif kind == 3:
                    valtype = reader.byte()
                    if valtype in (0x63, 0x64):
                        reader.uleb()
                    reader.byte()
                elif kind == 4:
                    reader.byte()
                    reader.uleb()
                else:
                    raise ValueError(f"unknown import kind {kind}")
                imports.append(ImportInfo(module, name, _KINDS[kind]))
        elif section_id == 5:
            for _ in range(reader.uleb()):
                minimum, maximum, _ = reader.limits()
                memories.append((minimum, maximum))
        elif section_id == 7:
            for _ in range(reader.uleb()):
                name = reader.name()
                kind = reader.byte()
                reader.uleb()
                exports.append(ExportInfo(name, _KINDS.get(kind, f"kind{kind}")))
    minimum, maximum = memories[0] if memories else (0, None)
    return _Parsed(imports, exports, minimum, maximum)


def interface_from_module(module: wasmtime.Module) -> _Parsed:
    """The same facts from a compiled module (the fallback, and the authority)."""
    kinds = {
        wasmtime.FuncType: "func",
        wasmtime.TableType: "table",
        wasmtime.MemoryType: "memory",
        wasmtime.GlobalType: "global",
    }
    imports = [
        ImportInfo(i.module, i.name or "", kinds.get(type(i.type), "tag")) for i in module.imports
    ]
    exports = [ExportInfo(e.name, kinds.get(type(e.type), "tag")) for e in module.exports]
    memory_types = [i.type for i in module.imports if isinstance(i.type, wasmtime.MemoryType)]
    memory_types += [e.type for e in module.exports if isinstance(e.type, wasmtime.MemoryType)]
    if memory_types:
        limits = memory_types[0].limits
        return _Parsed(imports, exports, limits.min, limits.max)
    return _Parsed(imports, exports, 0, None)


# --- policy ----------------------------------------------------------------------------


_FEATURE_ERROR = re.compile(
    r"(?P<feature>[A-Za-z0-9 _-]+?) (?:support|proposal) (?:is )?not enabled", re.IGNORECASE
)


def classify_compile_error(exc: Exception) -> CompileError:
    """Turn wasmtime's multi-line error into CompileError or UnsupportedFeature."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # The last "Caused by" line is the specific one: "...: bulk memory support is not enabled".
    last = re.sub(r"^\d+:\s*", "", lines[-1]) if lines else text
    match = _FEATURE_ERROR.search(text)
    if match:
        feature = match.group("feature").strip().split(":")[-1].strip().lower()
        feature = feature.replace(" ", "-")
        return UnsupportedFeature(
            f"the module uses {feature}, which this runtime's engine does not enable ({last})",
            feature=feature,
        )
    return CompileError(f"wasmtime cannot compile the module: {last}")


def check_policy(
    parsed: _Parsed,
    config: RuntimeConfig,
    limits: Limits | None,
) -> None:
    """Imports, entry point and initial memory; raises the first violation found."""
    forbidden = [
        imp
        for imp in parsed.imports
        if imp.module not in config.allowed_import_modules
        or imp.kind != "func"
        or imp.name not in WASI_P1_FUNCTIONS
    ]
    if forbidden:
        shown = ", ".join(f"{imp} ({imp.kind})" for imp in forbidden[:5])
        more = f" and {len(forbidden) - 5} more" if len(forbidden) > 5 else ""
        raise ForbiddenImport(
            f"the module imports {shown}{more}, which this runtime does not provide; "
            "only WASI preview 1 functions (wasi_snapshot_preview1) are linked",
            imports=[str(imp) for imp in forbidden],
        )
    exports = {e.name: e.kind for e in parsed.exports}
    if exports.get("_start") != "func":
        raise MissingEntrypoint(
            "the module exports no `_start` function; build it as a WASI command "
            "(a program with main), not a library or reactor"
        )
    if exports.get("memory") != "memory":
        raise MissingEntrypoint("the module exports no `memory`, which WASI needs")
    minimum = parsed.memory_min_pages * WASM_PAGE
    if limits is not None and minimum > limits.memory_bytes:
        raise MemoryLimitExceeded(
            f"the module's initial memory ({minimum} bytes) exceeds the per-request "
            f"memory limit ({limits.memory_bytes} bytes)",
            memory_min_bytes=minimum,
            memory_limit_bytes=limits.memory_bytes,
        )


# --- engines ---------------------------------------------------------------------------


def build_engine(config: RuntimeConfig) -> wasmtime.Engine:
    """A wasmtime Engine for a runtime config (features, epochs, fuel, optimisation)."""
    wasm_config = wasmtime.Config()
    features = config.features
    # Order matters to wasmtime's checks: relaxed SIMD off before SIMD off.
    wasm_config.wasm_relaxed_simd = features.relaxed_simd
    wasm_config.wasm_simd = features.simd
    wasm_config.wasm_bulk_memory = features.bulk_memory
    wasm_config.wasm_reference_types = features.reference_types
    wasm_config.wasm_multi_value = features.multi_value
    wasm_config.wasm_threads = features.threads
    wasm_config.wasm_tail_call = features.tail_call
    wasm_config.wasm_multi_memory = features.multi_memory
    wasm_config.wasm_memory64 = features.memory64
    wasm_config.epoch_interruption = True
    wasm_config.consume_fuel = config.consume_fuel
    wasm_config.cranelift_opt_level = config.cranelift_opt_level
    return wasmtime.Engine(wasm_config)


_ENGINES: dict[RuntimeConfig, wasmtime.Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _shared_engine(config: RuntimeConfig) -> wasmtime.Engine:
    """Validation-only engines, one per config, kept for repeated checks."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(config)
        if engine is None:
            engine = _ENGINES[config] = build_engine(config)
        return engine


def inspect(
    wasm: bytes,
    engine: wasmtime.Engine,
    config: RuntimeConfig,
    limits: Limits | None,
    compressed_size: int | None,
    module: wasmtime.Module | None = None,
) -> ModuleInfo:
    """Validate (unless already compiled), read the interface and apply the policy."""
    if module is None:
        try:
            wasmtime.Module.validate(engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise classify_compile_error(exc) from exc
        try:
            parsed = parse_interface(wasm)
        except (ValueError, KeyError, IndexError):
            try:
                parsed = interface_from_module(wasmtime.Module(engine, wasm))
            except wasmtime.WasmtimeError as exc:
                raise classify_compile_error(exc) from exc
    else:
        parsed = interface_from_module(module)
    check_policy(parsed, config, limits)
    return ModuleInfo(
        digest=digest_of(wasm),
        size=len(wasm),
        compressed_size=compressed_size,
        imports=tuple(parsed.imports),
        exports=tuple(parsed.exports),
        memory_min_bytes=parsed.memory_min_pages * WASM_PAGE,
        memory_max_bytes=None
        if parsed.memory_max_pages is None
        else parsed.memory_max_pages * WASM_PAGE,
    )


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
    wasm, compressed_size = decode_module_bytes(raw, config.max_module_bytes)
    engine = _shared_engine(config)
    info = inspect(wasm, engine, config, limits, compressed_size)
    if compile:
        link_check(engine, wasm)
    return info


def link_check(engine: wasmtime.Engine, wasm: bytes) -> None:
    """Compile and resolve the imports against WASI (catches wrong import signatures)."""
    try:
        module = wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        raise classify_compile_error(exc) from exc
    link(wasi_linker(engine), module)


__all__ = [
    "CompiledModule",
    "ExportInfo",
    "ImportInfo",
    "ModuleError",
    "ModuleInfo",
    "ModuleSource",
    "check_module",
    "decode_module_bytes",
    "read_source",
]
