"""Reading a module (bytes, gzip bytes, file, URL) and inspecting it without serving it.

`inspect()` validates a module with a wasmtime engine configured like the runtime (no
code generation), reads its interface and applies the runtime's policy (only WASI
preview 1 imports, a `_start` entry point and an exported memory, an initial memory
within the per-request cap); it returns a `ModuleInfo` or raises a `ModuleError` whose
`reason` is machine-readable. `compiler.check_module()` builds the operator's in-process
check on it, and the compile workers build on it too.

A module is identified by the sha256 of its uncompressed wasm bytes (hex), whatever form
it arrived in, so gzip-compressed and plain copies of one module share a digest.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import wasmtime

from wasmop.runtime.config import (
    RATIO_FLOOR_BYTES,
    WASM_PAGE,
    Limits,
    RuntimeConfig,
)
from wasmop.runtime.errors import (
    CompileError,
    FetchError,
    ForbiddenImport,
    MemoryLimitExceeded,
    MissingEntrypoint,
    ModuleError,
    ModuleTooLarge,
    NotWasm,
    TableLimitExceeded,
    UnsupportedFeature,
)

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
    memory_min_bytes: int  # the first memory's initial size
    memory_max_bytes: int | None
    # Every memory's initial size in pages and every table's in elements, in index order:
    # the engine's limits are shared out between them (see `store_limits`).
    memory_min_pages: tuple[int, ...] = ()
    table_min_elements: tuple[int, ...] = ()

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

    @property
    def accounting_exports(self) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """Export names of every memory and every table (see `with_accounting_exports`)."""
        info = self.info
        return (
            tuple(accounting_name("memory", i) for i in range(len(info.memory_min_pages))),
            tuple(accounting_name("table", i) for i in range(len(info.table_min_elements))),
        )


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


def decode_module_bytes(
    raw: bytes, max_bytes: int, max_ratio: float | None = None
) -> tuple[bytes, int | None]:
    """Uncompress gzip (detected by magic) and check the wasm header.

    Returns (wasm bytes, compressed size or None). Decompression stops at `max_bytes`, so
    a small gzip bomb cannot exhaust memory; with `max_ratio`, a module above
    `RATIO_FLOOR_BYTES` may expand at most that many times.
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
        if max_ratio is not None:
            check_compression_ratio(len(data), compressed_size, max_ratio)
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


def check_compression_ratio(size: int, compressed_size: int, max_ratio: float) -> None:
    """Raise ModuleTooLarge if a module over `RATIO_FLOOR_BYTES` expands more than
    `max_ratio` times (a decompression or compile bomb; real modules compress 2-4x)."""
    ratio = size / max(1, compressed_size)
    if size > RATIO_FLOOR_BYTES and ratio > max_ratio:
        raise ModuleTooLarge(
            f"the module expands {ratio:.0f}x when uncompressed ({compressed_size} to "
            f"{size} bytes); the limit is {max_ratio:g}x",
            compression_ratio=round(ratio, 1),
        )


def digest_of(wasm: bytes) -> str:
    return hashlib.sha256(wasm).hexdigest()


# --- a minimal reader for the import, memory and export sections ------------------------


class _Reader:
    """Just enough of the binary format to list imports, memories and exports."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.header = pos
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
        """Each section's id and a reader over its payload (`header` is where it starts)."""
        self.pos = 8
        while self.pos < self.end:
            self.header = self.pos
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
    memories: list[tuple[int, int | None]]  # (min, max) pages, imported ones first
    tables: list[tuple[int, int | None]]  # (min, max) elements, imported ones first
    export_section: tuple[int, int, int] | None = None  # header start, payload start, end

    @property
    def memory_min_pages(self) -> int:
        return self.memories[0][0] if self.memories else 0

    @property
    def memory_max_pages(self) -> int | None:
        return self.memories[0][1] if self.memories else None


