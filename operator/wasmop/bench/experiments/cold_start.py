"""Cold starts: requests to idle functions (zero replicas) through the gateway.

Functions with ``minReplicas: 0`` are created idle (0 replicas, phase Idle). Each *wave*
wakes ``batch`` of them at once with ``per_function`` concurrent requests each: the
gateway holds them, patches each function's scale subresource, and forwards them when
the first Pod is ready (the path in :mod:`wasmop.gateway.activator`). Right after a wave,
``warm_requests`` requests to each woken function, one at a time, give the warm latency
of the same run. Waves reuse functions once they have gone idle again by themselves
(``scale_to_zero_after_s``).

Where an activation's time goes comes from the watch events on the run's one clock
(:func:`activation_phases`): gateway to the scale patch, the operator and the ReplicaSet
controller to a Pod, the scheduler and node agent to a ready Pod, the EndpointSlice to the
gateway, and the first response byte.

No request may be lost in activation: each held request is answered, or refused with a
503 carrying its reason (``X-Wasmop-Reason``). With ``unplaceable`` requests one more
function whose Pod can never be scheduled is asked throughout the run: its requests
must come back 503 ``ActivationTimeout`` once the gateway's bound has passed.

Raw data: ``watch_events.csv`` (a ``wave`` marker per wave), ``cold_requests.csv`` (every
request: wave, batch, function, kind cold/warm/unplaceable, send time, latency, status,
reason, hold). Tables: ``requests``, ``phases``, ``waves``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiohttp
import numpy as np
import pandas as pd

from wasmop.bench import deploy, figures, probe
from wasmop.bench.analysis import Analysis
from wasmop.bench.experiments.base import Experiment, RawData, function_names
from wasmop.bench.experiments.steps import Workspace, recording
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession
from wasmop.bench.stats import ratio_of
from wasmop.bench.watch import Recorder
from wasmop.gateway.activator import FAILED, QUEUE_FULL, TIMED_OUT
from wasmop.kube import Kube
from wasmop.kube.client import api_path
from wasmop.wellknown import FUNCTION_LABEL

REQUESTS = "cold_requests"
WAVE = "wave"
UNPLACEABLE = "unplaceable"
ACTIVATION_REASONS = (TIMED_OUT, QUEUE_FULL, FAILED)
REQUEST_COLUMNS = ["wave", "batch", "kind", "function", "index", *probe.PROBE_COLUMNS]
# The phases of one activation, in order: (name, from milestone, to milestone).
PHASES: tuple[tuple[str, str, str], ...] = (
    ("gateway_to_scale", "sent_ms", "scaled_ms"),
    ("scale_to_pod", "scaled_ms", "pod_created_ms"),
    ("pod_start", "pod_created_ms", "pod_ready_ms"),
    ("endpoint_to_gateway", "pod_ready_ms", "released_ms"),
    ("first_byte", "released_ms", "answered_ms"),
)
PHASE_LABELS = {
    "gateway_to_scale": "gateway hold to scale patch",
    "scale_to_pod": "operator, ReplicaSet: Pod created",
    "pod_start": "scheduler, node agent: Pod ready",
    "endpoint_to_gateway": "EndpointSlice to gateway",
    "first_byte": "forward to first byte",
}


def idle_spec(scale_to_zero_after_s: int) -> dict[str, Any]:
    """A function that may scale to zero and never needs more than one replica."""
    return {
        "scaling": {
            "minReplicas": 0,
            "maxReplicas": 1,
            "scaleToZeroAfterSeconds": scale_to_zero_after_s,
        }
    }


def wave_plan(batches: Sequence[int], repetitions: int, pool: int) -> list[list[int]]:
    """Which functions (indices into the pool) each wave wakes: every batch size
    ``repetitions`` times, taking the next functions round the pool, so consecutive
    waves use functions idle longest."""
    if pool < max(batches, default=0):
        raise ValueError(f"a pool of {pool} functions cannot wake {max(batches)} at once")
    waves, turn = [], 0
    for batch in batches:
        for _ in range(repetitions):
            waves.append([(turn + i) % pool for i in range(batch)])
            turn = (turn + batch) % pool
    return waves


# --------------------------------------------------------------------------- run


def _is_idle(rec: Recorder, names: Sequence[str]) -> bool:
    """Each function idle (phase Idle, 0 desired) and none of its Pods left."""
    pods = {(p["metadata"].get("labels") or {}).get(FUNCTION_LABEL) for p in rec.objects("Pod")}
    for name in names:
        obj = rec.get("WasmFunction", name)
        if obj is None or name in pods:
            return False
        if (obj.get("status") or {}).get("phase") != "Idle" or obj["spec"].get("replicas"):
            return False
    return True


async def _no_endpoints(kube: Kube, namespace: str, names: Sequence[str], timeout_s: float) -> None:
    """Until no EndpointSlice of these functions lists an address (the gateway's table
    follows the same slices a moment later)."""
    path = api_path("discovery.k8s.io/v1", "endpointslices", namespace)
    wanted = set(names)
    async with asyncio.timeout(timeout_s):
        while True:
            slices = (await kube.list(path)).get("items") or []
            busy = [
                s
                for s in slices
                if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") in wanted
                and any(e.get("addresses") for e in s.get("endpoints") or [])
            ]
            if not busy:
                return
            await asyncio.sleep(0.1)


async def _gateway_knows(
    http: aiohttp.ClientSession, namespace: str, names: Sequence[str], timeout_s: float
) -> None:
    """Until the gateway lists each function's Service (``/-/stats``): a request sent
    before it has seen the Service is refused 404, which is no activation."""
    url = f"{deploy.gateway_base()}/-/stats"
    async with asyncio.timeout(timeout_s):
        while True:
            async with http.get(url) as response:
                stats = await response.json()
            known = {
                s["service"]
                for s in stats.get("services") or []
                if s.get("namespace") == namespace and s.get("function")
            }
            if known >= set(names):
                return
            await asyncio.sleep(0.1)


async def _requests(
    http: aiohttp.ClientSession, namespace: str, names: Sequence[str], each: int, timeout_s: float
) -> list[tuple[str, int, probe.ProbeResult]]:
    """``each`` concurrent requests to every function at once."""

    async def one(name: str, index: int) -> tuple[str, int, probe.ProbeResult]:
        url = deploy.gateway_url(namespace, name)
        return name, index, await probe.probe_once(http, url, timeout_s)

    return list(await asyncio.gather(*(one(n, i) for n in names for i in range(each))))


def _rows(
    results: Sequence[tuple[str, int, probe.ProbeResult]], **fields: Any
) -> list[dict[str, Any]]:
    return [
        {**fields, "function": name, "index": index, **result.__dict__}
        for name, index, result in results
    ]


async def _measure(
    kube: Kube,
    rec: Recorder,
    namespace: str,
    names: list[str],
    waves: list[list[int]],
    *,
    per_function: int,
    warm_requests: int,
    unplaceable: int,
    settle_s: float,
    idle_timeout_s: float,
    request_timeout_s: float,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        everyone = [*names, *([UNPLACEABLE] if unplaceable else [])]
        await _gateway_knows(http, namespace, everyone, idle_timeout_s)
        # Idle functions, not ones just created: the operator and the controllers finish
        # the creations' work first (else the first wave measures that backlog).
        await rec.wait_for(lambda r: _is_idle(r, names), idle_timeout_s)
        await asyncio.sleep(settle_s)
        stuck = None
        if unplaceable:
            stuck = asyncio.create_task(
                _requests(http, namespace, [UNPLACEABLE], unplaceable, request_timeout_s)
            )
        for number, members in enumerate(waves, start=1):
            woken = [names[i] for i in members]
            await rec.wait_for(lambda r, w=woken: _is_idle(r, w), idle_timeout_s)  # type: ignore[misc]
            await _no_endpoints(kube, namespace, woken, idle_timeout_s)
            await asyncio.sleep(0.3)  # the gateway's EndpointSlice watch follows
            rec.mark(WAVE, detail=f"{number}:{len(woken)}")
            cold = await _requests(http, namespace, woken, per_function, request_timeout_s)
            rows += _rows(cold, wave=number, batch=len(woken), kind="cold")
            for name in woken:
                for index in range(warm_requests):
                    url = deploy.gateway_url(namespace, name)
                    result = await probe.probe_once(http, url, request_timeout_s)
                    rows += _rows([(name, index, result)], wave=number, batch=len(woken),
                                  kind="warm")  # fmt: skip
        if stuck is not None:
            rows += _rows(await stuck, wave=0, batch=1, kind=UNPLACEABLE)
    return rows


def run_cold_start(
    session: BenchSession,
    run: ExperimentRun,
    *,
    workload: str = "hello",
    batches: Sequence[int] = (1, 10, 25),
    repetitions: int = 1,
    single_repetitions: int = 10,
    per_function: int = 3,
    warm_requests: int = 5,
    unplaceable: int = 2,
    scale_to_zero_after_s: int = 2,
    settle_s: float = 3.0,
    timeout_s: float = 120.0,
) -> None:
    """Create ``max(batches)`` idle functions, let the cluster settle for ``settle_s``,
    and wake them in waves: a single function ``single_repetitions`` times, every larger
    batch ``repetitions`` times."""
    batches = sorted({int(b) for b in batches})
    plan = [
        *wave_plan([1], single_repetitions, max(batches)),
        *wave_plan([b for b in batches if b > 1], repetitions, max(batches)),
    ] if 1 in batches else wave_plan(batches, repetitions, max(batches))  # fmt: skip
    names = function_names(max(batches))
    spec = idle_spec(scale_to_zero_after_s)
    rows: list[dict[str, Any]] = []
    with Workspace(session, run.experiment) as ws, recording(session, run, ws.namespace) as rec:
        origin = session.run(deploy.module_source(session.kube, ws.namespace, workload, "image"))
        manifests = [
            deploy.function_manifest(n, workload, replicas=0, spec=spec, module=origin)
            for n in names
        ]
        if unplaceable:
            nowhere = {**spec, "placement": {"nodeSelector": {"wasmop.bench/nowhere": "true"}}}
            manifests.append(
                deploy.function_manifest(UNPLACEABLE, workload, replicas=0, spec=nowhere,
                                         module=origin)
            )  # fmt: skip

        async def create_all() -> None:
            await asyncio.gather(
                *(deploy.create_function(session.kube, ws.namespace, m) for m in manifests)
            )

        session.run(create_all())
        try:
            rows = session.run(
                _measure(
                    session.kube,
                    rec,
                    ws.namespace,
                    names,
                    plan,
                    per_function=per_function,
                    warm_requests=warm_requests,
                    unplaceable=unplaceable,
                    settle_s=settle_s,
                    idle_timeout_s=timeout_s,
                    request_timeout_s=max(30.0, timeout_s / 2),
                )
            )
        finally:
            run.write_raw(REQUESTS, pd.DataFrame(rows, columns=REQUEST_COLUMNS))


# --------------------------------------------------------------------------- analysis


def lost_requests(requests: pd.DataFrame) -> pd.DataFrame:
    """Held requests that got neither an answer from the function (2xx) nor a 503 that
    says why (an activation reason in ``X-Wasmop-Reason``): lost in activation."""
    held = requests[requests["kind"] != "warm"]
    answered = held["status"].between(200, 299)
    refused = (held["status"] == 503) & held["reason"].fillna("").isin(ACTIVATION_REASONS)
    return held[~(answered | refused)]


def _first_after(
    events: pd.DataFrame, kind: str, function: str, after_ms: float, mask: pd.Series | None = None
) -> float:
    rows = events[
        (events["kind"] == kind)
        & (events["function"] == function)
        & (events["t_ms"] >= after_ms)
        & (events["event"] != "LISTED")
    ]
    if mask is not None:
        rows = rows[mask.reindex(rows.index, fill_value=False)]
    return float(rows["t_ms"].min()) if not rows.empty else float("nan")


def activation_milestones(requests: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """Per woken function and wave, on the run's one clock: the request sent, the scale
    patch seen (desired replicas above 0), its Pod created and ready, the gateway
    releasing the request (sent + hold) and the answer (sent + latency). The first
    request of each function in a wave speaks for it."""
    first = requests[(requests["kind"] == "cold") & (requests["index"] == 0)]
    desired = events["replicas_desired"].fillna(0) > 0
    ready = events["ready"].fillna(False).astype(bool)
    rows = []
    for r in first.itertuples(index=False):
        sent = float(r.t_ms)
        ok = 200 <= int(r.status) < 300
        rows.append(
            {
                "wave": r.wave,
                "batch": r.batch,
                "function": r.function,
                "ok": ok,
                "sent_ms": sent,
                "scaled_ms": _first_after(events, "WasmFunction", r.function, sent, desired),
                "pod_created_ms": _first_after(events, "Pod", r.function, sent),
                "pod_ready_ms": _first_after(events, "Pod", r.function, sent, ready),
                "released_ms": sent + float(r.hold_ms) if pd.notna(r.hold_ms) else np.nan,
                "answered_ms": sent + float(r.latency_ms),
            }
        )
    columns = ["wave", "batch", "function", "ok", *dict.fromkeys(p for _, p, _ in PHASES),
               "answered_ms"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def activation_phases(milestones: pd.DataFrame) -> pd.DataFrame:
    """Long form, one row per activation and phase. Milestones seen through watches can
    arrive a little out of order (each watch has its own delivery lag); each is taken no
    earlier than the one before it, so the phases are never negative and add up to the
    request's latency. A missing milestone leaves its phase out and the next phase
    starts from the last one seen."""
    rows = []
    for m in milestones.itertuples(index=False):
        if not m.ok:
            continue
        previous = float(m.sent_ms)
        for phase, _, end in PHASES:
            value = getattr(m, end)
            if pd.isna(value):
                continue
            end_ms = max(float(value), previous)
            rows.append(
                {
                    "wave": m.wave,
                    "batch": m.batch,
                    "function": m.function,
                    "phase": phase,
                    "duration_ms": end_ms - previous,
                }
            )
            previous = end_ms
    return pd.DataFrame(rows, columns=["wave", "batch", "function", "phase", "duration_ms"])


def cold_vs_warm(cold: pd.DataFrame, warm: pd.DataFrame) -> pd.DataFrame:
    """Per batch size: cold p50 and p95 against the warm requests of the same run, and
    the ratio of the medians with its 95 % interval."""
    rows = []
    for batch, group in cold.groupby("batch"):
        ratio = ratio_of(group["latency_ms"], warm["latency_ms"])
        rows.append(
            {
                "batch": int(batch),
                "cold_n": len(group),
                "cold_p50_ms": group["latency_ms"].median(),
                "cold_p95_ms": group["latency_ms"].quantile(0.95),
                "cold_max_ms": group["latency_ms"].max(),
                "warm_n": len(warm),
                "warm_p50_ms": warm["latency_ms"].median(),
                "cold_to_warm_p50_ratio": ratio["value"],
                "ratio_ci_low": ratio["ci_low"],
                "ratio_ci_high": ratio["ci_high"],
            }
        )
    return pd.DataFrame(rows)


def analyse_cold_start(raw: RawData) -> Analysis:
    events = raw.events()
    requests = raw.table(REQUESTS)
    requests["reason"] = requests["reason"].fillna("")
    milestones = activation_milestones(requests, events)
    phases = activation_phases(milestones)
    lost = lost_requests(requests)

    result = Analysis()
    result.table("requests", requests)
    result.table("milestones", milestones)
    result.table("phases", phases)
    first = requests[(requests["kind"] == "cold") & (requests["index"] == 0)]
    first_ok = first[first["ok"].astype(bool)]
    warm = requests[(requests["kind"] == "warm") & requests["ok"].astype(bool)]
    alone, largest = first_ok[first_ok["batch"] == 1], int(requests["batch"].max())
    result.observe("cold_start_ms", alone["latency_ms"], batch=1)
    for batch, group in first_ok.groupby("batch"):
        if batch > 1:
            result.observe("cold_start_batch_ms", group["latency_ms"], batch=int(batch))
    if largest >= 25:
        at_once = first_ok[first_ok["batch"] == largest]["latency_ms"]
        result.observe("cold_start_25_ms", at_once, batch=largest)
    result.observe("warm_request_ms", warm["latency_ms"], source="cold_start")
    result.table("cold_vs_warm", cold_vs_warm(first_ok, warm))
    ratio = ratio_of(alone["latency_ms"], warm["latency_ms"])
    if np.isfinite(ratio["value"]):
        result.observe("cold_to_warm_ratio", ratio["value"], batch=1)
    held = requests[requests["kind"] != "warm"]
    result.count("activation_requests_total", len(held))
    result.count("activation_requests_lost", len(lost))
    result.count("activation_requests_refused", int((held["status"] == 503).sum()))
    result.figure(
        "cold_vs_warm",
        figures.cold_start_cdf(first, warm),
        "Latency of requests to idle functions (the first request per function and wave, by"
        " how many functions were woken at once) against warm requests to the same functions"
        " in the same run; dashed lines: the cold-start targets (p50 250 ms, p95 500 ms).",
    )
    result.figure(
        "activation_phases",
        figures.activation_phases(phases, PHASE_LABELS),
        "Where a cold request's time goes, median per phase, by functions woken at once:"
        " from the gateway holding it to the answer's first byte, on one clock from the"
        " watch events and the gateway's Server-Timing hold.",
    )
    return result


EXPERIMENTS = (Experiment("cold_start", run_cold_start, analyse_cold_start),)
