"""A corpus of hostile modules, each with the status the runtime must contain it with.

One list, used by the unit tests (the runtime alone), the integration tests (a real node
agent in the embedded cluster) and `make bench-runtime` (peak RSS and hello's latency
while each runs), so the three cannot drift. A module is either refused when it is loaded
(`refused`: the `ModuleError` reason a Pod's status and `wasmop runtime check` show) or
served and answered with a fault (`status`, `reason`: the HTTP status and
`X-Wasmop-Reason`; docs/abi.md). The C workloads come from functions/; the rest are
written here in WebAssembly text or generated.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable
from dataclasses import dataclass, field

from wasmop.runtime.config import MIB, Limits
from wasmop.runtime.loader import uleb128 as _leb

# The limits every hostile function is served with (and the bench's memory bound).
HOSTILE_LIMITS = Limits(memory_bytes=64 * MIB, timeout_s=2.0, output_bytes=1 * MIB)


@dataclass(frozen=True)
class Hostile:
    name: str
    attempts: str  # what it tries, in a few words
    build: Callable[[], bytes] = field(repr=False)
    query: str = ""
    status: int | None = None  # served: the answer it gets
    reason: str | None = None
    refused: str | None = None  # or refused at load, with this ModuleError reason
    features: tuple[str, ...] = ()  # engine features it needs (WASMOP_FEATURES names)

    @functools.cached_property
    def module(self) -> bytes:
        return self.build()

    @property
    def expected(self) -> str:
        return f"refused {self.refused}" if self.refused else f"{self.status} {self.reason}"


def _wat(text: str) -> Callable[[], bytes]:
    def build() -> bytes:
        import wasmtime

        return bytes(wasmtime.wat2wasm(text))

    return build


def _workload(name: str, transform: Callable[[bytes], bytes] = lambda b: b) -> Callable[[], bytes]:
    def build() -> bytes:
        from wasmop.runtime.workloads import load_manifest

        return transform(load_manifest()[name].wasm_path.read_bytes())

    return build


def _many_memories(extra: int = 8) -> str:
    """Grows each of `extra` memories a page at a time until refused, touching every page."""
    memories = " ".join(f"(memory $m{i} 0)" for i in range(1, extra + 1))
    grow = " ".join(
        f"(loop $g{i} (br_if $g{i} (i32.ne (memory.grow $m{i} (i32.const 1)) (i32.const -1))))"
        f"(memory.fill $m{i} (i32.const 0) (i32.const 1)"
        f" (i32.mul (memory.size $m{i}) (i32.const 65536)))"
        for i in range(1, extra + 1)
    )
    start = f'(func (export "_start") {grow} unreachable)'
    return f'(module (memory (export "memory") 1) {memories} {start})'


_TABLE_GROWTH = """(module (memory (export "memory") 1) (table $t 0 funcref)
  (func (export "_start")
    (loop $g
      (if (i32.eq (table.grow $t (ref.null func) (i32.const 4096)) (i32.const -1))
        (then unreachable))
      (br_if $g (i32.lt_u (table.size $t) (i32.const 20971520))))))"""

_HUGE_MEMORY = """(module (memory (export "memory") 65536) (func (export "_start")))"""

_DEEP_RECURSION = """(module (memory (export "memory") 1)
  (func $down (param i64) (result i64)
    (i64.add (call $down (i64.add (local.get 0) (i64.const 1))) (local.get 0)))
  (func (export "_start") (drop (call $down (i64.const 0)))))"""

_START_LOOP = """(module (memory (export "memory") 1)
  (func $spin (loop $l (br $l)))
  (start $spin)
  (func (export "_start")))"""


def _section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + _leb(len(payload)) + payload


def compile_bomb(locals_count: int = 1000, statements: int = 250_000) -> bytes:
    """A servable-looking module whose one function keeps `locals_count` i64 locals live
    through a loop of `statements` updates: register allocation takes many seconds. At the
    defaults, 2.4 MB that gzip to 24 KB (a ratio bomb); `DENSE_BOMB` is 430 KB that
    compiles for about 20 s on the development machine (twice the compile deadline) and
    fits a ConfigMap uncompressed."""
    body = bytearray(_leb(1) + _leb(locals_count) + b"\x7e")
    body += b"\x03\x40"  # loop
    for k in range(statements):
        j = k % locals_count
        body += b"\x20" + _leb(j) + b"\x20" + _leb((j * 7 + 1) % locals_count)
        body += b"\x7c\x21" + _leb(j)  # i64.add, local.set
    body += b"\x20\x00\xa7\x0d\x00\x0b"  # br_if 0 on local 0, end loop
    for j in range(locals_count):
        body += b"\x20" + _leb(j)
    body += b"\x7c" * (locals_count - 1) + b"\x1a\x0b"
    name = lambda s: _leb(len(s)) + s  # noqa: E731
    return (
        b"\0asm\x01\0\0\0"
        + _section(1, _leb(1) + b"\x60\x00\x00")
        + _section(3, _leb(1) + _leb(0))
        + _section(5, _leb(1) + b"\x00\x01")
        + _section(7, _leb(2) + name(b"memory") + b"\x02\x00" + name(b"_start") + b"\x00\x00")
        + _section(10, _leb(1) + _leb(len(body)) + bytes(body))
    )


DENSE_BOMB = {"locals_count": 8000, "statements": 40000}


def corpus() -> list[Hostile]:
    return [
        Hostile(
            "multi-memory",
            "eight extra memories grown to the engine's limit",
            _wat(_many_memories()),
            status=507,
            reason="memory-limit",
            features=("multi-memory",),
        ),
        Hostile(
            "multi-memory-off",
            "the same module on an engine without multi-memory",
            _wat(_many_memories()),
            refused="UnsupportedFeature",
        ),
        Hostile(
            "table-growth",
            "a function table grown towards 20 M entries",
            _wat(_TABLE_GROWTH),
            status=507,
            reason="memory-limit",
        ),
        Hostile(
            "memory-growth",
            "linear memory grown until allocation fails",
            _workload("grow"),
            status=507,
            reason="memory-limit",
        ),
        Hostile(
            "huge-memory",
            "a declared initial memory of 4 GiB",
            _wat(_HUGE_MEMORY),
            refused="MemoryLimit",
        ),
        Hostile(
            "deep-recursion",
            "unbounded recursion",
            _wat(_DEEP_RECURSION),
            status=500,
            reason="trap",
        ),
        Hostile(
            "start-loop",
            "an endless loop in the start section (runs at instantiation)",
            _wat(_START_LOOP),
            status=504,
            reason="timeout",
        ),
        Hostile(
            "compile-bomb",
            "430 KB of code that takes Cranelift twice the compile deadline",
            lambda: compile_bomb(**DENSE_BOMB),
            refused="CompileTimeout",
        ),
        Hostile(
            "gzip-bomb",
            "the same, gzip-compressed: 2.4 MB from about 30 KB",
            lambda: gzip.compress(compile_bomb(), 9, mtime=0),
            refused="ModuleTooLarge",
        ),
        Hostile(
            "host-call-sleep",
            "a WASI sleep of ten minutes",
            _workload("sleep"),
            query="ms=600000",
            status=504,
            reason="timeout",
        ),
        Hostile(
            "output-flood",
            "a gigabyte written to stdout",
            _workload("flood"),
            status=502,
            reason="output-too-large",
        ),
        Hostile(
            "forbidden-import",
            "an import of a host socket function",
            _workload("badimport"),
            refused="ForbiddenImport",
        ),
        Hostile(
            "truncated",
            "hello cut in half",
            _workload("hello", lambda b: b[: len(b) // 2]),
            refused="CompileError",
        ),
        Hostile(
            "not-wasm",
            "a text file",
            _workload("notwasm"),
            refused="NotWasm",
        ),
    ]
