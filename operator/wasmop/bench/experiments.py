"""The experiments, one function each: what a notebook runs after its parameters cell.

Every function takes a :class:`~wasmop.bench.session.BenchSession` and an
:class:`~wasmop.bench.run.ExperimentRun`, works in a namespace of its own (deleted at the
end), writes its tidy tables and raw observations into the run folder, records the
metrics the report's targets judge (``run.observe`` / ``run.count``) and returns the
tables for the notebook's figures. Notebooks never re-implement this logic.

``mode="operator"`` deploys WasmFunctions through the operator; ``mode="plain"`` deploys
the same workloads as hand-written Deployments (a baseline, and a way to exercise the
harness without the operator). Plain-mode latencies are recorded under ``plain_*``
metric names so they never count towards the operator's targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pandas as pd

from wasmop.bench import deploy, faults, probe, process_sampler, recovery, watch
from wasmop.bench.clock import now_ms
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
from wasmop.bench.shapes import Shape
from wasmop.kube.client import api_path

log = logging.getLogger(__name__)

MODES = ("operator", "plain")
FAULTS = ("pod-crash", "pod-delete", "node-kill", "operator-kill", "apiserver-restart")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def namespace_name(experiment: str) -> str:
    """A fresh namespace per run: ``x-<experiment>-<6 hex>`` (a DNS label)."""
    stem = "".join(c if c.isalnum() else "-" for c in experiment.lower()).strip("-")[:40]
    return f"x-{stem or 'run'}-{secrets.token_hex(3)}"


def _metric(mode: str, name: str) -> str:
    return name if mode == "operator" else f"plain_{name}"


@dataclass
class Workspace:
    """A namespace for one run, created on entry and deleted on exit."""

    session: BenchSession
    experiment: str
    cleanup: bool = True
    delete_wait_s: float = 60.0

    def __post_init__(self) -> None:
        self.namespace = namespace_name(self.experiment)

    def __enter__(self) -> Workspace:
        labels = {deploy.EXPERIMENT_LABEL: self.experiment}
        self.session.run(deploy.create_namespace(self.session.kube, self.namespace, labels))
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.cleanup:
            return
        try:
            self.session.run(
                deploy.clear_namespace(self.session.kube, self.namespace, self.delete_wait_s)
            )
        except Exception:
            if exc_type is None:
                raise
            # Never hide why the experiment failed behind a failed cleanup.
            log.exception("cleaning up namespace %s failed", self.namespace)


@contextlib.contextmanager
def _recording(
    session: BenchSession, run: ExperimentRun, namespace: str
) -> Iterator[watch.Recorder]:
    """A recorder whose events always end up in ``raw/watch_events.csv``, also when the
    experiment fails half-way (that is when they are needed most)."""
    with session.recorder(namespace) as rec:
        try:
            yield rec
        finally:
            run.write_raw("watch_events", rec.table())


def _deploy(
    session: BenchSession,
    namespace: str,
    names: Sequence[str],
    workload: str,
    recorder: watch.Recorder,
    *,
    mode: str,
    replicas: int,
    timeout_s: float,
    spec: dict[str, Any] | None = None,
) -> list[deploy.DeployOutcome]:
    kube = session.kube
    if mode == "plain":
        return session.run(
            deploy.deploy_plain(
                kube, namespace, names, workload, recorder, replicas=replicas, timeout_s=timeout_s
            )
        )
    session.run(deploy.ensure_module(kube, namespace, workload))
    manifests = [
        deploy.function_manifest(name, workload, replicas=replicas, spec=spec) for name in names
    ]
    return session.run(deploy.deploy_functions(kube, namespace, manifests, recorder, timeout_s))


def _deploy_one(
    session: BenchSession,
    namespace: str,
    name: str,
    workload: str,
    recorder: watch.Recorder,
    **options: Any,
) -> None:
    """One function that an experiment needs running before it measures anything."""
    [outcome] = _deploy(session, namespace, [name], workload, recorder, **options)
    if not outcome.ok:
        raise RuntimeError(f"{name} did not become ready: {outcome.error}")


def _serving(session: BenchSession, namespace: str, names: Sequence[str], timeout_s: float) -> None:
    async def all_serving() -> None:
        await asyncio.gather(
            *(probe.wait_serving(deploy.gateway_url(namespace, n), timeout_s) for n in names)
        )

    session.run(all_serving())


# --------------------------------------------------------------------------- deployment


@dataclass(frozen=True)
class DeploymentResult:
    functions: pd.DataFrame  # one row per function: outcome, milestones, operator timings
    phases: pd.DataFrame  # one row per function and phase
    events: pd.DataFrame  # every watch event


def deployment_latency(
    session: BenchSession,
    run: ExperimentRun,
    *,
    concurrency: int = 1,
    workload: str = "hello",
    replicas: int = 1,
    mode: str = "operator",
    timeout_s: float = 120.0,
) -> DeploymentResult:
    """Create ``concurrency`` functions at once; time each from create to Ready and
    split that time into phases from the watch events."""
    _check_mode(mode)
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    with Workspace(session, run.experiment) as ws, _recording(session, run, ws.namespace) as rec:
        names = [f"fn-{i:03d}" for i in range(concurrency)]
        outcomes = _deploy(
            session, ws.namespace, names, workload, rec,
            mode=mode, replicas=replicas, timeout_s=timeout_s,
        )  # fmt: skip
        time.sleep(0.2)  # trailing status events
        events = rec.table()
        timings = {
            name: watch.operator_timings(rec.get("WasmFunction", name) or {}) for name in names
        }
    table = deploy.outcomes_frame(outcomes)
    milestones = watch.function_milestones(
        events, {o.name: o.created_ms for o in outcomes}, replicas
    )
    table = table.merge(milestones.drop(columns=["created_ms"]), on="function", how="left")
    table = table.merge(
        pd.DataFrame([{"function": n, **t} for n, t in timings.items()]), on="function", how="left"
    )
    table["status_lag_ms"] = table["function_ready_ms"] - table["pods_ready_ms"]
    for column, value in (("concurrency", concurrency), ("replicas", replicas), ("mode", mode)):
        table[column] = value
    phases = watch.phase_durations(milestones)
    phases["concurrency"] = concurrency
    run.write_table("functions", table)
    run.write_table("phases", phases)
    ok = table[table["ok"]]
    # The report's "deployment < 2 s" is about one function; batches have their own metric
    # (and the "100 at once, all succeed" target).
    latency = "deploy_latency_ms" if concurrency == 1 else "concurrent_deploy_latency_ms"
    run.observe(_metric(mode, latency), ok["create_to_ready_ms"], concurrency=concurrency)
    if mode == "operator":
        lag = "status_lag_ms" if concurrency == 1 else "concurrent_status_lag_ms"
        run.observe(lag, ok["status_lag_ms"].dropna(), concurrency=concurrency)
        run.count("concurrent_deploy_total", concurrency)
        run.count("concurrent_deploy_ready", int(table["ok"].sum()))
    return DeploymentResult(table, phases, events)


# --------------------------------------------------------------------------- scaling


@dataclass(frozen=True)
class ScalingResult:
    steps: pd.DataFrame  # one row per scale request (manual) or decision (load)
    events: pd.DataFrame
    load: pd.DataFrame  # Locust history (load mode), else empty


def _scale(session: BenchSession, mode: str, namespace: str, name: str, replicas: int) -> float:
    if mode == "operator":
        return session.run(deploy.scale_function(session.kube, namespace, name, replicas))
    return session.run(deploy.scale_deployment(session.kube, namespace, name, replicas))


def manual_scaling(
    session: BenchSession,
    run: ExperimentRun,
    *,
    workload: str = "hello",
    low: int = 1,
    high: int = 4,
    repetitions: int = 2,
    mode: str = "operator",
    timeout_s: float = 120.0,
) -> ScalingResult:
    """Scale a function between ``low`` and ``high`` replicas through the scale
    subresource (as ``kubectl scale``); time each change from request to ready."""
    _check_mode(mode)
    kind = "WasmFunction" if mode == "operator" else "Deployment"
    rows = []
    with Workspace(session, run.experiment) as ws, _recording(session, run, ws.namespace) as rec:
        name = "scaled"
        _deploy_one(
            session, ws.namespace, name, workload, rec,
            mode=mode, replicas=low, timeout_s=timeout_s,
        )  # fmt: skip
        for repetition in range(1, repetitions + 1):
            for direction, frm, to in (("out", low, high), ("in", high, low)):
                requested = _scale(session, mode, ws.namespace, name, to)
                rec.mark("scale", requested, detail=f"{frm}->{to}")
                ready = session.run(
                    deploy.wait_replicas_ready(rec, kind, name, to, requested, timeout_s)
                )
                deployment_ready = deploy.first_ready_ms(
                    rec.rows, "Deployment", name, requested, to
                )
                rows.append(
                    {
                        "repetition": repetition,
                        "direction": direction,
                        "from_replicas": frm,
                        "to_replicas": to,
                        "requested_ms": requested,
                        "deployment_ready_ms": deployment_ready,
                        "ready_ms": ready,
                        "latency_ms": ready - requested,
                    }
                )
        events = rec.table()
    for row in rows:
        # Scale-out: from the last new Pod Ready to the function's status saying so.
        pods_ready = watch.pods_ready_ms(events, name, row["to_replicas"], row["requested_ms"])
        row["pods_ready_ms"] = pods_ready
        out = row["direction"] == "out" and mode == "operator"
        row["status_lag_ms"] = row["ready_ms"] - pods_ready if out else None
    steps = pd.DataFrame(rows)
    steps["mode"] = mode
    run.write_table("scale_steps", steps)
    out, back = steps[steps["direction"] == "out"], steps[steps["direction"] == "in"]
    run.observe(_metric(mode, "scale_latency_ms"), out["latency_ms"], direction="out")
    run.observe(_metric(mode, "scale_in_latency_ms"), back["latency_ms"], direction="in")
    if mode == "operator":
        run.observe("status_lag_ms", steps["status_lag_ms"].dropna(), source="scaling")
    return ScalingResult(steps, events, pd.DataFrame())


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


def load_scaling(
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
) -> ScalingResult:
    """Drive an autoscaled function with a Locust load shape; record each scaling
    decision (desired replicas changed) and when its replicas were ready.

    ``query`` and ``shape`` take strings (``n=22``, ``step:peak=8,duration=60``) or
    mappings (``{"n": 22}``, ``{"kind": "step", "peak": 8}``); papermill's parameter
    parser cannot read a default value containing ``=``, so notebooks use mappings."""
    spec = {
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
    load_shape = Shape.parse(shape) if isinstance(shape, str) else Shape(**shape)
    if not isinstance(query, str):
        query = urlencode(query)
    with Workspace(session, run.experiment) as ws, _recording(session, run, ws.namespace) as rec:
        name = "autoscaled"
        _deploy_one(
            session, ws.namespace, name, workload, rec,
            mode="operator", replicas=1, timeout_s=timeout_s, spec=spec,
        )  # fmt: skip
        _serving(session, ws.namespace, [name], timeout_s)
        config = LocustConfig(
            host=deploy.gateway_base(),
            functions=(MixEntry(ws.namespace, name, "/", query),),
            shape=load_shape,
            user_rps=user_rps,
            run_time_s=load_shape.duration + 5,
            fail_ratio=1.0,  # the figures show the failures; the run should not stop
        )
        load_started = rec.mark("load-start")
        result = run_locust(config, run.folder / "locust", check=False)
        time.sleep(2.0)
        events = rec.table()
    decisions = scaling_decisions(events, name, load_started)
    raw = read_raw_log(result) if result.raw_log.exists() else pd.DataFrame()
    first_request = float(raw["timestamp_ms"].min()) if not raw.empty else load_started
    step_s = load_shape.duration / max(1, load_shape.steps)
    if not decisions.empty:
        # Reaction: from the start of the load step the decision answered to the decision.
        offsets = (decisions["decided_ms"] - first_request) / 1000
        step_start = first_request + (offsets // step_s).clip(lower=0) * step_s * 1000
        decisions["load_step_ms"] = step_start
        decisions["reaction_ms"] = decisions["decided_ms"] - step_start
    history = read_history(result) if result.history_csv.exists() else pd.DataFrame()
    run.write_table("decisions", decisions)
    run.write_table("requests", raw)
    run.write_table("load_history", history)
    ups = (
        decisions[decisions["to_replicas"] > decisions["from_replicas"]]
        if not decisions.empty
        else decisions
    )
    if not ups.empty:
        run.observe("autoscale_reaction_ms", ups["reaction_ms"])
        run.observe("autoscale_ready_ms", ups["decision_to_ready_ms"].dropna())
    if not raw.empty:
        run.observe("request_latency_ms", raw.loc[raw["ok"], "latency_ms"], source="autoscaling")
    return ScalingResult(decisions, events, history)


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class LoadResult:
    requests: pd.DataFrame  # raw per-request log
    summary: pd.DataFrame  # per function: exact quantiles, failures, throughput
    history: pd.DataFrame  # Locust's per-second statistics
    returncode: int


def workload_mix(namespace: str, mix: str) -> list[MixEntry]:
    """``hello@3,fib?n=20`` (workloads, deployed under their own names) as entries."""
    return parse_mix(",".join(f"{namespace}/{item.strip()}" for item in mix.split(",") if item))


def load_latency(
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
) -> LoadResult:
    """Deploy the workloads of ``mix``, run Locust through the gateway, and report exact
    latency quantiles and the error rate from the raw request log."""
    _check_mode(mode)
    with Workspace(session, run.experiment) as ws:
        entries = workload_mix(ws.namespace, mix)
        names = sorted({e.service for e in entries})
        with _recording(session, run, ws.namespace) as rec:
            for name in names:
                _deploy_one(
                    session, ws.namespace, name, name, rec,
                    mode=mode, replicas=replicas, timeout_s=timeout_s,
                )  # fmt: skip
            _serving(session, ws.namespace, names, timeout_s)
            config = LocustConfig(
                host=deploy.gateway_base(),
                functions=tuple(entries),
                users=users,
                spawn_rate=spawn_rate,
                run_time_s=run_time_s,
                user_rps=user_rps,
                fail_ratio=fail_ratio,
            )
            result = run_locust(config, run.folder / "locust", check=False)
    raw = read_raw_log(result)
    summary = request_summary(raw)
    history = read_history(result)
    final = read_final(result)
    run.write_table("requests", raw)
    run.write_table("request_summary", summary)
    run.write_table("load_history", history)
    run.write_table("locust_final", final)
    run.observe(_metric(mode, "request_latency_ms"), raw.loc[raw["ok"], "latency_ms"])
    if mode == "operator":
        run.count("requests_total", len(raw))
        run.count("requests_failed", int((~raw["ok"]).sum()))
    else:
        run.count("plain_requests_total", len(raw))
        run.count("plain_requests_failed", int((~raw["ok"]).sum()))
    return LoadResult(raw, summary, history, result.returncode)


# --------------------------------------------------------------------------- recovery


@dataclass(frozen=True)
class RecoveryResult:
    recovery: pd.DataFrame  # one row: both views of the fault
    probes: pd.DataFrame
    events: pd.DataFrame
    fault_ms: float


def _wait_api(session: BenchSession, timeout_s: float) -> float:
    """Client time at which the API server answers /readyz again."""

    async def ready() -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                await session.kube.get("/readyz")
                return now_ms()
            except Exception:
                await asyncio.sleep(0.1)
        raise TimeoutError(f"the API server was not ready within {timeout_s:g} s")

    return session.run(ready())


def fault_recovery(
    session: BenchSession,
    run: ExperimentRun,
    *,
    fault: str = "pod-delete",
    workload: str = "hello",
    replicas: int = 2,
    mode: str = "operator",
    probe_rate_hz: float = 20.0,
    settle_s: float = 2.0,
    observe_s: float = 30.0,
    down_s: float = 5.0,
    toleration_s: int | None = 2,
    timeout_s: float = 120.0,
) -> RecoveryResult:
    """Inject one fault while probing the function; report the client's outage and the
    time until the desired replicas are ready again.

    pod-crash, pod-delete and node-kill: time zero is the fault. operator-kill: the
    operator stays down ``down_s`` while the function is scaled up by one; time zero is
    the operator's restart, recovery the new replica ready. apiserver-restart: time zero
    is the restart; the API must answer again and the function keep (or regain) its
    replicas. node-kill, operator-kill and apiserver-restart act on shared components.

    ``toleration_s`` sets the function's ``placement.tolerationSeconds`` (how long its
    Pods stay bound to a failed node); the CRD's default, like upstream's, is 300 s, so
    without it a node failure takes minutes to fail over. None keeps the default.
    """
    _check_mode(mode)
    if fault not in FAULTS:
        raise ValueError(f"fault must be one of {', '.join(FAULTS)}, got {fault!r}")
    if fault == "operator-kill" and mode != "operator":
        raise ValueError("operator-kill needs mode='operator'")
    kind = "WasmFunction" if mode == "operator" else "Deployment"
    name = "victim"
    desired = replicas
    restore: list[str] = []
    spec = None
    if mode == "operator" and toleration_s is not None:
        spec = {"placement": {"tolerationSeconds": toleration_s}}
    with Workspace(session, run.experiment) as ws, _recording(session, run, ws.namespace) as rec:
        _deploy_one(
            session, ws.namespace, name, workload, rec,
            mode=mode, replicas=replicas, timeout_s=timeout_s, spec=spec,
        )  # fmt: skip
        _serving(session, ws.namespace, [name], timeout_s)
        prober = probe.Prober(deploy.gateway_url(ws.namespace, name), probe_rate_hz)
        session.run(prober.start())
        try:
            time.sleep(settle_s)
            pods = [
                p for p in rec.objects("Pod")
                if watch.pod_ready(p) and watch.function_of("Pod", p) == name
            ]  # fmt: skip
            victim = pods[0]
            pod_name, node = victim["metadata"]["name"], victim["spec"]["nodeName"]
            if fault == "pod-crash":
                event = faults.crash_container(ws.namespace, pod_name, node)
            elif fault == "pod-delete":
                event = session.run(faults.delete_pod(session.kube, ws.namespace, pod_name))
            elif fault == "node-kill":
                event = faults.kill_node(node)
                restore.append(node)
            elif fault == "operator-kill":
                faults.kill_operator()
                restore.append("operator")
                time.sleep(0.5)
                desired = replicas + 1
                session.run(deploy.scale_function(session.kube, ws.namespace, name, desired))
                time.sleep(down_s)
                event = faults.start_operator()
                restore.remove("operator")
            else:
                event = faults.restart_apiserver()
            rec.mark(event.kind, event.t_ms, detail=event.target)
            api_back = _wait_api(session, timeout_s) if fault == "apiserver-restart" else None

            def ready_count(r: watch.Recorder) -> int | None:
                obj = r.get(kind, name)
                if obj is None or (obj.get("spec") or {}).get("replicas") != desired:
                    return None
                return (obj.get("status") or {}).get("readyReplicas") or 0

            def degraded(r: watch.Recorder) -> bool:
                count = ready_count(r)
                return count is not None and count < desired

            def restored(r: watch.Recorder) -> bool:
                count = ready_count(r)
                return count is not None and count >= desired

            # First the fault shows (or, after a while, it evidently did not), then the
            # desired replicas come back. A killed node shows only once the node
            # controller's grace period has passed, so wait for that as long as it takes.
            show_s = observe_s if fault in ("node-kill", "apiserver-restart") else 5.0
            with contextlib.suppress(TimeoutError):
                session.run(rec.wait_for(degraded, min(observe_s, show_s)))
            try:
                session.run(rec.wait_for(restored, observe_s))
            except TimeoutError:
                log.warning("%s: not back to %d ready replicas in %g s", fault, desired, observe_s)
            time.sleep(min(2.0, observe_s))
        finally:
            session.run(prober.stop())
            for component in restore:
                if component == "operator":
                    faults.start_operator()
                else:
                    faults.start_node(component)
        events = rec.table()
    probes = prober.table()
    client = recovery.client_recovery(probes, event.t_ms)
    cluster = recovery.cluster_recovery(events, event.t_ms, name, desired, kind)
    total = recovery.recovery_ms(client, cluster)
    row = recovery.recovery_row(
        client, cluster, fault=fault, mode=mode, replicas=replicas, recovery_ms=total,
        toleration_s=toleration_s,
        api_back_ms=None if api_back is None else api_back - event.t_ms,
    )  # fmt: skip
    table = pd.DataFrame([row])
    run.write_table("recovery", table)
    run.write_table("probes", probes)
    if total is not None:
        run.observe(_metric(mode, "recovery_ms"), total, fault=fault)
    run.count("fault_requests_total", len(probes))
    run.count("fault_requests_failed", int((~probes["ok"].astype(bool)).sum()))
    return RecoveryResult(table, probes, events, event.t_ms)


# --------------------------------------------------------------------------- operator overhead


@dataclass(frozen=True)
class OverheadResult:
    samples: pd.DataFrame  # t_ms, cpu_millicores, rss_mib, phase
    phases: pd.DataFrame  # per phase statistics


def operator_overhead(
    session: BenchSession,
    run: ExperimentRun,
    *,
    functions_count: int = 10,
    workload: str = "hello",
    idle_s: float = 10.0,
    hold_s: float = 10.0,
    interval_s: float = 0.5,
    timeout_s: float = 180.0,
) -> OverheadResult:
    """The operator's CPU and memory while idle, while deploying ``functions_count``
    functions, while holding them, and while deleting them."""
    pid = process_sampler.operator_pid()
    if pid is None:
        raise RuntimeError("no operator process found (is it running? 'wasmop cluster status')")
    marks: list[tuple[str, float]] = []
    sampler = process_sampler.ProcessSampler(
        process_sampler.operator_pid, interval_s, label="operator"
    )
    with Workspace(session, run.experiment) as ws, _recording(session, run, ws.namespace) as rec:
        sampler.start()
        try:
            marks.append(("idle", now_ms()))
            time.sleep(idle_s)
            marks.append(("deploying", now_ms()))
            names = [f"fn-{i:03d}" for i in range(functions_count)]
            outcomes = _deploy(
                session, ws.namespace, names, workload, rec,
                mode="operator", replicas=1, timeout_s=timeout_s,
            )  # fmt: skip
            marks.append(("holding", now_ms()))
            time.sleep(hold_s)
            marks.append(("deleting", now_ms()))
            session.run(deploy.delete_functions(session.kube, ws.namespace, names))

            def gone(r: watch.Recorder) -> bool:
                return not r.objects("WasmFunction") and not r.objects("Deployment")

            session.run(rec.wait_for(gone, timeout_s))
            marks.append(("idle-after", now_ms()))
            time.sleep(min(idle_s, 5.0))
        finally:
            samples = sampler.stop()
    bounds = pd.DataFrame(marks, columns=["phase", "start_ms"])
    samples = samples.sort_values("t_ms")
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
    run.write_table("samples", samples)
    run.write_table("phases", stats)
    run.write_table("deployments", deploy.outcomes_frame(outcomes))
    run.observe("operator_cpu_millicores", samples["cpu_millicores"], functions=functions_count)
    run.observe("operator_rss_mib", samples["rss_mib"], functions=functions_count)
    return OverheadResult(samples, stats)


# --------------------------------------------------------------------------- edge network


@dataclass(frozen=True)
class EdgeResult:
    probes: pd.DataFrame  # every request, with the link condition
    summary: pd.DataFrame  # per condition: quantiles and failures


def edge_network(
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
) -> EdgeResult:
    """Request latency and errors of a function pinned to ``node`` under each delay and
    loss on that node's link (the node agent's link emulation)."""
    _check_mode(mode)
    zone = session.run(session.kube.get(api_path("v1", "nodes", None, node)))["metadata"][
        "labels"
    ].get("topology.kubernetes.io/zone")
    frames = []
    with Workspace(session, run.experiment) as ws, _recording(session, run, ws.namespace) as rec:
        name = "edge"
        spec = {"placement": {"zone": zone}} if zone else None
        if mode == "plain":
            session.run(deploy.ensure_module(session.kube, ws.namespace, workload))
            body = deploy.plain_deployment(name, deploy.module_configmap_name(workload))
            body["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
            created = session.run(deploy.create_plain(session.kube, ws.namespace, body))
            session.run(deploy.wait_replicas_ready(rec, "Deployment", name, 1, created, timeout_s))
        else:
            _deploy_one(
                session, ws.namespace, name, workload, rec,
                mode=mode, replicas=1, timeout_s=timeout_s, spec=spec,
            )  # fmt: skip
        _serving(session, ws.namespace, [name], timeout_s)
        url = deploy.gateway_url(ws.namespace, name)
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
    probes = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    probes["node"] = node
    rows = []
    for (delay, loss), group in probes.groupby(["delay_ms", "loss_percent"], sort=True):
        from wasmop.bench.stats import describe

        stats = describe(group.loc[group["ok"].astype(bool), "latency_ms"])
        rows.append(
            {
                "delay_ms": delay,
                "loss_percent": loss,
                "requests": len(group),
                "failures": int((~group["ok"].astype(bool)).sum()),
                **{f"latency_ms_{k}": v for k, v in stats.items() if k != "n"},
            }
        )
    summary = pd.DataFrame(rows)
    run.write_table("probes", probes)
    run.write_table("conditions", summary)
    for (delay, loss), group in probes.groupby(["delay_ms", "loss_percent"]):
        run.observe(
            "edge_latency_ms",
            group.loc[group["ok"].astype(bool), "latency_ms"],
            delay_ms=delay,
            loss_percent=loss,
        )
    return EdgeResult(probes, summary)
