"""Deployment latency: ``concurrency`` functions created at once, each timed from the
create request to Ready, with that time split into phases from the watch events.

Raw data (``raw/``): ``watch_events.csv``; ``deployments.csv`` (per function: the
client's create time, when it was seen ready, whether it was, and any error);
``function_status.jsonl`` (operator mode: each WasmFunction's final status, whose
``timings`` are the operator's own clock).

Tables: ``functions`` (one row per function: outcome, milestones, operator timings,
status lag) and ``phases`` (one row per function and phase).
"""

from __future__ import annotations

import time

import pandas as pd

from wasmop.bench import figures, watch
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

DEPLOYMENTS = "deployments"
FUNCTION_STATUS = "function_status"


def run_deployment_latency(
    session: BenchSession,
    run: ExperimentRun,
    *,
    concurrency: int = 1,
    workload: str = "hello",
    replicas: int = 1,
    mode: str = "operator",
    timeout_s: float = 120.0,
) -> None:
    """Create ``concurrency`` functions at once and wait until each is ready (or timed
    out); record the events, the outcomes and the operator's status timings."""
    check_mode(mode)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    with Workspace(session, run.experiment) as ws, recording(session, run, ws.namespace) as rec:
        names = function_names(concurrency)
        outcomes = deploy_workload(
            session, ws.namespace, names, workload, rec,
            mode=mode, replicas=replicas, timeout_s=timeout_s,
        )  # fmt: skip
        run.write_raw(DEPLOYMENTS, outcomes_frame(outcomes))
        time.sleep(0.2)  # trailing status events
        if mode == "operator":
            statuses = [
                {"function": name, "status": (rec.get("WasmFunction", name) or {}).get("status")}
                for name in names
            ]
            run.write_raw(FUNCTION_STATUS, statuses)


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

    result = Analysis()
    result.table("functions", table)
    result.table("phases", phases)
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
    return result


EXPERIMENTS = (
    Experiment("deployment_latency", run_deployment_latency, analyse_deployment_latency),
)
