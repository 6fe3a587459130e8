"""Recovery time from the client's and the cluster's point of view."""

from __future__ import annotations

import pandas as pd
from wasmop.bench.experiments.recovery import (
    client_recovery,
    cluster_recovery,
    recovery_ms,
    recovery_row,
)


def probes(outcomes: str, start: float = 0.0, step: float = 100.0) -> pd.DataFrame:
    """'..xx.' -> requests every 100 ms, x failed."""
    return pd.DataFrame(
        {
            "t_ms": [start + i * step for i in range(len(outcomes))],
            "ok": [c == "." for c in outcomes],
        }
    )


def deployment_rows(ready: list[tuple[float, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"t_ms": t, "kind": "Deployment", "name": "f", "event": "MODIFIED", "replicas_ready": r}
         for t, r in ready]
    )  # fmt: skip


def test_client_outage_from_first_failure_to_first_success() -> None:
    result = client_recovery(probes("x...xxx..x."), fault_ms=350)
    assert result.first_failure_ms == 400
    assert result.recovered_ms == 700
    assert result.outage_ms == 300
    assert result.failed_requests == 3
    assert result.fault_to_recovered_ms == 350


def test_unnoticed_and_unrecovered_faults() -> None:
    quiet = client_recovery(probes("....."), fault_ms=0)
    assert quiet.failed_requests == 0 and quiet.outage_ms is None
    down = client_recovery(probes("..xxx"), fault_ms=0)
    assert down.failed_requests == 3 and down.recovered_ms is None


def test_cluster_recovery_to_desired_replicas() -> None:
    rows = deployment_rows([(0, 2), (1000, 2), (1200, 1), (1500, 0), (4000, 1), (6000, 2)])
    result = cluster_recovery(rows, fault_ms=1100, name="f", desired=2)
    assert (result.degraded_ms, result.restored_ms) == (1200, 6000)
    assert result.fault_to_ready_ms == 4900 and result.min_ready == 0
    untouched = cluster_recovery(deployment_rows([(0, 2), (2000, 2)]), 1000, "f", 2)
    assert untouched.degraded_ms is None and untouched.fault_to_ready_ms is None
    stuck = cluster_recovery(deployment_rows([(2000, 1)]), 1000, "f", 2)
    assert stuck.restored_ms is None


def test_recovery_time_is_the_later_of_both_views() -> None:
    client = client_recovery(probes("..xx..", start=1000), fault_ms=1000)
    cluster = cluster_recovery(deployment_rows([(1100, 1), (3000, 2)]), 1000, "f", 2)
    assert recovery_ms(client, cluster) == 2000
    row = recovery_row(client, cluster, fault="pod-delete")
    assert row["fault"] == "pod-delete" and row["client_failed_requests"] == 2
    assert row["cluster_fault_to_ready_ms"] == 2000
    unrecovered = cluster_recovery(deployment_rows([(1100, 1)]), 1000, "f", 2)
    assert recovery_ms(client, unrecovered) is None
    nothing = client_recovery(probes("...."), 0)
    assert recovery_ms(nothing, cluster_recovery(deployment_rows([(1, 2)]), 0, "f", 2)) == 0.0
