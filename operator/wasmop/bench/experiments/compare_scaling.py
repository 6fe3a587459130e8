"""Reactive, fast-reactive and predictive autoscaling side by side, on several load shapes.

For each shape, one function per variant is deployed and all of them are driven by one
Locust run with that shape, the load split evenly between them: the variants see the
same load at the same time on the same (shared, busy) machine, so their differences are
theirs. The variants:

* ``reactive``: the HPA algorithm on the request rate, judged every scaling interval;
* ``fast``: ``reaction: Fast``, judged every second with the panic window's rate;
* ``predictive``: ``fast`` plus a forecast of the rate (Holt's linear trend; for the
  periodic shape the seasonal naive model with its period as the season), so the figure
  shows what the forecast adds beyond reacting quickly.

A variant listed more than once gets that many functions (more reaction times from
one run). Each Locust user sends its requests to the functions in turns, so every
function gets the same rate at every moment.

Per shape and variant: requests over ``latency_bound_ms`` (failed ones included),
replica-seconds (the desired replicas integrated over the load), and reaction times: from
each rise of the offered load (the shape's users going up) to the first scale-out decision
after it and before the next rise. The reactive variant also yields the load-scaling
metrics of :mod:`.scaling` (reaction, decision to ready, end to end), so the targets
judged on those stay measured by the same definitions.

Raw data: ``watch_events.csv`` (a ``load-start`` marker per shape), ``shape_runs.csv``
(shape index, kind, shape, function per variant), Locust's output per shape in
``locust-<index>/``. Tables: ``variants``, ``decisions``, ``reactions``, ``replicas``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from wasmop.bench import deploy, figures
from wasmop.bench.analysis import Analysis
from wasmop.bench.experiments.base import Experiment, RawData
from wasmop.bench.experiments.scaling import (
    LOAD_START,
    autoscaling_spec,
    load_shape,
    scaling_decisions,
)
from wasmop.bench.experiments.steps import Workspace, deploy_workload, recording, wait_serving
from wasmop.bench.load import RAW_LOG, LocustConfig, read_raw_log, run_locust
from wasmop.bench.mix import MixEntry
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession
from wasmop.bench.shapes import Shape, users_at

VARIANTS = ("reactive", "fast", "predictive")
SHAPE_RUNS = "shape_runs"
DEFAULT_SHAPES: tuple[dict[str, Any], ...] = (
    {"kind": "step", "peak": 9, "base": 3, "steps": 3, "duration": 45},
    {"kind": "spike", "peak": 9, "base": 3, "at": 10, "length": 20, "duration": 45},
    {"kind": "ramp", "peak": 9, "base": 3, "duration": 60},
    {"kind": "periodic", "peak": 9, "base": 3, "period": 30, "duration": 90},
)


def variant_spec(
    variant: str, shape: Shape, max_replicas: int, rps_per_replica: float, horizon_s: int
) -> dict[str, Any]:
    """The function's spec for one variant (see the module doc)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    spec = autoscaling_spec(max_replicas, rps_per_replica)
    scaling = dict(spec["scaling"])
    if variant in ("fast", "predictive"):
        scaling["reaction"] = "Fast"
    if variant == "predictive":
        predictive: dict[str, Any] = {"enabled": True, "horizonSeconds": horizon_s}
        if shape.kind == "periodic":
            predictive.update(model="SeasonalNaive", seasonSeconds=max(2, round(shape.period)))
        scaling["predictive"] = predictive
    return {**spec, "scaling": scaling}


def function_names(variants: Sequence[str], index: int) -> list[str]:
    """The functions of one shape run: ``<variant>-<shape index>``, and for a variant
    listed more than once (more functions of it for more observations in one run)
    ``<variant>-<shape index>-<copy>`` for the second and later."""
    seen: dict[str, int] = {}
    names = []
    for variant in variants:
        copy = seen[variant] = seen.get(variant, -1) + 1
        names.append(f"{variant}-{index}" if copy == 0 else f"{variant}-{index}-{copy}")
    return names


