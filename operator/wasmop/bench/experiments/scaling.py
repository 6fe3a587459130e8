"""Scaling latency, two ways.

``manual_scaling``: one function scaled between ``low`` and ``high`` replicas through the
scale subresource (as ``kubectl scale``), each change timed from the request to all
replicas ready. Raw data: ``watch_events.csv`` (with a ``scale`` marker per request) and
``scale_requests.csv`` (repetition, direction, replicas from and to, request time).
Table: ``scale_steps``.

``load_scaling``: an autoscaled function driven by a Locust load shape; each change of
its desired replicas is a decision, timed from the start of the load step it answered
to and until its replicas were ready. Scale-out is reported both ways: from the replica
change (``autoscale_ready_ms``, as the manual steps' ``scale_latency_ms``) and end to end
from the load arriving (``autoscale_end_to_end_ms``). Raw data: ``watch_events.csv`` (with a
``load-start`` marker) and Locust's output in ``locust/`` (the raw request log and the
per-second history). Tables: ``decisions``, ``requests``, ``load_history``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import pandas as pd

from wasmop.bench import deploy, figures, watch
from wasmop.bench.analysis import Analysis
from wasmop.bench.experiments.base import (
    Experiment,
    RawData,
    check_mode,
    metric_name,
    ready_kind,
)
from wasmop.bench.experiments.steps import Workspace, deploy_one, recording, wait_serving
from wasmop.bench.load import (
    HISTORY_CSV,
    RAW_LOG,
    LocustConfig,
    read_history,
    read_raw_log,
    run_locust,
)
from wasmop.bench.mix import MixEntry
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession
from wasmop.bench.shapes import Shape

SCALED = "scaled"  # the manually scaled function
AUTOSCALED = "autoscaled"  # the function under load
SCALE_REQUESTS = "scale_requests"
LOAD_START = "load-start"
LOCUST = "locust"


# --------------------------------------------------------------------------- manual


def _scale(session: BenchSession, mode: str, namespace: str, name: str, replicas: int) -> float:
    if mode == "operator":
        return session.run(deploy.scale_function(session.kube, namespace, name, replicas))
    return session.run(deploy.scale_deployment(session.kube, namespace, name, replicas))


def run_manual_scaling(
    session: BenchSession,
    run: ExperimentRun,
    *,
    workload: str = "hello",
    low: int = 1,
    high: int = 4,
    repetitions: int = 2,
    mode: str = "operator",
    timeout_s: float = 120.0,
) -> None:
    """Scale out to ``high`` and back to ``low``, ``repetitions`` times, each time waiting
    until the replicas are ready; record every request."""
    check_mode(mode)
    kind = ready_kind(mode)
    requests: list[dict[str, Any]] = []
    with Workspace(session, run.experiment) as ws, recording(session, run, ws.namespace) as rec:
        deploy_one(
            session, ws.namespace, SCALED, workload, rec,
            mode=mode, replicas=low, timeout_s=timeout_s,
        )  # fmt: skip
        try:
            for repetition in range(1, repetitions + 1):
                for direction, frm, to in (("out", low, high), ("in", high, low)):
                    requested = _scale(session, mode, ws.namespace, SCALED, to)
                    rec.mark("scale", requested, detail=f"{frm}->{to}")
                    requests.append(
                        {
                            "repetition": repetition,
                            "direction": direction,
                            "from_replicas": frm,
                            "to_replicas": to,
                            "requested_ms": requested,
                        }
                    )
                    session.run(
                        deploy.wait_replicas_ready(rec, kind, SCALED, to, requested, timeout_s)
                    )
        finally:
            run.write_raw(SCALE_REQUESTS, pd.DataFrame(requests))


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def analyse_manual_scaling(raw: RawData) -> Analysis:
    mode = raw.parameters["mode"]
    kind = ready_kind(mode)
    events = raw.events()
    rows = events.to_dict("records")
    steps = raw.table(SCALE_REQUESTS)
    ready, deployment_ready, pods_ready = [], [], []
    for request in steps.itertuples(index=False):
        to, requested = int(request.to_replicas), float(request.requested_ms)
        ready.append(_or_nan(deploy.first_ready_ms(rows, kind, SCALED, requested, to)))
        deployment_ready.append(
            _or_nan(deploy.first_ready_ms(rows, "Deployment", SCALED, requested, to))
        )
        pods_ready.append(watch.pods_ready_ms(events, SCALED, to, requested))
    steps["deployment_ready_ms"] = deployment_ready
    steps["ready_ms"] = ready
    steps["latency_ms"] = steps["ready_ms"] - steps["requested_ms"]
    steps["pods_ready_ms"] = pods_ready
    # Scale-out: from the last new Pod Ready to the function's status saying so.
    out = steps["direction"] == "out"
    lag = steps["ready_ms"] - steps["pods_ready_ms"]
    steps["status_lag_ms"] = lag.where(out) if mode == "operator" else float("nan")
    steps["mode"] = mode

    result = Analysis()
    result.table("scale_steps", steps)
    back = steps[~out]
    result.observe(metric_name(mode, "scale_latency_ms"), steps[out]["latency_ms"], direction="out")
    result.observe(metric_name(mode, "scale_in_latency_ms"), back["latency_ms"], direction="in")
    if mode == "operator":
        result.observe("status_lag_ms", steps["status_lag_ms"].dropna(), source="scaling")
    result.figure("scaling_latency", figures.scaling_latency(steps))
    return result


# --------------------------------------------------------------------------- load-driven

AUTOSCALING_SPEC: dict[str, Any] = {
    "resources": {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "128Mi"},
    },
    "scaling": {
        "engine": "operator",
        "minReplicas": 1,
        "maxReplicas": 4,
        "behavior": {
            "scaleUp": {"stabilizationWindowSeconds": 0},
            "scaleDown": {"stabilizationWindowSeconds": 15},
        },
    },
}


def autoscaling_spec(max_replicas: int, rps_per_replica: float) -> dict[str, Any]:
    """The function's spec: scale on requests per second per replica."""
    return {
        **AUTOSCALING_SPEC,
        "scaling": {
            **AUTOSCALING_SPEC["scaling"],
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": "requests_per_second"},
                        "target": {"type": "AverageValue", "averageValue": f"{rps_per_replica:g}"},
                    },
                }
            ],
        },
    }


