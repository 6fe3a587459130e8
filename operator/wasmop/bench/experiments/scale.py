"""Scale: what the platform costs at rest as functions are added in waves, and how it grows.

At each size (``sizes``, ascending) the run adds functions until there are that many
(``wave_concurrency`` creations in flight: a steady wave, not a burst), waits until all
are Ready, and then measures:

* the operator process at rest (``rest_s``; ``final_rest_s`` at the largest size): CPU
  in millicores and RSS, sampled every ``interval_s``;
* the operator's API requests at rest, per minute, from the API server's audit log
  (its reads are audited at Metadata level): what holding N functions costs the server;
* a full resync (``POST /-/resync`` on the operator's metrics port): its duration and the
  operator's CPU during it;
* create-to-Ready of ``probes`` probe functions, one at a time (created, timed, deleted);
* the gateway: request latency of ``gateway_requests`` sequential requests to one of the
  functions, and the gateway's RSS;
* each node agent's RSS and its Pods, for the memory a node spends per Pod.

Raw data: ``sizes.csv`` (one row per size: functions, wave time, rest window, resync),
``samples.csv`` (operator samples, with their size and phase), ``probes.csv``,
``gateway_requests.csv``, ``agents.csv``, ``operator_requests.csv`` (the operator's
audited requests during each rest window), ``watch_events.csv``.

The analysis (:func:`analyse_scale`) sets every figure against the number of functions,
fits ``a + b·n`` (and ``a + b·n + c·n²``) to each, names the growth (constant, linear or
worse; :func:`classify_growth`) and projects it to :data:`PROJECT_TO` functions.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pandas as pd
import psutil
from matplotlib.figure import Figure

from wasmop.bench import audit, deploy, plots, watch
from wasmop.bench.analysis import Analysis
from wasmop.bench.clock import now_ms
from wasmop.bench.experiments.base import Experiment, RawData
from wasmop.bench.experiments.steps import Workspace, recording
from wasmop.bench.process_sampler import ProcessSampler, component_pid, gateway_pid, operator_pid
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession
from wasmop.bench.stats import describe
from wasmop.kube import Kube
from wasmop.kube.client import api_path
from wasmop.wellknown import RUNTIME_LABEL

SIZES = "sizes"
SAMPLES = "samples"
PROBES = "probes"
GATEWAY = "gateway_requests"
AGENTS = "agents"
REQUESTS = "operator_requests"
PROJECT_TO = 10_000
# Growth over the measured range below this share of the mean, or below the metric's
# resolution (FLAT_WITHIN), counts as constant.
FLAT_SHARE = 0.10
MIN_SIZES_FOR_WORSE = 5  # a parabola through fewer points fits noise
METRICS: dict[str, str] = {
    # column of the by_size table: axis label
    "operator_rss_mib": "operator RSS (MiB)",
    "operator_idle_cpu_millicores": "operator CPU at rest (millicores)",
    "operator_requests_per_minute": "operator API requests at rest (per minute)",
    "resync_ms": "full resync (ms)",
    "resync_cpu_ms": "operator CPU time per resync (ms)",
    "probe_create_to_ready_ms": "probe create to Ready, median (ms)",
    "gateway_p50_ms": "gateway request latency, median (ms)",
    "gateway_rss_mib": "gateway RSS (MiB)",
    "agent_mib_per_pod": "node agent memory per Pod (MiB)",
}
# What each figure's measurement cannot tell apart on this machine (CPU sampled in 10 ms
# ticks, latencies on a shared machine): a change within it over the whole range is none.
FLAT_WITHIN: dict[str, float] = {
    "operator_rss_mib": 4.0,
    "operator_idle_cpu_millicores": 5.0,
    "operator_requests_per_minute": 2.0,
    "resync_ms": 10.0,
    "resync_cpu_ms": 10.0,
    "probe_create_to_ready_ms": 50.0,
    "gateway_p50_ms": 1.0,
    "gateway_rss_mib": 4.0,
    "agent_mib_per_pod": 0.05,
}


@dataclass(frozen=True)
class Capacity:
    nodes: int
    pods_allowed: int
    pods_running: int

    @property
    def free(self) -> int:
        return self.pods_allowed - self.pods_running


async def wasm_capacity(kube: Kube) -> Capacity:
    """Pods the Ready wasm nodes advertise (``allocatable.pods``) and those bound there."""
    nodes = (await kube.list(api_path("v1", "nodes"), labelSelector=RUNTIME_LABEL))["items"]
    ready = [
        n
        for n in nodes
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (n.get("status") or {}).get("conditions") or []
        )
    ]
    allowed = sum(int((n["status"].get("allocatable") or {}).get("pods", 0)) for n in ready)
    names = {n["metadata"]["name"] for n in ready}
    pods = (await kube.list(api_path("v1", "pods")))["items"]
    running = sum(1 for p in pods if (p.get("spec") or {}).get("nodeName") in names)
    return Capacity(len(ready), allowed, running)


def operator_url(path: str) -> str:
    from wasmop.cluster import manager
    from wasmop.cluster.layout import StateLayout

    port = manager.load_settings(StateLayout.default()).operator_metrics_port
    return f"http://127.0.0.1:{port}{path}"


def trigger_resync() -> dict[str, Any]:
    """One full resync now; its answer plus the operator's CPU seconds meanwhile."""
    pid = operator_pid()
    process = psutil.Process(pid) if pid else None
    before = sum(process.cpu_times()[:2]) if process else float("nan")
    request = urllib.request.Request(operator_url("/-/resync"), method="POST", data=b"")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())
    wall = time.perf_counter() - started
    after = sum(process.cpu_times()[:2]) if process else float("nan")
    return {
        "resync_ms": float(answer["seconds"]) * 1000,
        "resync_wall_ms": wall * 1000,
        "resync_cpu_s": after - before,
        "resync_listed": answer.get("functions"),
        "resync_queued": answer.get("queued"),
    }


