"""Request latency and errors under load: the workloads of a mix deployed, Locust run
headless through the gateway, exact quantiles and the error rate from its raw log.

Raw data: ``watch_events.csv`` and Locust's output in ``locust/`` (the raw per-request
log, the per-second history, the exact final counts, the command and exit status).
Tables: ``requests`` (one row per request), ``request_summary`` (per function),
``load_history`` (Locust's per-second statistics), ``locust_final``.
"""

from __future__ import annotations

from wasmop.bench import deploy, figures
from wasmop.bench.analysis import Analysis
from wasmop.bench.experiments.base import Experiment, RawData, check_mode, metric_name
from wasmop.bench.experiments.steps import Workspace, deploy_one, recording, wait_serving
from wasmop.bench.load import (
    LocustConfig,
    read_final,
    read_history,
    read_raw_log,
    request_summary,
    run_locust,
)
from wasmop.bench.mix import MixEntry, parse_mix
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession

LOCUST = "locust"


def workload_mix(namespace: str, mix: str) -> list[MixEntry]:
    """``hello@3,fib?n=20`` (workloads, deployed under their own names) as entries."""
    return parse_mix(",".join(f"{namespace}/{item.strip()}" for item in mix.split(",") if item))


def run_load_latency(
    session: BenchSession,
    run: ExperimentRun,
    *,
    mix: str = "hello",
    users: int = 10,
    spawn_rate: float = 10.0,
    run_time_s: float = 10.0,
    user_rps: float = 10.0,
    replicas: int = 2,
    mode: str = "operator",
    fail_ratio: float = 0.001,
    timeout_s: float = 120.0,
) -> None:
    """Deploy each workload of ``mix`` under its own name, then run Locust through the
    gateway into ``raw/locust/`` (its exit status is recorded, not raised: failures are
    results)."""
    check_mode(mode)
    with Workspace(session, run.experiment) as ws:
        entries = workload_mix(ws.namespace, mix)
        names = sorted({e.service for e in entries})
        with recording(session, run, ws.namespace) as rec:
            for name in names:
                deploy_one(
                    session, ws.namespace, name, name, rec,
                    mode=mode, replicas=replicas, timeout_s=timeout_s,
                )  # fmt: skip
            wait_serving(session, ws.namespace, names, timeout_s)
            config = LocustConfig(
                host=deploy.gateway_base(),
                functions=tuple(entries),
                users=users,
                spawn_rate=spawn_rate,
                run_time_s=run_time_s,
                user_rps=user_rps,
                fail_ratio=fail_ratio,
            )
            run_locust(config, run.paths.raw / LOCUST, check=False)


def analyse_load_latency(raw: RawData) -> Analysis:
    mode = raw.parameters["mode"]
    locust = raw.path(LOCUST)
    requests = read_raw_log(locust)
    result = Analysis()
    result.table("requests", requests)
    result.table("request_summary", request_summary(requests))
    result.table("load_history", read_history(locust))
    result.table("locust_final", read_final(locust))
    result.observe(
        metric_name(mode, "request_latency_ms"), requests.loc[requests["ok"], "latency_ms"]
    )
    failed = int((~requests["ok"]).sum())
    result.count(metric_name(mode, "requests_total"), len(requests))
    result.count(metric_name(mode, "requests_failed"), failed)
    result.figure("latency_cdf", figures.latency_cdf(requests))
    result.figure("throughput", figures.throughput_timeline(requests))
    return result


EXPERIMENTS = (Experiment("load_latency", run_load_latency, analyse_load_latency),)