def load_shape(shape: str | Mapping[str, Any]) -> Shape:
    """``step:peak=8,duration=60`` or ``{"kind": "step", "peak": 8, ...}``."""
    return Shape.parse(shape) if isinstance(shape, str) else Shape(**shape)


def scaling_decisions(events: pd.DataFrame, name: str, after_ms: float) -> pd.DataFrame:
    """Each change of the WasmFunction's desired replicas after ``after_ms``, with the
    time its new replica count was first ready."""
    own = events[
        (events["kind"] == "WasmFunction")
        & (events["name"] == name)
        & (events["event"] != "LISTED")
    ].sort_values("t_ms", kind="stable")
    before, rows = own[own["t_ms"] < after_ms], own[own["t_ms"] >= after_ms]
    decisions = []
    # The replicas wanted when the load started: a decision at the first event counts too.
    previous = before["replicas_desired"].iloc[-1] if not before.empty else None
    for _, row in rows.iterrows():
        desired = row["replicas_desired"]
        if previous is not None and desired != previous:
            later = rows[(rows["t_ms"] >= row["t_ms"]) & (rows["replicas_desired"] == desired)]
            ready = later[later["replicas_ready"].fillna(0) >= desired]
            decisions.append(
                {
                    "decided_ms": row["t_ms"],
                    "from_replicas": previous,
                    "to_replicas": desired,
                    "ready_ms": float(ready["t_ms"].iloc[0]) if not ready.empty else None,
                }
            )
        previous = desired
    frame = pd.DataFrame(
        decisions, columns=["decided_ms", "from_replicas", "to_replicas", "ready_ms"]
    )
    frame["decision_to_ready_ms"] = frame["ready_ms"] - frame["decided_ms"]
    return frame


