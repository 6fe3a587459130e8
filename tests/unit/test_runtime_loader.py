"""Loading and checking modules without serving them (what the operator calls)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime
from aiohttp import web
from wasmop.runtime import (
    CompileError,
    EngineFeatures,
    FetchError,
    ForbiddenImport,
    Limits,
    MemoryLimitExceeded,
    MissingEntrypoint,
    ModuleTooLarge,
    NotWasm,
    RuntimeConfig,
    UnsupportedFeature,
    check_module,
)
from wasmop.runtime.config import MIB
from wasmop.runtime.loader import (
    ACCOUNTING_PREFIX,
    interface_from_module,
    parse_interface,
    with_accounting_exports,
)
from wasmop.runtime.workloads import Manifest, ensure_built

HELLO_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 8) "hi\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 8))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
"""


def wat(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return ensure_built()


def test_every_servable_workload_passes_the_check(manifest: Manifest) -> None:
    for workload in manifest.servable():
        data = workload.wasm_path.read_bytes()
        info = check_module(workload.wasm_path)
        assert info.digest == hashlib.sha256(data).hexdigest()
        assert info.size == len(data)
        assert {e.name for e in info.exports} >= {"_start", "memory"}
        assert all(i.module == "wasi_snapshot_preview1" for i in info.imports)


def test_forbidden_import_is_refused_by_name(manifest: Manifest) -> None:
    with pytest.raises(ForbiddenImport) as caught:
        check_module(manifest["badimport"].wasm_path)
    assert caught.value.reason == "ForbiddenImport"
    assert "env::host_socket_connect" in str(caught.value)
    assert caught.value.to_dict()["imports"] == ["env::host_socket_connect"]


def test_not_wasm_is_refused_clearly(manifest: Manifest) -> None:
    with pytest.raises(NotWasm, match="not a WebAssembly module") as caught:
        check_module(manifest["notwasm"].wasm_path)
    assert caught.value.reason == "NotWasm"
    with pytest.raises(NotWasm, match="WebAssembly text"):
        check_module(HELLO_WAT.encode())
    with pytest.raises(NotWasm):
        check_module(b"")


def test_fixture_checks_in_the_manifest_hold(manifest: Manifest) -> None:
    for workload in manifest.workloads:
        if not workload.check:
            continue
        with pytest.raises(Exception) as caught:
            check_module(workload.wasm_path)
        assert getattr(caught.value, "reason", None) == workload.check["reason"]
        assert workload.check["message_contains"] in str(caught.value)


def test_gzip_bytes_have_the_digest_of_the_plain_module(manifest: Manifest) -> None:
    data = manifest["sqlite"].wasm_path.read_bytes()
    packed = gzip.compress(data)
    assert len(packed) < MIB < len(data)  # why: a ConfigMap holds at most 1 MiB
    info = check_module(packed)
    assert info.digest == hashlib.sha256(data).hexdigest()
    assert info.compressed_size == len(packed)
    assert info.size == len(data)


def test_gzip_bomb_and_truncated_gzip_are_refused() -> None:
    bomb = gzip.compress(b"\0asm\x01\0\0\0" + b"\0" * (3 * MIB))
    with pytest.raises(ModuleTooLarge):
        check_module(bomb, config=RuntimeConfig(max_module_bytes=MIB))
    truncated = gzip.compress(wat(HELLO_WAT))[:-12]
    with pytest.raises(NotWasm, match="gzip"):
        check_module(truncated)


def test_components_are_refused_as_unsupported() -> None:
    with pytest.raises(UnsupportedFeature, match="component"):
        check_module(b"\0asm\x0d\x00\x01\x00")


def test_invalid_code_is_a_compile_error() -> None:
    with pytest.raises(CompileError) as caught:
        check_module(b"\0asm\x01\0\0\0\x01\xff\xff")
    assert caught.value.reason == "CompileError"


def test_disabled_feature_is_named() -> None:
    simd = wat(
        HELLO_WAT.replace(
            '(func (export "_start")',
            '(func $v (result v128) (v128.const i32x4 1 2 3 4))\n  (func (export "_start")',
        )
    )
    check_module(simd)  # SIMD is on by default
    with pytest.raises(UnsupportedFeature) as caught:
        check_module(simd, features=EngineFeatures(simd=False))
    assert caught.value.reason == "UnsupportedFeature"
    assert "simd" in caught.value.detail["feature"].lower()


def test_bulk_memory_off_refuses_a_zig_built_module(manifest: Manifest) -> None:
    with pytest.raises(UnsupportedFeature, match="bulk"):
        check_module(manifest["sqlite"].wasm_path, features=EngineFeatures(bulk_memory=False))


def test_missing_entrypoint_and_memory() -> None:
    with pytest.raises(MissingEntrypoint, match="_start"):
        check_module(wat('(module (memory (export "memory") 1) (func (export "run")))'))
    with pytest.raises(MissingEntrypoint, match="memory"):
        check_module(wat('(module (func (export "_start")))'))


def test_unknown_wasi_name_and_imported_memory_are_forbidden() -> None:
    with pytest.raises(ForbiddenImport, match="wasi_snapshot_preview1::teleport"):
        check_module(
            wat(
                '(module (import "wasi_snapshot_preview1" "teleport" (func))'
                ' (memory (export "memory") 1) (func (export "_start")))'
            )
        )
    with pytest.raises(ForbiddenImport, match=r"env::memory \(memory\)"):
        check_module(
            wat(
                '(module (import "env" "memory" (memory 1)) (export "memory" (memory 0))'
                ' (func (export "_start")))'
            )
        )


def test_wrong_wasi_signature_is_caught_when_compiling() -> None:
    module = wat(
        '(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32)))'
        ' (memory (export "memory") 1) (func (export "_start")))'
    )
    check_module(module)  # the name is fine; only linking sees the signature
    with pytest.raises(ForbiddenImport, match="fd_write"):
        check_module(module, compile=True)


def test_initial_memory_over_the_cap_is_refused() -> None:
    module = wat(HELLO_WAT.replace('(memory (export "memory") 1)', '(memory (export "memory") 40)'))
    info = check_module(module)
    assert info.memory_min_bytes == 40 * 64 * 1024
    with pytest.raises(MemoryLimitExceeded) as caught:
        check_module(module, limits=Limits(memory_bytes=MIB))
    assert caught.value.reason == "MemoryLimit"


def test_reader_agrees_with_wasmtime(manifest: Manifest) -> None:
    engine = wasmtime.Engine()
    for workload in manifest.servable():
        data = workload.wasm_path.read_bytes()
        ours = parse_interface(data)
        theirs = interface_from_module(wasmtime.Module(engine, data))
        assert ours.imports == theirs.imports, workload.name
        assert ours.exports == theirs.exports, workload.name
        assert ours.memory_min_pages == theirs.memory_min_pages, workload.name
        # With every memory and table exported, wasmtime sees the same ones we counted.
        accounted = interface_from_module(
            wasmtime.Module(engine, with_accounting_exports(data, ours))
        )
        assert accounted.memories[: len(ours.memories)] == ours.memories, workload.name
        assert ours.tables and accounted.tables == ours.tables, workload.name
        extra = {e.name for e in accounted.exports} - {e.name for e in ours.exports}
        assert all(name.startswith(ACCOUNTING_PREFIX) for name in extra), workload.name


def test_missing_file_is_a_fetch_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="cannot read"):
        check_module(tmp_path / "nope.wasm")
    with pytest.raises(FetchError, match="scheme"):
        check_module("ftp://127.0.0.1/x.wasm")


@pytest.fixture
def module_server(manifest: Manifest) -> Iterator[str]:
    """A loopback HTTP server with /hello.wasm, /hello.wasm.gz and a 404."""
    data = manifest["hello"].wasm_path.read_bytes()
    ready = threading.Event()
    state: dict[str, object] = {}

    async def plain(_: web.Request) -> web.Response:
        return web.Response(body=data)

    async def packed(_: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(data))

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/hello.wasm", plain)
        app.router.add_get("/hello.wasm.gz", packed)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["port"] = runner.addresses[0][1]
        state["stop"] = stop = asyncio.Event()
        ready.set()
        await stop.wait()
        await runner.cleanup()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{state['port']}"
    loop.call_soon_threadsafe(state["stop"].set)  # type: ignore[union-attr]
    thread.join(10)
    loop.close()


def test_module_from_url(module_server: str, manifest: Manifest) -> None:
    digest = hashlib.sha256(manifest["hello"].wasm_path.read_bytes()).hexdigest()
    assert check_module(f"{module_server}/hello.wasm").digest == digest
    assert check_module(f"{module_server}/hello.wasm.gz").digest == digest
    with pytest.raises(FetchError, match="404"):
        check_module(f"{module_server}/missing.wasm")
