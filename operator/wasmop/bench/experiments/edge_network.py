"""Edge network conditions: request latency and errors of a function pinned to one node
under each combination of added delay and loss on that node's link (the node agent's
link emulation).

Raw data: ``probes.csv`` (every probe request, with the delay and loss in force) and
``watch_events.csv``. Tables: ``probes`` and ``conditions`` (per delay and loss:
quantiles and failures).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd

from wasmop.bench import deploy, faults, figures, probe
from wasmop.bench.analysis import Analysis
from wasmop.bench.experiments.base import Experiment, RawData, check_mode
from wasmop.bench.experiments.steps import Workspace, deploy_one, recording, wait_serving
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession
from wasmop.bench.stats import describe
from wasmop.kube.client import api_path
from wasmop.wellknown import ZONE_LABEL

EDGE = "edge"  # the pinned function
PROBES = "probes"


def run_edge_network(
    session: BenchSession,
    run: ExperimentRun,
    *,
    delays_ms: Sequence[float] = (0.0, 50.0),
    loss_percent: Sequence[float] = (0.0,),
    node: str = "wasm-node-2",
    workload: str = "hello",
    mode: str = "operator",
    rate_hz: float = 10.0,
    seconds_per_condition: float = 5.0,
    timeout_s: float = 120.0,
) -> None:
    """Probe the pinned function ``seconds_per_condition`` under each delay and loss; the
    link is cleared afterwards whatever happens."""
    check_mode(mode)
    labels = session.run(session.kube.get(api_path("v1", "nodes", None, node)))["metadata"][
        "labels"
    ]
    zone = labels.get(ZONE_LABEL)
    frames = []
    with Workspace(session, run.experiment) as ws, recording(session, run, ws.namespace) as rec:
        spec = {"placement": {"zone": zone}} if zone else None
        if mode == "plain":
            session.run(deploy.ensure_module(session.kube, ws.namespace, workload))
            body = deploy.plain_deployment(EDGE, deploy.module_configmap_name(workload))
            body["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
            created = session.run(deploy.create_plain(session.kube, ws.namespace, body))
            session.run(deploy.wait_replicas_ready(rec, "Deployment", EDGE, 1, created, timeout_s))
        else:
            deploy_one(
                session, ws.namespace, EDGE, workload, rec,
                mode=mode, replicas=1, timeout_s=timeout_s, spec=spec,
            )  # fmt: skip
        wait_serving(session, ws.namespace, [EDGE], timeout_s)
        url = deploy.gateway_url(ws.namespace, EDGE)
        try:
            for delay in delays_ms:
                for loss in loss_percent:
                    faults.set_link(node, delay, loss)
                    prober = probe.Prober(url, rate_hz, timeout_s=max(5.0, delay / 1000 * 20))
                    session.run(prober.start())
                    time.sleep(seconds_per_condition)
                    session.run(prober.stop())
                    frame = prober.table()
                    frame["delay_ms"], frame["loss_percent"] = delay, loss
                    frames.append(frame)
        finally:
            faults.clear_link(node)
            if frames:
                run.write_raw(PROBES, pd.concat(frames, ignore_index=True))


def condition_summary(probes: pd.DataFrame) -> pd.DataFrame:
    """Per delay and loss: requests, failures, and quantiles of the successful ones with
    their 95 % intervals."""
    rows = []
    for (delay, loss), group in probes.groupby(["delay_ms", "loss_percent"], sort=True):
        stats = describe(group.loc[group["ok"].astype(bool), "latency_ms"], ci=True)
        rows.append(
            {
                "delay_ms": delay,
                "loss_percent": loss,
                "requests": len(group),
                "failures": int((~group["ok"].astype(bool)).sum()),
                **{f"latency_ms_{k}": v for k, v in stats.items() if k != "n"},
            }
        )
    return pd.DataFrame(rows)


def analyse_edge_network(raw: RawData) -> Analysis:
    probes = raw.table(PROBES)
    probes["node"] = raw.parameters["node"]
    summary = condition_summary(probes)
    result = Analysis()
    result.table("probes", probes)
    result.table("conditions", summary)
    for (delay, loss), group in probes.groupby(["delay_ms", "loss_percent"]):
        result.observe(
            "edge_latency_ms",
            group.loc[group["ok"].astype(bool), "latency_ms"],
            delay_ms=delay,
            loss_percent=loss,
        )
    result.figure("edge_latency", figures.edge_latency(summary))
    return result


EXPERIMENTS = (Experiment("edge_network", run_edge_network, analyse_edge_network),)