def run_load_scaling(
    session: BenchSession,
    run: ExperimentRun,
    *,
    workload: str = "fib",
    query: str | Mapping[str, Any] = "n=22",
    shape: str | Mapping[str, Any] = "step:peak=8,base=1,steps=4,duration=60",
    user_rps: float = 10.0,
    max_replicas: int = 4,
    rps_per_replica: float = 20.0,
    timeout_s: float = 120.0,
) -> None:
    """Drive an autoscaled function with a Locust load shape, recording the watch events
    (the decisions show there) and every request.

    ``query`` and ``shape`` take strings (``n=22``, ``step:peak=8,duration=60``) or
    mappings (``{"n": 22}``, ``{"kind": "step", "peak": 8}``); papermill's parameter
    parser cannot read a default value containing ``=``, so notebooks use mappings."""
    spec = autoscaling_spec(max_replicas, rps_per_replica)
    shaped = load_shape(shape)
    if not isinstance(query, str):
        query = urlencode(query)
    with Workspace(session, run.experiment) as ws, recording(session, run, ws.namespace) as rec:
        deploy_one(
            session, ws.namespace, AUTOSCALED, workload, rec,
            mode="operator", replicas=1, timeout_s=timeout_s, spec=spec,
        )  # fmt: skip
        wait_serving(session, ws.namespace, [AUTOSCALED], timeout_s)
        config = LocustConfig(
            host=deploy.gateway_base(),
            functions=(MixEntry(ws.namespace, AUTOSCALED, "/", query),),
            shape=shaped,
            user_rps=user_rps,
            run_time_s=shaped.duration + 5,
            fail_ratio=1.0,  # the figures show the failures; the run should not stop
        )
        rec.mark(LOAD_START)
        run_locust(config, run.paths.raw / LOCUST, check=False)
        time.sleep(2.0)


def analyse_load_scaling(raw: RawData) -> Analysis:
    events = raw.events()
    load_started = raw.mark_ms(LOAD_START)
    decisions = scaling_decisions(events, AUTOSCALED, load_started)
    locust = raw.path(LOCUST)
    requests = read_raw_log(locust) if raw.exists(LOCUST, RAW_LOG) else pd.DataFrame()
    first_request = float(requests["timestamp_ms"].min()) if not requests.empty else load_started
    shaped = load_shape(raw.parameters["shape"])
    step_s = shaped.duration / max(1, shaped.steps)
    if not decisions.empty:
        # Reaction: from the start of the load step the decision answered to the decision.
        offsets = (decisions["decided_ms"] - first_request) / 1000
        step_start = first_request + (offsets // step_s).clip(lower=0) * step_s * 1000
        decisions["load_step_ms"] = step_start
        decisions["reaction_ms"] = decisions["decided_ms"] - step_start
        # End to end, as a user sees it: from the load arriving to the new replicas ready.
        decisions["end_to_end_ms"] = decisions["ready_ms"] - step_start
    history = read_history(locust) if raw.exists(LOCUST, HISTORY_CSV) else pd.DataFrame()

    result = Analysis()
    result.table("decisions", decisions)
    result.table("requests", requests)
    result.table("load_history", history)
    ups = decisions[decisions["to_replicas"] > decisions["from_replicas"]]
    if not ups.empty:
        result.observe("autoscale_reaction_ms", ups["reaction_ms"])
        result.observe("autoscale_ready_ms", ups["decision_to_ready_ms"].dropna())
        result.observe("autoscale_end_to_end_ms", ups["end_to_end_ms"].dropna())
    if not requests.empty:
        ok = requests.loc[requests["ok"], "latency_ms"]
        result.observe("request_latency_ms", ok, source="autoscaling")
    result.figure("autoscaling", figures.autoscaling_timeline(events, history, AUTOSCALED))
    return result


EXPERIMENTS = (
    Experiment("manual_scaling", run_manual_scaling, analyse_manual_scaling),
    Experiment("load_scaling", run_load_scaling, analyse_load_scaling),
)