async def create_wave(
    kube: Kube, namespace: str, names: Sequence[str], workload: str, concurrency: int
) -> None:
    """Create the functions with at most ``concurrency`` creations in flight."""
    limit = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with limit:
            manifest = deploy.function_manifest(name, workload)
            await deploy.retrying(lambda: deploy.create_function(kube, namespace, manifest))

    await asyncio.gather(*(one(n) for n in names))


async def wait_all_ready(recorder: watch.Recorder, count: int, timeout_s: float) -> None:
    """Until ``count`` functions whose names start with ``s-`` report Ready."""

    def ready(rec: watch.Recorder) -> bool:
        done = sum(
            1
            for obj in rec.objects("WasmFunction")
            if obj["metadata"]["name"].startswith("s-") and watch.function_ready(obj)
        )
        return done >= count

    deadline = time.monotonic() + timeout_s
    while not ready(recorder):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not all {count} functions Ready within {timeout_s:g} s")
        await asyncio.sleep(0.25)


async def gateway_latencies(url: str, count: int) -> list[dict[str, Any]]:
    rows = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for i in range(count):
            started = time.perf_counter()
            try:
                async with http.get(url) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = 0
                error = str(exc)
            else:
                error = ""
            latency = (time.perf_counter() - started) * 1000
            rows.append({"request": i, "status": status, "latency_ms": latency, "ok": status == 200,
                         "error": error})  # fmt: skip
    return rows


def agents_memory(size: int) -> list[dict[str, Any]]:
    from wasmop.cluster import manager
    from wasmop.cluster.layout import StateLayout

    rows = []
    for node in manager.load_settings(StateLayout.default()).node_names():
        pid = component_pid(node)
        if pid:
            rss = psutil.Process(pid).memory_info().rss / 2**20
            rows.append({"functions": size, "node": node, "rss_mib": rss})
    return rows


async def pods_per_node(kube: Kube) -> dict[str, int]:
    counts: dict[str, int] = {}
    for pod in (await kube.list(api_path("v1", "pods")))["items"]:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and not pod["metadata"].get("deletionTimestamp"):
            counts[node] = counts.get(node, 0) + 1
    return counts


def restart_operator(session: BenchSession, timeout_s: float = 60.0) -> bool:
    """Restart the embedded cluster's operator (kill -9 of its Pod's container, which its
    node restarts) and wait until the new process is ready, so that its memory starts
    from what it holds, not from what an earlier experiment made it grow to. False where
    no operator Pod runs (an operator started by hand is left as it is)."""
    from wasmop.bench import faults

    before = operator_pid()
    try:
        session.run(faults.kill_operator(session.kube))
    except faults.FaultError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if operator_pid() not in (None, before):
            try:
                with urllib.request.urlopen(health_url("/readyz"), timeout=2) as response:
                    if response.status == 200:
                        time.sleep(3.0)  # its watches list what exists, the first resync runs
                        return True
            except OSError:
                pass
        time.sleep(0.5)
    raise RuntimeError(f"the operator was not ready {timeout_s:g} s after its restart")


