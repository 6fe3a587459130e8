"""Request latency and errors under load: the workloads of a mix deployed, Locust run
headless through the gateway, exact quantiles and the error rate from its raw log; and
beside it what of that latency is the harness.

Locust shares the machine's two cores with the cluster, and its own per-request cost is
in every number it reports. So the run measures two more things (``floor=True``):

* the **probe**: while Locust runs, a keep-alive aiohttp client sends ``probe_rate_hz``
  requests a second to the mix's first function through the gateway; its latency is the
  system's with little client overhead;
* the **floor**: then the same Locust load (users, rate, time, paths) goes to a trivial
  endpoint in a process of its own on 127.0.0.1 (:mod:`wasmop.bench.floor`), with the
  probe beside it; Locust's latency there is the generator's own floor.

Raw data: ``watch_events.csv``; Locust's output in ``locust/`` (system) and
``locust_floor/`` (the raw per-request log, the per-second history, the exact final
counts, the command and exit status); ``probes.csv`` (every probe request, with its
``target``: system or floor). Tables: ``requests`` (one row per request), ``request_summary``
(per function), ``load_history`` (Locust's per-second statistics), ``locust_final``,
``floor_requests``, ``probes``, and ``latency_sources`` (system, floor and probe side by
side: n and the quantiles with their 95 % intervals).
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from wasmop.bench import deploy, figures, probe
from wasmop.bench.analysis import Analysis
from wasmop.bench.experiments.base import Experiment, RawData, check_mode, metric_name
from wasmop.bench.experiments.steps import Workspace, deploy_one, recording, wait_serving
from wasmop.bench.floor import floor_endpoint
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
from wasmop.bench.stats import describe

LOCUST = "locust"
LOCUST_FLOOR = "locust_floor"
PROBES = "probes"
SYSTEM, FLOOR = "system", "floor"  # where a request went: the gateway, or the trivial endpoint


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
    floor: bool = True,
    probe_rate_hz: float = 20.0,
) -> None:
    """Deploy each workload of ``mix`` under its own name, then run Locust through the
    gateway into ``raw/locust/`` (its exit status is recorded, not raised: failures are
    results) with the probe beside it; with ``floor``, the same load and probe against a
    trivial endpoint into ``raw/locust_floor/``."""
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
            probes = [_probed(session, SYSTEM, config, LOCUST, run, entries[0], probe_rate_hz)]
            if floor:
                with floor_endpoint() as url:
                    floor_config = replace(config, host=url)
                    probes.append(
                        _probed(session, FLOOR, floor_config, LOCUST_FLOOR, run, entries[0],
                                probe_rate_hz)
                    )  # fmt: skip
            run.write_raw(PROBES, pd.concat(probes, ignore_index=True))


def _probed(
    session: BenchSession,
    target: str,
    config: LocustConfig,
    folder: str,
    run: ExperimentRun,
    entry: MixEntry,
    rate_hz: float,
) -> pd.DataFrame:
    """Locust with ``config`` into ``raw/<folder>/``, the probe on ``entry`` beside it;
    returns the probe's requests."""
    prober = probe.Prober(f"{config.host}{entry.target}", rate_hz)
    session.run(prober.start())
    try:
        run_locust(config, run.paths.raw / folder, check=False)
    finally:
        session.run(prober.stop())
    frame = prober.table()
    frame.insert(0, "target", target)
    return frame


def latency_by_source(
    requests: pd.DataFrame, floor_requests: pd.DataFrame, probes: pd.DataFrame
) -> dict[tuple[str, str], pd.Series]:
    """Successful requests' latency by (target, client): Locust through the gateway,
    Locust to the trivial endpoint, the probe to each (tables of one run or of many)."""
    sources = {}
    for (target, client), table in (
        ((SYSTEM, "locust"), requests),
        ((FLOOR, "locust"), floor_requests),
        ((SYSTEM, "probe"), probes[probes["target"] == SYSTEM] if "target" in probes else probes),
        ((FLOOR, "probe"), probes[probes["target"] == FLOOR] if "target" in probes else probes),
    ):
        if table.empty or "ok" not in table:
            continue
        latencies = table.loc[table["ok"].astype(bool), "latency_ms"]
        if not latencies.empty:
            sources[(target, client)] = latencies
    return sources


def latency_sources(sources: dict[tuple[str, str], pd.Series]) -> pd.DataFrame:
    """One row per (target, client): n and the latency quantiles with their 95 %
    intervals, so the system, the floor and the probe stand side by side."""
    rows = []
    for (target, client), latencies in sources.items():
        stats = describe(latencies, ci=True)
        rows.append({"target": target, "client": client,
                     **{f"latency_ms_{k}": v for k, v in stats.items()}})  # fmt: skip
    return pd.DataFrame(rows)


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
    probes = raw.table(PROBES) if raw.exists(f"{PROBES}.csv") else pd.DataFrame()
    floor_requests = (
        read_raw_log(raw.path(LOCUST_FLOOR)) if raw.exists(LOCUST_FLOOR) else pd.DataFrame()
    )
    if not probes.empty:
        result.table("probes", probes)
    if not floor_requests.empty:
        result.table("floor_requests", floor_requests)
    sources = latency_by_source(requests, floor_requests, probes)
    for (target, client), latencies in sources.items():
        if (target, client) != (SYSTEM, "locust"):
            name = f"{client}_latency_ms" if target == SYSTEM else f"{client}_floor_latency_ms"
            result.observe(metric_name(mode, name), latencies)
    result.table("latency_sources", latency_sources(sources))
    result.figure(
        "latency_sources",
        figures.latency_sources(sources),
        "Request latency of the same load measured three ways: Locust through the gateway"
        " (the system), Locust against a trivial endpoint on the same machine (the load"
        " generator's floor), and a keep-alive aiohttp probe through the gateway (and to the"
        " trivial endpoint); ECDFs, each median's 95 % CI at 0.5.",
    )
    result.figure("latency_cdf", figures.latency_cdf(requests))
    result.figure("throughput", figures.throughput_timeline(requests))
    return result


EXPERIMENTS = (Experiment("load_latency", run_load_latency, analyse_load_latency),)
