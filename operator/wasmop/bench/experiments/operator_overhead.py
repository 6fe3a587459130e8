"""Operator overhead: the operator process's CPU (millicores) and memory (RSS) while idle,
while deploying ``functions_count`` functions, while holding them and while deleting
them.

Raw data: ``samples.csv`` (one row per sample of the operator process),
``watch_events.csv`` (with a ``phase`` marker at the start of each phase, the phase in
its detail) and ``deployments.csv`` (each function's outcome). Tables: ``samples``
(with the phase each belongs to), ``phases`` (statistics per phase), ``deployments``.
"""

from __future__ import annotations

import time

import pandas as pd

from wasmop.bench import deploy, figures, watch
from wasmop.bench.analysis import Analysis
from wasmop.bench.experiments.base import Experiment, RawData, function_names
from wasmop.bench.experiments.steps import Workspace, deploy_workload, recording
from wasmop.bench.process_sampler import ProcessSampler, operator_pid
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession

SAMPLES = "samples"
DEPLOYMENTS = "deployments"
PHASE = "phase"  # the marker at the start of each phase


def run_operator_overhead(
    session: BenchSession,
    run: ExperimentRun,
    *,
    functions_count: int = 10,
    workload: str = "hello",
    idle_s: float = 10.0,
    hold_s: float = 10.0,
    interval_s: float = 0.5,
    timeout_s: float = 180.0,
) -> None:
    """Sample the operator every ``interval_s`` through the four phases, marking each."""
    if operator_pid() is None:
        raise RuntimeError("no operator process found (is it running? 'wasmop cluster status')")
    sampler = ProcessSampler(operator_pid, interval_s, label="operator")
    with Workspace(session, run.experiment) as ws, recording(session, run, ws.namespace) as rec:
        sampler.start()
        try:
            rec.mark(PHASE, detail="idle")
            time.sleep(idle_s)
            rec.mark(PHASE, detail="deploying")
            names = function_names(functions_count)
            outcomes = deploy_workload(
                session, ws.namespace, names, workload, rec,
                mode="operator", replicas=1, timeout_s=timeout_s,
            )  # fmt: skip
            run.write_raw(DEPLOYMENTS, deploy.outcomes_frame(outcomes))
            rec.mark(PHASE, detail="holding")
            time.sleep(hold_s)
            rec.mark(PHASE, detail="deleting")
            session.run(deploy.delete_functions(session.kube, ws.namespace, names))

            def gone(r: watch.Recorder) -> bool:
                return not r.objects("WasmFunction") and not r.objects("Deployment")

            session.run(rec.wait_for(gone, timeout_s))
            rec.mark(PHASE, detail="idle-after")
            time.sleep(min(idle_s, 5.0))
        finally:
            run.write_raw(SAMPLES, sampler.stop())


def analyse_operator_overhead(raw: RawData) -> Analysis:
    functions_count = raw.parameters["functions_count"]
    marks = raw.marks(PHASE)
    bounds = pd.DataFrame({"phase": marks["detail"].tolist(), "start_ms": marks["t_ms"].tolist()})
    samples = raw.table(SAMPLES).sort_values("t_ms")
    if not samples.empty:
        samples = pd.merge_asof(samples, bounds, left_on="t_ms", right_on="start_ms")
        samples = samples.drop(columns=["start_ms"])
    samples["functions"] = functions_count
    stats = (
        samples.groupby("phase", sort=False)
        .agg(
            samples=("cpu_millicores", "size"),
            cpu_millicores_mean=("cpu_millicores", "mean"),
            cpu_millicores_p95=("cpu_millicores", lambda s: s.quantile(0.95)),
            rss_mib_mean=("rss_mib", "mean"),
            rss_mib_max=("rss_mib", "max"),
        )
        .reset_index()
    )
    result = Analysis()
    result.table("samples", samples)
    result.table("phases", stats)
    result.table("deployments", raw.table(DEPLOYMENTS))
    result.observe("operator_cpu_millicores", samples["cpu_millicores"], functions=functions_count)
    result.observe("operator_rss_mib", samples["rss_mib"], functions=functions_count)
    result.figure("operator_resources", figures.resource_timeline(samples))
    return result


EXPERIMENTS = (Experiment("operator_overhead", run_operator_overhead, analyse_operator_overhead),)