def health_url(path: str) -> str:
    from wasmop.cluster import manager
    from wasmop.cluster.layout import StateLayout

    port = manager.load_settings(StateLayout.default()).operator_health_port
    return f"http://127.0.0.1:{port}{path}"


@dataclass
class ScaleRecord:
    """What a scale run has measured so far, one list per raw table."""

    sizes: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    gateway: list[dict[str, Any]] = field(default_factory=list)
    agents: list[dict[str, Any]] = field(default_factory=list)
    requests: list[pd.DataFrame] = field(default_factory=list)

    def write(self, run: ExperimentRun) -> None:
        run.write_raw(SIZES, pd.DataFrame(self.sizes))
        run.write_raw(PROBES, pd.DataFrame(self.probes))
        run.write_raw(GATEWAY, pd.DataFrame(self.gateway))
        run.write_raw(AGENTS, pd.DataFrame(self.agents))
        requests = (
            pd.concat(self.requests, ignore_index=True)
            if self.requests
            else pd.DataFrame(columns=[*audit.WRITE_COLUMNS, "functions"])
        )
        run.write_raw(REQUESTS, requests)


@dataclass(frozen=True)
class SizeMeasurement:
    """How to measure at one size: the settings of :func:`measure_size`."""

    workload: str
    rest_s: float
    probes: int
    gateway_requests: int
    timeout_s: float
    audit_log: Path


def measure_size(
    session: BenchSession,
    namespace: str,
    rec: watch.Recorder,
    how: SizeMeasurement,
    record: ScaleRecord,
    row: dict[str, Any],
    served: str | None,
) -> None:
    """Everything measured at one size, its functions all Ready: the operator at rest and
    its audited requests, a full resync, the probes, the gateway (on ``served``, a
    function of the run) and the node agents. ``row`` becomes the size's row."""
    kube, size = session.kube, row["functions"]
    time.sleep(3.0)  # trailing status writes of the wave
    tail = audit.AuditTail(how.audit_log) if how.audit_log.exists() else None
    rec.mark("rest", detail=str(size))
    row["rest_start_ms"] = now_ms()
    time.sleep(how.rest_s)
    row["rest_end_ms"] = now_ms()
    if tail is not None:
        time.sleep(2.0)  # the audit log is written in batches of a second
        requests = audit.frame(tail.read(reads=True))
        own = requests[requests["actor"].str.startswith("operator")]
        record.requests.append(own.assign(functions=size))
    rec.mark("resync", detail=str(size))
    row.update(trigger_resync())
    for i in range(how.probes):
        name = f"probe-{size}-{i}"
        manifest = deploy.function_manifest(name, how.workload)
        [outcome] = session.run(
            deploy.deploy_functions(kube, namespace, [manifest], rec, how.timeout_s)
        )
        record.probes.append({"functions": size, "probe": i, "ok": outcome.ok,
                              "create_to_ready_ms": outcome.latency_ms})  # fmt: skip
        session.run(deploy.delete_functions(kube, namespace, [name]))
    if served:
        url = deploy.gateway_url(namespace, served)
        for r in session.run(gateway_latencies(url, how.gateway_requests)):
            record.gateway.append({"functions": size, **r})
    gateway = gateway_pid()
    row["gateway_rss_mib"] = (
        psutil.Process(gateway).memory_info().rss / 2**20 if gateway else float("nan")
    )
    pods = session.run(pods_per_node(kube))
    for agent in agents_memory(size):
        record.agents.append({**agent, "pods": pods.get(agent["node"], 0)})
    record.sizes.append(row)