def variant_of(name: str) -> str:
    """The variant a function of :func:`function_names` runs."""
    return name.split("-", 1)[0]


def load_rises(shape: Shape, resolution: float = 1.0) -> list[float]:
    """Seconds into the shape at which the offered users go up."""
    rises, previous, t = [], users_at(shape, -1.0), 0.0
    while (users := users_at(shape, t)) is not None:
        if previous is not None and users > previous:
            rises.append(t)
        previous, t = users, t + resolution
    return rises


def reaction_times(rises_ms: Sequence[float], decisions: pd.DataFrame) -> pd.DataFrame:
    """For each rise of the load, the first scale-out decision at or after it and before
    the next rise: its reaction time; a rise no scale-out answered has none."""
    ups = decisions[decisions["to_replicas"] > decisions["from_replicas"]]
    times = sorted(ups["decided_ms"].tolist())
    rows = []
    for i, rise in enumerate(rises_ms):
        until = rises_ms[i + 1] if i + 1 < len(rises_ms) else float("inf")
        answer = next((t for t in times if rise <= t < until), None)
        rows.append(
            {
                "rise_ms": rise,
                "decided_ms": answer,
                "reaction_ms": answer - rise if answer is not None else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=["rise_ms", "decided_ms", "reaction_ms"])


def replica_seconds(events: pd.DataFrame, name: str, start_ms: float, end_ms: float) -> float:
    """The function's desired replicas integrated over [start, end], in replica-seconds
    (a step function of its watch events)."""
    own = events[
        (events["kind"] == "WasmFunction")
        & (events["name"] == name)
        & events["replicas_desired"].notna()
    ].sort_values("t_ms", kind="stable")
    if own.empty or end_ms <= start_ms:
        return float("nan")
    before = own[own["t_ms"] <= start_ms]
    level = float(before["replicas_desired"].iloc[-1]) if not before.empty else np.nan
    total, at = 0.0, start_ms
    for row in own[(own["t_ms"] > start_ms) & (own["t_ms"] < end_ms)].itertuples(index=False):
        if np.isfinite(level):
            total += level * (row.t_ms - at)
        level, at = float(row.replicas_desired), row.t_ms
    if np.isfinite(level):
        total += level * (end_ms - at)
    return total / 1000


def comparison(variants: pd.DataFrame) -> pd.DataFrame:
    """Per shape, predictive against reactive: the share fewer requests over the bound
    (NaN when reactive had none: nothing to cut) and the share more replica-seconds."""
    rows = []
    for (index, kind), group in variants.groupby(["shape_index", "shape"], sort=True):
        by = group.set_index("variant")
        if not {"reactive", "predictive"} <= set(by.index):
            continue
        reactive, predictive = by.loc["reactive"], by.loc["predictive"]
        over = float(reactive["over_bound"])
        rows.append(
            {
                "shape_index": index,
                "shape": kind,
                "reactive_over_bound": int(reactive["over_bound"]),
                "predictive_over_bound": int(predictive["over_bound"]),
                "over_bound_reduction_ratio": (
                    1 - float(predictive["over_bound"]) / over if over > 0 else np.nan
                ),
                "reactive_replica_s": reactive["replica_s"],
                "predictive_replica_s": predictive["replica_s"],
                "replica_s_increase_ratio": predictive["replica_s"] / reactive["replica_s"] - 1,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- run


def run_compare_scaling(
    session: BenchSession,
    run: ExperimentRun,
    *,
    workload: str = "fib",
    query: str | Mapping[str, Any] = "n=22",
    shapes: Sequence[str | Mapping[str, Any]] = DEFAULT_SHAPES,
    variants: Sequence[str] = VARIANTS,
    user_rps: float = 10.0,
    max_replicas: int = 4,
    rps_per_replica: float = 8.0,
    horizon_s: int = 10,
    latency_bound_ms: float = 100.0,
    timeout_s: float = 120.0,
) -> None:
    """For each shape: one function per variant, one Locust run over all of them."""
    if not isinstance(query, str):
        query = urlencode(query)
    runs: list[dict[str, Any]] = []
    with Workspace(session, run.experiment) as ws, recording(session, run, ws.namespace) as rec:
        try:
            for index, raw_shape in enumerate(shapes):
                shape = load_shape(raw_shape)
                names = function_names(variants, index)
                for variant, name in zip(variants, names, strict=True):
                    spec = variant_spec(variant, shape, max_replicas, rps_per_replica, horizon_s)
                    [outcome] = deploy_workload(
                        session, ws.namespace, [name], workload, rec,
                        mode="operator", replicas=1, timeout_s=timeout_s, spec=spec,
                    )  # fmt: skip
                    if not outcome.ok:
                        raise RuntimeError(f"{name} did not become ready: {outcome.error}")
                wait_serving(session, ws.namespace, names, timeout_s)
                config = LocustConfig(
                    host=deploy.gateway_base(),
                    functions=tuple(MixEntry(ws.namespace, n, "/", query) for n in names),
                    shape=shape,
                    user_rps=user_rps,
                    run_time_s=shape.duration + 5,
                    fail_ratio=1.0,  # the over-bound counts show failures; never stop
                    # Each function exactly its share of every user's rate: with a random
                    # pick its rate wandered by a replica's worth, and the fast variants
                    # scaled out on the noise before the load rose.
                    options={"pick": "rotate"},
                )
                started = rec.mark(LOAD_START, detail=f"{index}:{shape.kind}")
                run_locust(config, run.paths.raw / f"locust-{index}", check=False)
                runs.append(
                    {"shape_index": index, "shape": shape.kind, "spec": shape.format(),
                     "load_start_ms": started, "functions": ",".join(names)}
                )  # fmt: skip
                time.sleep(1.0)
                session.run(deploy.delete_functions(session.kube, ws.namespace, names))
        finally:
            run.write_raw(SHAPE_RUNS, pd.DataFrame(runs))


# --------------------------------------------------------------------------- analysis


def analyse_compare_scaling(raw: RawData) -> Analysis:
    events = raw.events()
    runs = raw.table(SHAPE_RUNS)
    bound = float(raw.parameters["latency_bound_ms"])
    variant_rows, decision_frames, reaction_frames, request_frames = [], [], [], []
    for shape_run in runs.itertuples(index=False):
        index, kind = int(shape_run.shape_index), str(shape_run.shape)
        shape = Shape.parse(shape_run.spec)
        folder = f"locust-{index}"
        requests = read_raw_log(raw.path(folder)) if raw.exists(folder, RAW_LOG) else None
        if requests is None or requests.empty:
            continue
        start = float(requests["timestamp_ms"].min())
        end = start + shape.duration * 1000
        rises = [start + t * 1000 for t in load_rises(shape)]
        for name in str(shape_run.functions).split(","):
            variant = variant_of(name)
            own = requests[requests["name"].str.split("/").str[1] == name].copy()
            own["variant"], own["shape"], own["shape_index"] = variant, kind, index
            over = (~own["ok"]) | (own["latency_ms"] > bound)
            decisions = scaling_decisions(events, name, float(shape_run.load_start_ms))
            decisions["variant"], decisions["shape"], decisions["shape_index"] = (
                variant, kind, index,
            )  # fmt: skip
            reactions = reaction_times(rises, decisions)
            reactions["variant"], reactions["shape"], reactions["shape_index"] = (
                variant, kind, index,
            )  # fmt: skip
            scale_outs = decisions["to_replicas"] > decisions["from_replicas"]
            variant_rows.append(
                {
                    "shape_index": index,
                    "shape": kind,
                    "variant": variant,
                    "requests": len(own),
                    "failed": int((~own["ok"]).sum()),
                    "over_bound": int(over.sum()),
                    "over_bound_ratio": float(over.mean()) if len(own) else np.nan,
                    "replica_s": replica_seconds(events, name, start, end),
                    "scale_outs": int(scale_outs.sum()),
                    "rises": len(rises),
                    "rises_answered": int(reactions["reaction_ms"].notna().sum()),
                    "reaction_p50_ms": reactions["reaction_ms"].median(),
                    "reaction_p95_ms": reactions["reaction_ms"].quantile(0.95),
                    "latency_p95_ms": own.loc[own["ok"], "latency_ms"].quantile(0.95),
                }
            )
            decision_frames.append(decisions)
            reaction_frames.append(reactions)
            request_frames.append(own)
    variants = pd.DataFrame(variant_rows)
    decisions = pd.concat(decision_frames, ignore_index=True) if decision_frames else pd.DataFrame()
    reactions = pd.concat(reaction_frames, ignore_index=True) if reaction_frames else pd.DataFrame()
    requests = pd.concat(request_frames, ignore_index=True) if request_frames else pd.DataFrame()
    compared = comparison(variants) if not variants.empty else pd.DataFrame()

    result = Analysis()
    result.table("variants", variants)
    result.table("comparison", compared)
    result.table("decisions", decisions)
    result.table("reactions", reactions)
    if not reactions.empty:
        for (variant, kind), group in reactions.groupby(["variant", "shape"]):
            values = group["reaction_ms"].dropna()
            result.observe("scaling_reaction_ms", values, variant=variant, shape=kind)
            if variant == "fast" and kind == "step":
                result.observe("fast_step_reaction_ms", values)
    for row in compared.itertuples(index=False):
        if row.shape in ("ramp", "periodic"):
            if np.isfinite(row.over_bound_reduction_ratio):
                result.observe("predictive_over_bound_reduction_ratio",
                               row.over_bound_reduction_ratio, shape=row.shape)  # fmt: skip
            result.observe("predictive_replica_seconds_increase_ratio",
                           row.replica_s_increase_ratio, shape=row.shape)  # fmt: skip
    _observe_reactive_load_scaling(result, decisions, requests, raw, runs)
    result.figure(
        "scaling_comparison",
        figures.scaling_comparison(variants, bound),
        "Reactive, fast-reactive and predictive autoscaling on each load shape, driven"
        " together by one load: requests over the latency bound (failures included),"
        " replica-seconds used while the load ran, and the p95 time from a rise of the load"
        " to the scale-out decision after it (dashed: the 1 s target).",
    )
    return result


def _observe_reactive_load_scaling(
    result: Analysis,
    decisions: pd.DataFrame,
    requests: pd.DataFrame,
    raw: RawData,
    runs: pd.DataFrame,
) -> None:
    """The reactive variant's scale-outs by the load-scaling experiment's definitions:
    reaction from the start of the stair, decision to ready, and load to ready."""
    if decisions.empty:
        return
    for shape_run in runs.itertuples(index=False):
        if shape_run.shape != "step":
            continue
        shape = Shape.parse(shape_run.spec)
        own = requests[requests["shape_index"] == shape_run.shape_index]
        ups = decisions[
            (decisions["shape_index"] == shape_run.shape_index)
            & (decisions["variant"] == "reactive")
            & (decisions["to_replicas"] > decisions["from_replicas"])
        ]
        if own.empty or ups.empty:
            continue
        first = float(own["timestamp_ms"].min())
        step_ms = shape.duration / max(1, shape.steps) * 1000
        stair = first + ((ups["decided_ms"] - first) // step_ms).clip(lower=0) * step_ms
        result.observe("autoscale_reaction_ms", ups["decided_ms"] - stair)
        result.observe("autoscale_ready_ms", ups["decision_to_ready_ms"].dropna())
        result.observe("autoscale_end_to_end_ms", (ups["ready_ms"] - stair).dropna())


EXPERIMENTS = (Experiment("compare_scaling", run_compare_scaling, analyse_compare_scaling),)
