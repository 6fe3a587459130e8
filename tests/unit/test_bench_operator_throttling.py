"""The operator Pod's CFS throttling as make bench-operator reads it (cgroup v1 cpu.stat)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from wasmop.bench.micro.operator_deploy import (
    Burst,
    burst_table,
    first_seen_ms,
    operator_steps,
    throttling_between,
)
from wasmop.node.cgroups import own_group, process_throttling
from wasmop.node.stats import Throttling


def test_a_process_throttling_is_read_from_its_own_cpu_group(tmp_path: Path) -> None:
    group = own_group("cpu", Path(f"/proc/{os.getpid()}/cgroup").read_text())
    folder = tmp_path / "cpu" / group.lstrip("/")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu.stat").write_text("nr_periods 120\nnr_throttled 30\nthrottled_time 2500000000\n")
    assert process_throttling(os.getpid(), root=tmp_path) == Throttling(120, 30, 2.5)


def test_no_throttling_for_a_process_without_a_readable_group(tmp_path: Path) -> None:
    assert process_throttling(os.getpid(), root=tmp_path) is None  # no cpu.stat there
    assert process_throttling(2**22 + 1, root=tmp_path) is None  # no such process


def test_a_burst_counts_the_periods_between_its_readings() -> None:
    before, after = Throttling(100, 10, 1.0), Throttling(160, 40, 4.0)
    delta = throttling_between(before, after)
    assert delta == Throttling(60, 30, 3.0)
    assert delta is not None and delta.throttled_share == 0.5
    # A restarted operator starts a new group: its counters went back, nothing is told.
    assert throttling_between(after, before) is None
    assert throttling_between(None, after) is None


def test_the_burst_table_has_one_row_per_burst_with_its_quota() -> None:
    bursts = [
        Burst("operator", 100, 0, throttling=Throttling(90, 45, 6.0), duration_s=9.2),
        Burst("plain", 100, 0, throttling=None, duration_s=4.7),
    ]
    table = burst_table(bursts)
    assert list(table["mode"]) == ["operator", "plain"]
    first = table.iloc[0]
    assert (first["operator_cfs_periods"], first["operator_cfs_throttled_periods"]) == (90, 45)
    assert first["operator_cfs_throttled_share"] == 0.5
    assert table.iloc[1][["operator_cfs_periods", "operator_cfs_throttled_s"]].isna().all()


def test_the_operator_steps_are_read_from_the_status_timings() -> None:
    created_ms = 1_764_547_200_000.0  # 2025-12-01T00:00:00Z
    body = {
        "status": {
            "timings": {
                "acceptedAt": "2025-12-01T00:00:01.250Z",
                "validatedAt": "2025-12-01T00:00:01.300Z",
                "deploymentCreatedAt": "2025-12-01T00:00:02.000Z",
            }
        }
    }
    assert operator_steps(body, created_ms) == {
        "reconcile_started_ms": 1250.0,
        "validated_ms": 1300.0,
        "deployment_written_ms": 2000.0,
    }
    # Not reconciled yet (or plain's Deployment): no steps.
    assert set(operator_steps(None, created_ms).values()) == {None}


def test_first_seen_is_the_earliest_watch_event_of_each_name() -> None:
    observed = pd.DataFrame(
        [
            {"kind": "WasmFunction", "event": "LISTED", "name": "a", "t_ms": 5.0},
            {"kind": "WasmFunction", "event": "MODIFIED", "name": "a", "t_ms": 30.0},
            {"kind": "WasmFunction", "event": "ADDED", "name": "a", "t_ms": 20.0},
            {"kind": "Deployment", "event": "ADDED", "name": "a", "t_ms": 10.0},
        ]
    )
    assert first_seen_ms(observed, "WasmFunction") == {"a": 20.0}
    assert first_seen_ms(pd.DataFrame(), "WasmFunction") == {}