def check_capacity(session: BenchSession, largest: int) -> None:
    """Fail before anything is created when the wasm nodes cannot hold the largest size."""
    capacity = session.run(wasm_capacity(session.kube))
    needed = largest + 1  # and one probe function at a time
    if capacity.free < needed:
        raise RuntimeError(
            f"{needed} functions need {needed} Pod slots on wasm nodes; the {capacity.nodes}"
            f" Ready nodes allow {capacity.pods_allowed} and run {capacity.pods_running}."
            " Start the cluster with more nodes ('wasmop cluster up --nodes N'; a node"
            " advertises 110 Pods) or give the plan a cluster: {nodes: N} section."
        )


def run_scale(
    session: BenchSession,
    run: ExperimentRun,
    *,
    sizes: Sequence[int] = (10, 50, 100, 200),
    workload: str = "hello",
    wave_concurrency: int = 20,
    rest_s: float = 15.0,
    final_rest_s: float | None = None,
    probes: int = 3,
    gateway_requests: int = 50,
    interval_s: float = 0.5,
    wave_timeout_s: float = 600.0,
    timeout_s: float = 120.0,
    fresh_operator: bool = True,
) -> None:
    """Measure with no functions, then add functions in waves up to each of ``sizes`` and
    measure at each (module doc). ``fresh_operator`` restarts the operator first."""
    sizes = sorted(int(s) for s in sizes)
    if not sizes or sizes[0] < 1:
        raise ValueError("sizes must be positive numbers of functions")
    if operator_pid() is None:
        raise RuntimeError("no operator process found (is it running? 'wasmop cluster status')")
    check_capacity(session, sizes[-1])
    from wasmop.cluster.layout import StateLayout

    restarted = restart_operator(session) if fresh_operator else False
    how = SizeMeasurement(workload, rest_s, probes, gateway_requests, timeout_s,
                          StateLayout.default().audit_log)  # fmt: skip
    last = replace(how, rest_s=final_rest_s or rest_s)
    record = ScaleRecord()
    sampler = ProcessSampler(operator_pid, interval_s, label="operator")
    workspace = Workspace(session, run.experiment, delete_wait_s=max(60.0, sizes[-1] * 0.5))
    with workspace as ws, recording(session, run, ws.namespace) as rec:
        kube, namespace = session.kube, ws.namespace
        session.run(deploy.ensure_module(kube, namespace, workload))
        sampler.start()
        try:
            measure_size(session, namespace, rec, how, record,
                         {"functions": 0, "wave_ms": 0.0, "wave_functions": 0,
                          "operator_restarted": restarted}, served=None)  # fmt: skip
            current = 0
            for size in sizes:
                names = [f"s-{i:05d}" for i in range(current, size)]
                rec.mark("wave", detail=str(size))
                wave_started = now_ms()
                session.run(create_wave(kube, namespace, names, workload, wave_concurrency))
                session.run(wait_all_ready(rec, size, wave_timeout_s))
                row: dict[str, Any] = {"functions": size, "wave_ms": now_ms() - wave_started,
                                       "wave_functions": len(names),
                                       "operator_restarted": restarted}  # fmt: skip
                current = size
                measure_size(session, namespace, rec, last if size == sizes[-1] else how,
                             record, row, served="s-00000")  # fmt: skip
        finally:
            run.write_raw(SAMPLES, sampler.stop())
            record.write(run)


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class Growth:
    """How one figure grows with the number of functions."""

    metric: str
    kind: str  # constant, linear, worse than linear, or unknown (too few sizes)
    intercept: float
    slope: float  # per function
    quadratic: float
    r2_linear: float
    measured_at_largest: float
    projected: float  # at PROJECT_TO functions, from the model named by kind


