"""Deployment latency: ``concurrency`` functions created at once, each timed from the
create request to Ready, with that time split into phases from the watch events.

``source`` says where the functions' module comes from: the registry (``image``, the
default: the operator resolves the tag, each node pulls the digest once) or a ConfigMap
(``configmap``). Each run deploys a variant of the workload with a digest of its own, so
no node has it yet: the first Pod on each node pulls (or reads) and compiles it, later
Pods find it on the node. Each node says which in its Pod's ``Pulled`` Event.

Raw data (``raw/``): ``watch_events.csv``; ``deployments.csv`` (per function: the
client's create time, when it was seen ready, whether it was, and any error);
``function_status.jsonl`` (operator mode: each WasmFunction's final status, whose
``timings`` are the operator's own clock); ``pulls.jsonl`` (each Pod's ``Pulled`` Event:
pulled by that Pod, or already on its node).

Tables: ``functions`` (one row per function: outcome, milestones, operator timings,
status lag), ``phases`` (one row per function and phase) and ``pods`` (one row per Pod:
node, created and Ready times, its start, and whether it pulled the module).
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from wasmop.bench import deploy, figures, watch
from wasmop.bench.analysis import Analysis
from wasmop.bench.deploy import outcomes_frame
from wasmop.bench.experiments.base import (
    Experiment,
    RawData,
    check_mode,
    function_names,
    metric_name,
)
from wasmop.bench.experiments.steps import Workspace, deploy_workload, recording
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession
from wasmop.kube import Kube
from wasmop.kube.client import api_path

DEPLOYMENTS = "deployments"
FUNCTION_STATUS = "function_status"
PULLS = "pulls"


def run_deployment_latency(
    session: BenchSession,
    run: ExperimentRun,
    *,
    concurrency: int = 1,
    workload: str = "hello",
    replicas: int = 1,
    mode: str = "operator",
    timeout_s: float = 120.0,
    source: str = "image",
) -> None:
    """Create ``concurrency`` functions at once and wait until each is ready (or timed
    out); record the events, the outcomes and the operator's status timings."""
    check_mode(mode)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if source not in deploy.MODULE_SOURCES:
        raise ValueError(f"source must be one of {', '.join(deploy.MODULE_SOURCES)}")
    module = deploy.module_variant(built_module(workload), f"{run.experiment}/{run.run_id}")
    with Workspace(session, run.experiment) as ws, recording(session, run, ws.namespace) as rec:
        names = function_names(concurrency)
        outcomes = deploy_workload(
            session, ws.namespace, names, workload, rec,
            mode=mode, replicas=replicas, timeout_s=timeout_s, source=source, module=module,
        )  # fmt: skip
        run.write_raw(DEPLOYMENTS, outcomes_frame(outcomes))
        time.sleep(0.2)  # trailing status events
        if mode == "operator":
            statuses = [
                {"function": name, "status": (rec.get("WasmFunction", name) or {}).get("status")}
                for name in names
            ]
            run.write_raw(FUNCTION_STATUS, statuses)
        run.write_raw(PULLS, session.run(pulled_events(session.kube, ws.namespace)))


def built_module(workload: str) -> bytes:
    from wasmop.runtime.workloads import ensure_built, load_manifest

    return ensure_built(load_manifest())[workload].wasm_path.read_bytes()


