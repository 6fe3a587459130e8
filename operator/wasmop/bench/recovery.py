"""Recovery time after a fault, from the probe's requests and the watch's events.

Two views of the same fault, as the issue asks:

* the client's: from the first failed request after the fault to the first successful
  one after it (and how many requests failed meanwhile), from a probe table;
* the cluster's: from the fault to the function having its desired replicas ready
  again, from the recorder's Deployment (or WasmFunction) events.

A fault that no request noticed (the gateway retried on another Pod) has no client-side
outage: that is reported as zero failed requests, not as a recovery time of zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd


@dataclass(frozen=True)
class ClientRecovery:
    fault_ms: float
    failed_requests: int
    first_failure_ms: float | None
    recovered_ms: float | None  # first success after the first failure
    outage_ms: float | None  # recovered - first failure
    fault_to_recovered_ms: float | None


def client_recovery(probes: pd.DataFrame, fault_ms: float) -> ClientRecovery:
    """The outage the client saw after ``fault_ms`` (requests sent at or after it)."""
    after = probes[probes["t_ms"] >= fault_ms].sort_values("t_ms", kind="stable")
    failures = after[~after["ok"].astype(bool)]
    if failures.empty:
        return ClientRecovery(fault_ms, 0, None, None, None, None)
    first_failure = float(failures["t_ms"].iloc[0])
    later_ok = after[(after["t_ms"] > first_failure) & after["ok"].astype(bool)]
    if later_ok.empty:
        return ClientRecovery(fault_ms, len(failures), first_failure, None, None, None)
    recovered = float(later_ok["t_ms"].iloc[0])
    failed = int(((failures["t_ms"] >= first_failure) & (failures["t_ms"] < recovered)).sum())
    return ClientRecovery(
        fault_ms, failed, first_failure, recovered, recovered - first_failure, recovered - fault_ms
    )


@dataclass(frozen=True)
class ClusterRecovery:
    fault_ms: float
    degraded_ms: float | None  # first event after the fault with fewer than desired ready
    restored_ms: float | None  # first event after that with the desired replicas ready
    fault_to_ready_ms: float | None
    min_ready: int | None


def cluster_recovery(
    observations: pd.DataFrame,
    fault_ms: float,
    name: str,
    desired: int,
    kind: str = "Deployment",
) -> ClusterRecovery:
    """From the fault to ``desired`` ready replicas of ``kind``/``name`` again.

    Readiness counts ``replicas_ready`` as the object's status reports it; a fault the
    status never reflected (degraded_ms None) recovered as far as the cluster can tell.
    """
    obs = observations[
        (observations["kind"] == kind)
        & (observations["name"] == name)
        & (observations["event"] != "LISTED")
        & (observations["t_ms"] >= fault_ms)
    ].sort_values("t_ms", kind="stable")
    ready = obs["replicas_ready"].fillna(0).astype(int)
    short = obs[ready < desired]
    if short.empty:
        return ClusterRecovery(fault_ms, None, None, None, int(ready.min()) if len(ready) else None)
    degraded = float(short["t_ms"].iloc[0])
    back = obs[(obs["t_ms"] > degraded) & (ready >= desired)]
    min_ready = int(ready.min())
    if back.empty:
        return ClusterRecovery(fault_ms, degraded, None, None, min_ready)
    restored = float(back["t_ms"].iloc[0])
    return ClusterRecovery(fault_ms, degraded, restored, restored - fault_ms, min_ready)


def recovery_row(client: ClientRecovery, cluster: ClusterRecovery, **context: object) -> dict:
    """One tidy row for a fault: both views side by side."""
    row: dict[str, object] = dict(context)
    row.update({f"client_{k}": v for k, v in asdict(client).items() if k != "fault_ms"})
    row.update({f"cluster_{k}": v for k, v in asdict(cluster).items() if k != "fault_ms"})
    row["fault_ms"] = client.fault_ms
    return row


def recovery_ms(client: ClientRecovery, cluster: ClusterRecovery) -> float | None:
    """The recovery time judged against the report's target: until the client is served
    again and the desired replicas are back, whichever is later (None if neither came)."""
    candidates = [
        v
        for v in (client.fault_to_recovered_ms, cluster.fault_to_ready_ms)
        if v is not None and math.isfinite(v)
    ]
    if client.failed_requests and client.recovered_ms is None:
        return None
    if cluster.degraded_ms is not None and cluster.restored_ms is None:
        return None
    return max(candidates) if candidates else 0.0