def classify_growth(
    n: Sequence[float], y: Sequence[float], metric: str = "", flat_within: float = 0.0
) -> Growth:
    """Fit ``a + b·n`` and ``a + b·n + c·n²`` to (n, y) and name the growth.

    *constant*: the line falls, or rises over the measured range by less than
    :data:`FLAT_SHARE` of the mean or ``flat_within`` (the measurement's resolution);
    *worse than linear*: with at least :data:`MIN_SIZES_FOR_WORSE` sizes, the quadratic
    term is positive, removes at least half of what the line leaves unexplained and adds
    at least a quarter to the line's value at the largest size; else *linear*. The
    projection to :data:`PROJECT_TO` uses the named model (for constant: the mean).
    """
    x = np.asarray(n, dtype=float)
    v = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(v)
    x, v = x[keep], v[keep]
    nan = float("nan")
    if x.size < 3 or np.ptp(x) == 0:
        last = float(v[np.argmax(x)]) if v.size else nan
        return Growth(metric, "unknown", nan, nan, nan, nan, last, nan)
    slope, intercept = np.polyfit(x, v, 1)
    residual_linear = float(np.sum((v - (intercept + slope * x)) ** 2))
    total = float(np.sum((v - v.mean()) ** 2))
    r2 = 1 - residual_linear / total if total > 0 else 1.0
    quad, q_slope, q_intercept = np.polyfit(x, v, 2)
    residual_quad = float(np.sum((v - (q_intercept + q_slope * x + quad * x * x)) ** 2))
    rise = slope * float(np.ptp(x))
    largest = float(x.max())
    line_at_largest = intercept + slope * largest
    if rise <= max(FLAT_SHARE * abs(float(v.mean())), flat_within):
        kind, projected = "constant", float(v.mean())
    elif (
        x.size >= MIN_SIZES_FOR_WORSE
        and quad > 0
        and residual_quad < 0.5 * residual_linear
        and quad * largest**2 > 0.25 * abs(line_at_largest)
    ):
        kind = "worse than linear"
        projected = float(q_intercept + q_slope * PROJECT_TO + quad * PROJECT_TO**2)
    else:
        kind, projected = "linear", float(intercept + slope * PROJECT_TO)
    fitted = (intercept, slope, quad, r2, projected)
    a, b, c, r2, projected = (_significant(float(value)) for value in fitted)
    return Growth(metric, kind, a, b, c, r2, float(v[np.argmax(x)]), projected)


# Fitted figures keep this many significant digits: a least-squares fit's last digits
# differ between numpy and BLAS builds, and a re-analysis must write the same bytes.
FIT_DIGITS = 10


def _significant(value: float) -> float:
    return float(f"{value:.{FIT_DIGITS}g}") if math.isfinite(value) else value


def _rest_samples(samples: pd.DataFrame, sizes: pd.DataFrame) -> pd.DataFrame:
    """Operator samples inside each size's rest window, labelled with that size."""
    frames = []
    for row in sizes.itertuples(index=False):
        inside = samples[samples["t_ms"].between(row.rest_start_ms, row.rest_end_ms)]
        frames.append(inside.assign(functions=row.functions))
    return pd.concat(frames, ignore_index=True) if frames else samples.assign(functions=[])


def by_size(raw: RawData) -> pd.DataFrame:
    """One row per size: every figure the experiment sets against the functions held."""
    sizes = raw.table(SIZES)
    rest = _rest_samples(raw.table(SAMPLES), sizes)
    probes = raw.table(PROBES)
    gateway = raw.table(GATEWAY)
    agents = raw.table(AGENTS)
    requests = raw.table(REQUESTS)
    rows = []
    base = agents[agents["functions"] == 0].set_index("node")
    for size in sizes.itertuples(index=False):
        n = size.functions
        samples = rest[rest["functions"] == n]
        minutes = (size.rest_end_ms - size.rest_start_ms) / 60000
        window = requests[
            (requests["functions"] == n)
            & requests["t_ms"].between(size.rest_start_ms, size.rest_end_ms)
        ] if not requests.empty else requests  # fmt: skip
        ok_probes = probes[(probes["functions"] == n) & probes["ok"].astype(bool)]
        ok_requests = gateway[(gateway["functions"] == n) & gateway["ok"].astype(bool)]
        nodes = agents[agents["functions"] == n].set_index("node")
        grown = (nodes["rss_mib"] - base["rss_mib"].reindex(nodes.index)).sum()
        pods = (nodes["pods"] - base["pods"].reindex(nodes.index)).sum()
        gateway_stats = describe(ok_requests["latency_ms"])
        rows.append(
            {
                "functions": n,
                "wave_s": size.wave_ms / 1000,
                "rest_s": minutes * 60,
                "operator_rss_mib": samples["rss_mib"].mean(),
                "operator_rss_max_mib": samples["rss_mib"].max(),
                "operator_idle_cpu_millicores": samples["cpu_millicores"].mean(),
                "operator_requests": len(window),
                "operator_requests_per_minute": len(window) / minutes if minutes else np.nan,
                "operator_requests_per_minute_per_function": (
                    len(window) / minutes / n if minutes and n else np.nan
                ),
                "resync_ms": size.resync_ms,
                "resync_cpu_ms": size.resync_cpu_s * 1000,
                "resync_cpu_millicores": size.resync_cpu_s / (size.resync_wall_ms / 1000) * 1000,
                "resync_queued": size.resync_queued,
                "probe_n": len(ok_probes),
                "probe_create_to_ready_ms": ok_probes["create_to_ready_ms"].median(),
                "gateway_n": gateway_stats["n"],
                "gateway_p50_ms": gateway_stats["p50"],
                "gateway_p95_ms": gateway_stats["p95"],
                "gateway_rss_mib": size.gateway_rss_mib,
                "agent_rss_mib": nodes["rss_mib"].sum(),
                "agent_mib_per_pod": grown / pods if pods > 0 else np.nan,
            }
        )
    return pd.DataFrame(rows)