async def pulled_events(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    """Each Pod's ``Pulled`` Event: whether its node pulled the module for it."""
    listing = await deploy.retrying(
        lambda: kube.list(api_path("v1", "events", namespace), fieldSelector="reason=Pulled")
    )
    return [
        {
            "pod": (item.get("involvedObject") or {}).get("name", ""),
            "node": (item.get("source") or {}).get("host", ""),
            "pulled": "already present" not in (item.get("message") or ""),
            "message": item.get("message") or "",
        }
        for item in listing.get("items", [])
        if (item.get("involvedObject") or {}).get("kind") == "Pod"
    ]


def pod_starts(raw: RawData) -> pd.DataFrame:
    """One row per Pod: node, first seen, first Ready, start (ms), whether it pulled."""
    columns = ["pod", "function", "node", "created_ms", "ready_ms", "start_ms", "module"]
    events = raw.events()
    pods = events[events["kind"] == "Pod"]
    pulls = (
        {r["pod"]: r["pulled"] for r in raw.jsonl(PULLS)} if raw.exists(f"{PULLS}.jsonl") else {}
    )
    rows = []
    for name, rows_of in pods.groupby("name", sort=True):
        ready = rows_of[rows_of["ready"].astype(bool)]
        if ready.empty:
            continue
        created, first_ready = float(rows_of["t_ms"].min()), float(ready["t_ms"].min())
        nodes = [n for n in rows_of["node"].dropna() if n]
        pulled = pulls.get(name)
        rows.append(
            {
                "pod": name,
                "function": rows_of["function"].iloc[0],
                "node": nodes[0] if nodes else "",
                "created_ms": created,
                "ready_ms": first_ready,
                "start_ms": first_ready - created,
                "module": "" if pulled is None else ("pulled" if pulled else "on node"),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def operator_timings(raw: RawData) -> pd.DataFrame:
    """One row per function: its ``status.timings`` as epoch milliseconds."""
    if not raw.exists(f"{FUNCTION_STATUS}.jsonl"):
        return pd.DataFrame(columns=["function"])
    rows = [
        {"function": r["function"], **watch.operator_timings({"status": r.get("status")})}
        for r in raw.jsonl(FUNCTION_STATUS)
    ]
    return pd.DataFrame(rows)


def analyse_deployment_latency(raw: RawData) -> Analysis:
    params = raw.parameters
    concurrency, replicas, mode = params["concurrency"], params["replicas"], params["mode"]
    outcomes = raw.table(DEPLOYMENTS)
    milestones = watch.function_milestones(
        raw.events(), dict(zip(outcomes["function"], outcomes["created_ms"], strict=True)), replicas
    )
    table = outcomes.merge(milestones.drop(columns=["created_ms"]), on="function", how="left")
    table = table.merge(operator_timings(raw), on="function", how="left")
    table["status_lag_ms"] = table["function_ready_ms"] - table["pods_ready_ms"]
    for column, value in (("concurrency", concurrency), ("replicas", replicas), ("mode", mode)):
        table[column] = value
    phases = watch.phase_durations(milestones)
    phases["concurrency"] = concurrency

    # Hand-written Deployments mount a ConfigMap; runs from before the parameter did too.
    source = params.get("source", "configmap") if mode == "operator" else "configmap"
    table["source"] = source
    pods = pod_starts(raw)
    pods["source"] = source

    result = Analysis()
    result.table("functions", table)
    result.table("phases", phases)
    result.table("pods", pods)
    if source == "image":
        for label, metric in (("pulled", "first_pod_start_ms"), ("on node", "cached_pod_start_ms")):
            starts = pods.loc[pods["module"] == label, "start_ms"]
            result.observe(metric_name(mode, f"image_{metric}"), starts, concurrency=concurrency)
    else:
        result.observe(
            metric_name(mode, "configmap_pod_start_ms"), pods["start_ms"], concurrency=concurrency
        )
    ok = table[table["ok"].astype(bool)]
    # The report's "deployment < 2 s" is about one function; batches have their own metric
    # (and the "100 at once, all succeed" target).
    latency = "deploy_latency_ms" if concurrency == 1 else "concurrent_deploy_latency_ms"
    result.observe(metric_name(mode, latency), ok["create_to_ready_ms"], concurrency=concurrency)
    if mode == "operator":
        lag = "status_lag_ms" if concurrency == 1 else "concurrent_status_lag_ms"
        result.observe(lag, ok["status_lag_ms"].dropna(), concurrency=concurrency)
        result.count("concurrent_deploy_total", concurrency)
        result.count("concurrent_deploy_ready", int(table["ok"].astype(bool).sum()))
    result.figure("deployment_cdf", figures.deployment_cdf(table))
    result.figure("deployment_phases", figures.phase_breakdown(phases))
    result.figure("pod_starts", figures.pod_start_cdf(pods))
    return result


EXPERIMENTS = (
    Experiment("deployment_latency", run_deployment_latency, analyse_deployment_latency),
)