def parse_interface(wasm: bytes) -> _Parsed:
    """Imports, exports, every memory's and every table's limits, straight from the binary.

    Only called after wasmtime has validated the module, so malformed input here is a
    bug in this reader rather than in the module.
    """
    imports: list[ImportInfo] = []
    exports: list[ExportInfo] = []
    memories: list[tuple[int, int | None]] = []
    tables: list[tuple[int, int | None]] = []
    export_section: tuple[int, int, int] | None = None
    whole = _Reader(wasm)
    for section_id, reader in whole.sections():
        if section_id == 2:
            for _ in range(reader.uleb()):
                module, name = reader.name(), reader.name()
                kind = reader.byte()
                if kind == 0:
                    reader.uleb()
                elif kind == 1:
                    reader.reftype()
                    minimum, maximum, _ = reader.limits()
                    tables.append((minimum, maximum))
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
        elif section_id == 4:
            for _ in range(reader.uleb()):
                if reader.data[reader.pos : reader.pos + 2] == b"\x40\x00":
                    # A table with an initialiser expression (function references).
                    raise ValueError("tables with initialiser expressions are not read")
                reader.reftype()
                minimum, maximum, _ = reader.limits()
                tables.append((minimum, maximum))
        elif section_id == 5:
            for _ in range(reader.uleb()):
                minimum, maximum, _ = reader.limits()
                memories.append((minimum, maximum))
        elif section_id == 7:
            export_section = (whole.header, reader.pos, reader.end)
            for _ in range(reader.uleb()):
                name = reader.name()
                kind = reader.byte()
                reader.uleb()
                exports.append(ExportInfo(name, _KINDS.get(kind, f"kind{kind}")))
    return _Parsed(imports, exports, memories, tables, export_section)


# --- accounting exports ------------------------------------------------------------------
#
# The embedding API reaches a memory or a table only through an export, and a module need
# not export all of them (a second memory, the function table). So before compiling, every
# memory and table is exported once more under a reserved name: the host can then read the
# true size of each after a request, for the metrics and for telling a limit from a trap.
# Exports are invisible to the module's own code; its digest is that of the bytes as sent.

ACCOUNTING_PREFIX = "wasmop:"
ACCOUNTING_REVISION = "1"  # part of the precompiled-module cache key
_EXPORT_KIND = {"table": 1, "memory": 2}


def accounting_name(kind: str, index: int) -> bytes:
    return f"{ACCOUNTING_PREFIX}{kind}:{index}".encode()