def growth_table(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for metric in METRICS:
        g = classify_growth(table["functions"], table[metric], metric, FLAT_WITHIN[metric])
        rows.append({**g.__dict__, "project_to": PROJECT_TO})
    return pd.DataFrame(rows)


def growth_figure(table: pd.DataFrame, growth: pd.DataFrame, simulated: bool = False) -> Figure:
    """Each figure against the number of functions, its fit dashed, projection noted."""
    metrics = list(METRICS)
    cols = 3
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plots.new_figure(ncols=cols, nrows=rows, width=11.0, height=3.0 * rows)
    fits = growth.set_index("metric")
    x = table["functions"].to_numpy(dtype=float)
    for ax, metric in zip(np.ravel(axes), metrics, strict=False):
        style = plots.series_style(0)
        ax.plot(x, table[metric], color=style["color"], marker=style["marker"], linestyle="none",
                label="measured")  # fmt: skip
        fit = fits.loc[metric]
        if fit["kind"] != "unknown":
            grid = np.linspace(0, x.max(), 50)
            if fit["kind"] == "worse than linear":
                poly = np.polyfit(x, table[metric].to_numpy(dtype=float), 2)
                line = np.polyval(poly, grid)
            elif fit["kind"] == "constant":
                line = np.full_like(grid, table[metric].mean())
            else:
                line = fit["intercept"] + fit["slope"] * grid
            # No marker: the style cycle would put one on each of the 50 grid points.
            ax.plot(grid, line, color="#444444", linestyle="--", linewidth=1, marker="",
                    label=f"{fit['kind']}; at {PROJECT_TO:,}: {fit['projected']:.3g}")  # fmt: skip
        ax.set_xlabel("functions" + (" (simulated nodes)" if simulated else ""))
        ax.set_ylabel(METRICS[metric], fontsize=8)
        ax.legend(loc="best", fontsize=7)
    for ax in np.ravel(axes)[len(metrics) :]:
        ax.set_axis_off()
    fig.suptitle("Cost against the number of functions (dashed: fit)")
    fig.tight_layout()
    return fig


def analyse_scale(raw: RawData) -> Analysis:
    table = by_size(raw)
    growth = growth_table(table)
    result = Analysis()
    result.table("by_size", table)
    result.table("growth", growth)
    result.table("probes", raw.table(PROBES))
    result.table("gateway_requests", raw.table(GATEWAY))
    result.table("agents", raw.table(AGENTS))
    requests = raw.table(REQUESTS)
    if not requests.empty:
        result.table(
            "operator_requests_by_verb",
            requests.groupby(["functions", "verb", "resource"], as_index=False)
            .size()
            .rename(columns={"size": "requests"}),
        )
    rest = _rest_samples(raw.table(SAMPLES), raw.table(SIZES))
    probes = raw.table(PROBES)
    probes = probes[probes["ok"].astype(bool)]
    for n in table["functions"]:
        at = rest[rest["functions"] == n]
        result.observe("operator_rss_mib", at["rss_mib"], functions=n)
        result.observe("operator_cpu_millicores", at["cpu_millicores"], functions=n)
        latencies = probes.loc[probes["functions"] == n, "create_to_ready_ms"]
        result.observe("scale_probe_create_to_ready_ms", latencies, functions=n)
    result.figure("scale_growth", growth_figure(table, growth))
    return result


EXPERIMENTS = (Experiment("scale", run_scale, analyse_scale),)
