"""Recovery after a fault: one fault injected while a function is probed at a fixed rate
through the gateway; the recovery time from the probe's requests and the watch's events.

Raw data: ``watch_events.csv`` (with a marker at the fault), ``probes.csv`` (every probe
request) and ``fault.json`` (what was injected, when, the replicas that count as
recovered, and for an API server restart when it answered again). Tables: ``recovery``
(one row: both views of the fault) and ``probes``.

Two views of the same fault, as the issue asks:

* the client's: from the first failed request after the fault to the first successful
  one after it (and how many requests failed meanwhile), from a probe table;
* the cluster's: from the fault to the function having its desired replicas ready
  again, from the recorder's Deployment (or WasmFunction) events.

A fault that no request noticed (the gateway retried on another Pod) has no client-side
outage: that is reported as zero failed requests, not as a recovery time of zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass

import pandas as pd

from wasmop.bench import deploy, faults, figures, probe, watch
from wasmop.bench.analysis import Analysis
from wasmop.bench.clock import now_ms
from wasmop.bench.experiments.base import (
    Experiment,
    RawData,
    check_mode,
    metric_name,
    ready_kind,
)
from wasmop.bench.experiments.steps import Workspace, deploy_one, recording, wait_serving
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession

log = logging.getLogger(__name__)

FAULTS = ("pod-crash", "pod-delete", "node-kill", "operator-kill", "apiserver-restart")
VICTIM = "victim"
PROBES = "probes"
FAULT = "fault"


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


def recovery_ms(
    client: ClientRecovery, cluster: ClusterRecovery, api_back_ms: float | None = None
) -> float | None:
    """The recovery time judged against the report's target: until the client is served
    again, the desired replicas are back and (for a restarted API server) the API serves
    again, whichever is latest (None if the fault never ended)."""
    candidates = [
        v
        for v in (client.fault_to_recovered_ms, cluster.fault_to_ready_ms, api_back_ms)
        if v is not None and math.isfinite(v)
    ]
    if client.failed_requests and client.recovered_ms is None:
        return None
    if cluster.degraded_ms is not None and cluster.restored_ms is None:
        return None
    return max(candidates) if candidates else 0.0


# --------------------------------------------------------------------------- the experiment


def _wait_api(session: BenchSession, timeout_s: float) -> float:
    """Client time at which the API server answers /readyz again."""

    async def ready() -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                await session.kube.get("/readyz")
                return now_ms()
            except Exception:
                await asyncio.sleep(0.1)
        raise TimeoutError(f"the API server was not ready within {timeout_s:g} s")

    return session.run(ready())


def run_recovery(
    session: BenchSession,
    run: ExperimentRun,
    *,
    fault: str = "pod-delete",
    workload: str = "hello",
    replicas: int = 2,
    mode: str = "operator",
    probe_rate_hz: float = 20.0,
    settle_s: float = 2.0,
    observe_s: float = 30.0,
    down_s: float = 5.0,
    toleration_s: int | None = 2,
    timeout_s: float = 120.0,
) -> None:
    """Inject one fault while probing the function; record the probes, the events and
    the fault.

    pod-crash, pod-delete and node-kill: time zero is the fault. operator-kill: the
    operator Pod's container is killed (kill -9) and the function scaled up by one at
    once; the operator's node restarts the container (its restart count goes up), and
    the restarted operator must bring the new replica up: time zero is the kill,
    recovery the new replica ready. ``down_s`` is kept for plans that name it; a killed
    operator is down as long as its restart takes. apiserver-restart: time zero is the
    restart; the API must answer again and the function keep (or regain) its replicas.
    node-kill, operator-kill and apiserver-restart act on shared components.

    ``toleration_s`` sets the function's ``placement.tolerationSeconds`` (how long its
    Pods stay bound to a failed node); the CRD's default, like upstream's, is 300 s, so
    without it a node failure takes minutes to fail over. None keeps the default.
    """
    check_mode(mode)
    if fault not in FAULTS:
        raise ValueError(f"fault must be one of {', '.join(FAULTS)}, got {fault!r}")
    if fault == "operator-kill" and mode != "operator":
        raise ValueError("operator-kill needs mode='operator'")
    kind = ready_kind(mode)
    desired = replicas
    restore: list[str] = []
    spec = None
    if mode == "operator" and toleration_s is not None:
        spec = {"placement": {"tolerationSeconds": toleration_s}}
    with Workspace(session, run.experiment) as ws, recording(session, run, ws.namespace) as rec:
        deploy_one(
            session, ws.namespace, VICTIM, workload, rec,
            mode=mode, replicas=replicas, timeout_s=timeout_s, spec=spec,
        )  # fmt: skip
        wait_serving(session, ws.namespace, [VICTIM], timeout_s)
        prober = probe.Prober(deploy.gateway_url(ws.namespace, VICTIM), probe_rate_hz)
        session.run(prober.start())
        try:
            time.sleep(settle_s)
            pods = [
                p for p in rec.objects("Pod")
                if watch.pod_ready(p) and watch.function_of("Pod", p) == VICTIM
            ]  # fmt: skip
            victim = pods[0]
            pod_name, node = victim["metadata"]["name"], victim["spec"]["nodeName"]
            if fault == "pod-crash":
                event = faults.crash_container(ws.namespace, pod_name, node)
            elif fault == "pod-delete":
                event = session.run(faults.delete_pod(session.kube, ws.namespace, pod_name))
            elif fault == "node-kill":
                event = faults.kill_node(node)
                restore.append(node)
            elif fault == "operator-kill":
                event = session.run(faults.kill_operator(session.kube))
                desired = replicas + 1
                session.run(deploy.scale_function(session.kube, ws.namespace, VICTIM, desired))
            else:
                event = faults.restart_apiserver()
            rec.mark(event.kind, event.t_ms, detail=event.target)
            api_ready = _wait_api(session, timeout_s) if fault == "apiserver-restart" else None
            record = {
                "kind": event.kind,
                "target": event.target,
                "t_ms": event.t_ms,
                "detail": event.detail,
                "desired_replicas": desired,
                "api_ready_ms": api_ready,
            }
            run.write_raw_json(FAULT, record)

            def ready_count(r: watch.Recorder) -> int | None:
                obj = r.get(kind, VICTIM)
                if obj is None or (obj.get("spec") or {}).get("replicas") != desired:
                    return None
                return (obj.get("status") or {}).get("readyReplicas") or 0

            def degraded(r: watch.Recorder) -> bool:
                count = ready_count(r)
                return count is not None and count < desired

            def restored(r: watch.Recorder) -> bool:
                count = ready_count(r)
                return count is not None and count >= desired

            # First the fault shows (or, after a while, it evidently did not), then the
            # desired replicas come back. A killed node shows only once the node
            # controller's grace period has passed, so wait for that as long as it takes.
            show_s = observe_s if fault in ("node-kill", "apiserver-restart") else 5.0
            with contextlib.suppress(TimeoutError):
                session.run(rec.wait_for(degraded, min(observe_s, show_s)))
            try:
                session.run(rec.wait_for(restored, observe_s))
            except TimeoutError:
                log.warning("%s: not back to %d ready replicas in %g s", fault, desired, observe_s)
            time.sleep(min(2.0, observe_s))
        finally:
            session.run(prober.stop())
            run.write_raw(PROBES, prober.table())
            for node_name in restore:
                faults.start_node(node_name)


def analyse_recovery(raw: RawData) -> Analysis:
    params = raw.parameters
    mode = params["mode"]
    kind = ready_kind(mode)
    fault = raw.json(FAULT)
    fault_ms, api_ready = fault["t_ms"], fault.get("api_ready_ms")
    probes = raw.table(PROBES)
    client = client_recovery(probes, fault_ms)
    cluster = cluster_recovery(raw.events(), fault_ms, VICTIM, fault["desired_replicas"], kind)
    api_back = None if api_ready is None else api_ready - fault_ms
    total = recovery_ms(client, cluster, api_back)
    row = recovery_row(
        client, cluster, fault=params["fault"], mode=mode, replicas=params["replicas"],
        recovery_ms=total, toleration_s=params["toleration_s"], api_back_ms=api_back,
    )  # fmt: skip
    table = pd.DataFrame([row])

    result = Analysis()
    result.table("recovery", table)
    result.table("probes", probes)
    if total is not None:
        result.observe(metric_name(mode, "recovery_ms"), total, fault=params["fault"])
    result.count("fault_requests_total", len(probes))
    result.count("fault_requests_failed", int((~probes["ok"].astype(bool)).sum()))
    result.figure("probes", figures.probe_timeline(probes, fault_ms))
    result.figure("recovery", figures.recovery_bars(table))
    return result


EXPERIMENTS = (Experiment("recovery", run_recovery, analyse_recovery),)