def uleb128(value: int) -> bytes:
    """An unsigned LEB128 integer, as the binary format writes counts and sizes."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def with_accounting_exports(wasm: bytes, parsed: _Parsed) -> bytes:
    """The module with every memory and table exported under `accounting_name`."""
    if parsed.export_section is None:
        raise MissingEntrypoint("the module exports nothing, so not `_start` and `memory`")
    if any(e.name.startswith(ACCOUNTING_PREFIX) for e in parsed.exports):
        raise ForbiddenImport(f"export names starting with {ACCOUNTING_PREFIX!r} are reserved")
    added = [
        uleb128(len(name)) + name + bytes([_EXPORT_KIND[kind]]) + uleb128(index)
        for kind, items in (("memory", parsed.memories), ("table", parsed.tables))
        for index in range(len(items))
        for name in [accounting_name(kind, index)]
    ]
    header, start, end = parsed.export_section
    reader = _Reader(wasm, start, end)
    count = reader.uleb()
    payload = uleb128(count + len(added)) + wasm[reader.pos : end] + b"".join(added)
    return wasm[:header] + b"\x07" + uleb128(len(payload)) + payload + wasm[end:]


def interface_from_module(module: wasmtime.Module) -> _Parsed:
    """The same facts from a compiled module (exported memories and tables only)."""
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
    memories = [
        (item.type.limits.min, item.type.limits.max)
        for item in [*module.imports, *module.exports]
        if isinstance(item.type, wasmtime.MemoryType)
    ]
    tables = [
        (item.type.limits.min, item.type.limits.max)
        for item in [*module.imports, *module.exports]
        if isinstance(item.type, wasmtime.TableType)
    ]
    return _Parsed(imports, exports, memories, tables)


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
    if "multiple memories" in text:
        return UnsupportedFeature(
            f"the module has several memories, and this runtime's engine does not enable "
            f"multi-memory ({last})",
            feature="multi-memory",
        )
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
    if limits is not None:
        check_limits(
            tuple(m for m, _ in parsed.memories), tuple(t for t, _ in parsed.tables), limits
        )


@dataclass(frozen=True)
class StoreLimits:
    """What `Store.set_limits` gets for every request of one module: the per-request caps
    shared out equally between the module's memories and between its tables, so that all
    of them together stay within `Limits.memory_bytes` and `Limits.table_elements`."""

    memory_size: int  # bytes, each memory
    table_elements: int  # each table
    memories: int
    tables: int
    instances: int = 1

    @classmethod
    def of(cls, memory_count: int, table_count: int, limits: Limits) -> StoreLimits:
        memory_share = limits.memory_bytes // max(1, memory_count)
        return cls(
            memory_size=memory_share - memory_share % WASM_PAGE,
            table_elements=limits.table_elements // max(1, table_count),
            memories=memory_count,
            tables=table_count,
        )

    def apply(self, store: wasmtime.Store) -> None:
        store.set_limits(
            memory_size=self.memory_size,
            table_elements=self.table_elements,
            instances=self.instances,
            tables=self.tables,
            memories=self.memories,
        )


def check_limits(
    memory_min_pages: tuple[int, ...], table_min_elements: tuple[int, ...], limits: Limits
) -> None:
    """Every memory and table must start within its share of the caps, or it never could."""
    shares = StoreLimits.of(len(memory_min_pages), len(table_min_elements), limits)
    for index, pages in enumerate(memory_min_pages):
        minimum = pages * WASM_PAGE
        if minimum > shares.memory_size:
            whose = f"memory {index}" if len(memory_min_pages) > 1 else "the module's memory"
            raise MemoryLimitExceeded(
                f"the initial size of {whose} ({minimum} bytes) exceeds its share of the "
                f"per-request memory limit ({shares.memory_size} of "
                f"{limits.memory_bytes} bytes)",
                memory_min_bytes=minimum,
                memory_limit_bytes=limits.memory_bytes,
            )
    for index, elements in enumerate(table_min_elements):
        if elements > shares.table_elements:
            raise TableLimitExceeded(
                f"the initial size of table {index} ({elements} elements) exceeds its share "
                f"of the per-request table limit ({shares.table_elements} of "
                f"{limits.table_elements} elements)",
                table_min_elements=elements,
                table_limit_elements=limits.table_elements,
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


def inspect(
    wasm: bytes,
    engine: wasmtime.Engine,
    config: RuntimeConfig,
    limits: Limits | None,
    compressed_size: int | None,
    validated: bool = False,
) -> tuple[ModuleInfo, _Parsed]:
    """Validate (unless `validated`), read the interface and apply the policy."""
    if not validated:
        try:
            wasmtime.Module.validate(engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise classify_compile_error(exc) from exc
    try:
        parsed = parse_interface(wasm)
    except (ValueError, KeyError, IndexError) as exc:
        # Every memory and table must be known to be bounded and counted.
        raise CompileError(f"the runtime cannot read this module's sections: {exc}") from exc
    check_policy(parsed, config, limits)
    info = ModuleInfo(
        digest=digest_of(wasm),
        size=len(wasm),
        compressed_size=compressed_size,
        imports=tuple(parsed.imports),
        exports=tuple(parsed.exports),
        memory_min_bytes=parsed.memory_min_pages * WASM_PAGE,
        memory_max_bytes=None
        if parsed.memory_max_pages is None
        else parsed.memory_max_pages * WASM_PAGE,
        memory_min_pages=tuple(m for m, _ in parsed.memories),
        table_min_elements=tuple(t for t, _ in parsed.tables),
    )
    return info, parsed


__all__ = [
    "CompiledModule",
    "ExportInfo",
    "ImportInfo",
    "ModuleError",
    "ModuleInfo",
    "ModuleSource",
    "decode_module_bytes",
    "read_source",
]
