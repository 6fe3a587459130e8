"""Every memory and every table a module has is bounded by the engine's policy, and the
metrics count all of them (issue 11: the cap once covered only the first memory)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import wasmtime
from wasmop.runtime import (
    EngineFeatures,
    FunctionConfig,
    Limits,
    MemoryLimitExceeded,
    Request,
    Runtime,
    RuntimeConfig,
    UnsupportedFeature,
)
from wasmop.runtime.config import MIB
from wasmop.runtime.errors import TableLimitExceeded

EXTRA_MEMORIES = 8


def many_memories_growing(extra: int = EXTRA_MEMORIES, first_min: int = 0) -> bytes:
    """Grows each of `extra` memories page by page until the engine refuses, touches every
    page (so it is resident), then traps."""
    memories = "\n".join(
        f"(memory $m{i} {first_min if i == 1 else 0})" for i in range(1, extra + 1)
    )
    grow = "\n".join(
        f"(loop $g{i} (br_if $g{i} (i32.ne (memory.grow $m{i} (i32.const 1)) (i32.const -1))))"
        f"(memory.fill $m{i} (i32.const 0) (i32.const 1)"
        f" (i32.mul (memory.size $m{i}) (i32.const 65536)))"
        for i in range(1, extra + 1)
    )
    return wasmtime.wat2wasm(
        f"""(module (memory (export "memory") 1) {memories}
              (func (export "_start") {grow} unreachable))"""
    )


TABLE_GROWTH = wasmtime.wat2wasm(
    """(module (memory (export "memory") 1) (table $t 0 funcref)
         (func (export "_start")
           (loop $g
             (if (i32.eq (table.grow $t (ref.null func) (i32.const 4096)) (i32.const -1))
               (then unreachable))
             (br_if $g (i32.lt_u (table.size $t) (i32.const 20971520))))))"""
)


@pytest.fixture
def multi_memory_runtime() -> Iterator[Runtime]:
    with Runtime(RuntimeConfig(features=EngineFeatures(multi_memory=True))) as runtime:
        yield runtime


def test_multi_memory_is_off_unless_the_runtime_enables_it() -> None:
    with Runtime() as runtime, pytest.raises(UnsupportedFeature) as caught:
        runtime.load(many_memories_growing())
    assert "multi-memory" in str(caught.value)


def test_every_memory_counts_against_the_one_cap(multi_memory_runtime: Runtime) -> None:
    cap = 16 * MIB
    function = multi_memory_runtime.function(
        many_memories_growing(), FunctionConfig(name="mm", limits=Limits(memory_bytes=cap))
    )
    response = function.invoke_sync(Request())
    assert response.status == 507 and response.reason == "memory-limit", response.body
    # The true footprint: all nine memories together, within the cap, and near it.
    assert cap * 3 // 4 <= response.stats.memory_bytes <= cap
    assert function.stats.peak_memory_bytes == response.stats.memory_bytes


def test_a_second_memory_declared_over_its_share_is_refused_at_load(
    multi_memory_runtime: Runtime,
) -> None:
    module = many_memories_growing(extra=1, first_min=512)  # 32 MiB in memory 1
    with pytest.raises(MemoryLimitExceeded) as caught:
        multi_memory_runtime.function(
            module, FunctionConfig(name="big", limits=Limits(memory_bytes=16 * MIB))
        )
    assert "memory 1" in str(caught.value)


def test_table_growth_is_bounded_and_counted() -> None:
    limits = Limits(memory_bytes=16 * MIB)
    with Runtime() as runtime:
        function = runtime.function(TABLE_GROWTH, FunctionConfig(name="table", limits=limits))
        response = function.invoke_sync(Request())
    assert response.status == 507 and response.reason == "memory-limit", response.body
    assert b"table" in response.body
    table_bytes = response.stats.memory_bytes - 64 * 1024
    assert 0 < table_bytes <= limits.table_elements * 8


def test_a_table_declared_over_the_element_cap_is_refused_at_load() -> None:
    module = wasmtime.wat2wasm(
        """(module (memory (export "memory") 1) (table 1000000 funcref)
             (func (export "_start")))"""
    )
    with Runtime() as runtime, pytest.raises(TableLimitExceeded):
        runtime.function(module, FunctionConfig(name="t", limits=Limits(table_elements=1000)))


def test_a_long_request_runs_at_lower_priority_until_it_ends() -> None:
    """Many tenants share one process's cores: a request that runs on and on is demoted
    (nice 10) so the short requests of others keep their latency; its thread is back at
    normal priority for its next request."""
    import os
    import threading
    import time

    from wasmop.runtime.epoch import DEMOTED_NICE
    from wasmop.runtime.workloads import load_manifest

    with Runtime() as runtime:
        loop = runtime.function(
            load_manifest()["loop"].wasm_path,
            FunctionConfig(name="loop", limits=Limits(timeout_s=0.6)),
        )
        ids: list[int] = []
        after: list[int] = []

        def run() -> None:
            ids.append(threading.get_native_id())
            assert loop.invoke_sync(Request()).reason == "timeout"
            after.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.3)
        during = os.getpriority(os.PRIO_PROCESS, ids[0])
        thread.join()
    assert during == DEMOTED_NICE
    assert after == [0]
