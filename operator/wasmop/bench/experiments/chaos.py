"""Chaos soak: many functions under steady load through the gateway while a seeded random
schedule of faults, rollouts and scale changes runs; then the cluster's invariants.

Each event gets a *window*, from its start to the next event's (so the requests of a
rollout whose old Pods are still draining count with it). Its *recovery* runs from its
*anchor* until everything is healthy again, judged every quarter second: the API answers,
every node agent, the operator and the gateway say they are healthy, and every function
has its desired replicas Ready at its current generation with its rollout complete. The
anchor is the injection, except for a fault that is held for a while (a partition, a
freeze), whose anchor is its end: nothing can recover while it lasts, and its requests
lost and success rate cover its whole window anyway. A fault nothing noticed recovered
in 0 s. A killed node stays down until its Pods have moved (that is its recovery), then
its agent is started again within the same window.

Raw data: ``schedule.json`` (the planned events), ``events.jsonl`` (each as injected:
start, anchor, end, target, details), ``health.csv`` (the quarter-second samples),
``invariants.json``, ``watch_events.csv`` (with a marker per event) and Locust's output in
``locust/`` (the raw request log among it). Tables: ``windows`` (one row per event),
``recovery_by_kind``, ``invariants``, ``health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import pandas as pd

from wasmop.bench import deploy, faults, figures
from wasmop.bench.analysis import Analysis
from wasmop.bench.clock import now_ms
from wasmop.bench.experiments.base import Experiment, RawData, function_names
from wasmop.bench.experiments.steps import Workspace, deploy_workload, recording, wait_serving
from wasmop.bench.load import RAW_LOG, LocustConfig, read_raw_log, start_locust
from wasmop.bench.mix import MixEntry
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession
from wasmop.bench.stats import describe
from wasmop.bench.watch import Recorder, deployment_ready, function_ready, pod_ready
from wasmop.cluster import manager
from wasmop.cluster.layout import StateLayout
from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.node import fault_client
from wasmop.operator.owned_objects import LABEL_COMPONENT
from wasmop.wellknown import API_VERSION, FUNCTION_LABEL, FUNCTION_PLURAL, HEALTH_PORT

log = logging.getLogger(__name__)

# Faults: the five of the recovery experiment and five more (issue 12).
FAULTS = (
    "pod-crash",
    "pod-delete",
    "node-kill",
    "operator-kill",  # kill -9 in the middle of a burst of creations
    "apiserver-restart",
    "etcd-kill",
    "node-partition",
    "node-freeze",
    "bad-rollout",  # a rollout to a module that fails validation
)
CHANGES = ("rollout", "scale-out", "scale-in")
EVENT_KINDS = FAULTS + CHANGES
HELD = frozenset({"node-partition", "node-freeze"})  # recovery counts from their end
DRAINING = frozenset({"rollout", "scale-in"})  # Pods go away: no request may fail
STEADY = "steady"  # the window before the first event
BAD_WORKLOAD = "badimport"  # imports what no runtime provides: the operator refuses it

SCHEDULE = "schedule"
EVENTS = "events"
HEALTH = "health"
INVARIANTS = "invariants"
LOCUST = "locust"

HEALTH_COLUMNS = (
    "t_ms", "api_ok", "gateway_ok", "operator_ok", "nodes_ok", "nodes_total", "nodes_down",
    "functions_total", "functions_settled", "pods_terminating",
)  # fmt: skip


# --------------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class PlannedEvent:
    """One event of the schedule; which Pod of ``function`` is hit is ``pick`` modulo the
    number of its ready Pods at the time."""

    index: int
    round: int
    kind: str
    gap_s: float  # quiet time before it
    function: str = ""
    node: str = ""
    hold_s: float = 0.0
    pick: int = 0


def plan_schedule(
    seed: int,
    functions: Sequence[str],
    nodes: Sequence[str],
    *,
    rounds: int = 1,
    kinds: Sequence[str] = EVENT_KINDS,
    hold_s: tuple[float, float] = (3.0, 6.0),
    gap_s: tuple[float, float] = (1.0, 3.0),
) -> list[PlannedEvent]:
    """Every kind once per round, in a seeded random order (a scale-in always after the
    round's scale-out, on the same function); targets, hold times and gaps drawn from the
    same generator, so a seed names one schedule."""
    unknown = set(kinds) - set(EVENT_KINDS)
    if unknown:
        raise ValueError(f"unknown event kinds {sorted(unknown)}; known: {list(EVENT_KINDS)}")
    if not functions or not nodes:
        raise ValueError("a schedule needs functions and nodes to act on")
    rng = random.Random(seed)
    events: list[PlannedEvent] = []
    for round_ in range(rounds):
        order = list(kinds)
        rng.shuffle(order)
        if "scale-in" in order and "scale-out" in order:
            out, into = order.index("scale-out"), order.index("scale-in")
            if into < out:
                order[out], order[into] = order[into], order[out]
        scaled = rng.choice(list(functions))
        for kind in order:
            function = scaled if kind in ("scale-out", "scale-in") else rng.choice(list(functions))
            events.append(
                PlannedEvent(
                    index=len(events),
                    round=round_,
                    kind=kind,
                    gap_s=round(rng.uniform(*gap_s), 2),
                    function=function,
                    node=rng.choice(list(nodes)),
                    hold_s=round(rng.uniform(*hold_s), 2) if kind in HELD else 0.0,
                    pick=rng.randrange(1000),
                )
            )
    return events


# --------------------------------------------------------------------------- health


def function_settled(function: Mapping[str, Any], deployment: Mapping[str, Any] | None) -> bool:
    """Ready at its desired replicas and current generation, and its rollout complete."""
    return function_ready(function) and deployment is not None and deployment_ready(deployment)


def _components_ok(row: Mapping[str, Any], exempt_nodes: Sequence[str] = ()) -> bool:
    """The API, gateway, operator and node agents (but those in ``exempt_nodes``) answer."""
    names = row.get("nodes_down")
    down = {n for n in names.split(",") if n} if isinstance(names, str) else set()
    return bool(
        row["api_ok"] and row["gateway_ok"] and row["operator_ok"] and down <= set(exempt_nodes)
    )


def _healthy(row: Mapping[str, Any], exempt_nodes: Sequence[str] = ()) -> bool:
    """A health sample with everything working (nodes in ``exempt_nodes`` may be down)."""
    return _components_ok(row, exempt_nodes) and bool(
        row["functions_total"] > 0 and row["functions_settled"] == row["functions_total"]
    )


async def _answers(http: aiohttp.ClientSession, url: str, timeout_s: float) -> bool:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            await response.read()
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


@dataclass
class HealthSampler:
    """Every ``interval_s``: does each part answer, and is every function settled."""

    kube: Kube
    recorder: Recorder
    layout: StateLayout
    nodes: Sequence[str]
    operator_url: str
    gateway_url: str
    interval_s: float = 0.25
    rows: list[dict[str, Any]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _api(self) -> bool:
        try:
            await self.kube.request("GET", "/readyz", timeout=1.0)
            return True
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def _node(self, http: aiohttp.ClientSession, node: str) -> bool:
        try:
            info = fault_client.node_info(self.layout.run, node)
        except fault_client.NodeUnavailable:
            return False
        # The kubelet's plain-HTTP health port (10250 is the TLS kubelet API).
        return await _answers(http, f"http://{info['address']}:{HEALTH_PORT}/healthz", 0.5)

    def _functions(self) -> tuple[int, int, int]:
        deployments = {d["metadata"]["name"]: d for d in self.recorder.objects("Deployment")}
        functions = self.recorder.objects("WasmFunction")
        settled = sum(
            function_settled(f, deployments.get(f["metadata"]["name"])) for f in functions
        )
        terminating = sum(
            bool(p["metadata"].get("deletionTimestamp")) for p in self.recorder.objects("Pod")
        )
        return len(functions), settled, terminating

    async def sample(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        api, gateway, operator, *nodes = await asyncio.gather(
            self._api(),
            _answers(http, self.gateway_url, 0.5),
            _answers(http, self.operator_url, 0.5),
            *(self._node(http, n) for n in self.nodes),
        )
        total, settled, terminating = self._functions()
        return {
            # When the answers were in: a part that answers only after a timeout's worth
            # of waiting is healthy from then, not from when it was asked.
            "t_ms": now_ms(),
            "api_ok": api,
            "gateway_ok": gateway,
            "operator_ok": operator,
            "nodes_ok": sum(nodes),
            "nodes_total": len(nodes),
            "nodes_down": ",".join(n for n, ok in zip(self.nodes, nodes, strict=True) if not ok),
            "functions_total": total,
            "functions_settled": settled,
            "pods_terminating": terminating,
        }

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                started = time.monotonic()
                self.rows.append(await self.sample(http))
                await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def healthy_since(self, after_ms: float, exempt_nodes: Sequence[str] = ()) -> float | None:
        """Start of the current run of healthy samples, if it began after ``after_ms``
        and the latest sample is healthy."""
        since = None
        for row in reversed(self.rows):
            if row["t_ms"] < after_ms or not _healthy(row, exempt_nodes):
                break
            since = row["t_ms"]
        return since

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(HEALTH_COLUMNS))


# --------------------------------------------------------------------------- injection


@dataclass
class Soak:
    """What the injectors act on, and what they have recorded."""

    session: BenchSession
    namespace: str
    recorder: Recorder
    health: HealthSampler
    workload: str
    replicas: int
    burst: int
    recovery_timeout_s: float
    module: Mapping[str, Any]  # spec.module of the soak's functions, for the bursts
    node_grace_s: float = 4.0  # the node lifecycle controller's grace period
    stable_s: float = 1.0
    min_observe_s: float = 2.0
    versions: itertools.count = field(default_factory=lambda: itertools.count(1))
    bursts: itertools.count = field(default_factory=itertools.count)

    def run(self, coro: Any) -> Any:
        return self.session.run(coro)

    def ready_pods(self, function: str) -> list[dict[str, Any]]:
        pods = [
            p
            for p in self.recorder.objects("Pod")
            if (p["metadata"].get("labels") or {}).get(FUNCTION_LABEL) == function and pod_ready(p)
        ]
        return sorted(pods, key=lambda p: p["metadata"]["name"])

    def wait_degraded(
        self, after_ms: float, exempt_nodes: Sequence[str], timeout_s: float
    ) -> float | None:
        """Wait until a sample after ``after_ms`` shows the fault; its time, or None."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for row in reversed(self.health.rows):
                if row["t_ms"] < after_ms:
                    break
                if not _healthy(row, exempt_nodes):
                    return float(row["t_ms"])
            time.sleep(0.1)
        return None

    def wait_recovered(self, anchor_ms: float, exempt_nodes: Sequence[str] = ()) -> float | None:
        """Wait until everything has been healthy for ``stable_s`` (and at least
        ``min_observe_s`` have passed since the anchor, so a fault the status shows late
        is seen); the start of that healthy run, or None after the timeout."""
        deadline = time.monotonic() + self.recovery_timeout_s
        while time.monotonic() < deadline:
            since = self.health.healthy_since(anchor_ms, exempt_nodes)
            now = now_ms()
            if (
                since is not None
                and now - since >= self.stable_s * 1000
                and now - anchor_ms >= self.min_observe_s * 1000
            ):
                return since
            time.sleep(0.1)
        log.warning("not recovered %g s after the anchor", self.recovery_timeout_s)
        return None

    def patch_function(self, name: str, spec: Mapping[str, Any]) -> float:
        t = now_ms()
        path = api_path(API_VERSION, FUNCTION_PLURAL, self.namespace, name)
        self.run(self.session.kube.patch(path, {"spec": dict(spec)}))
        return t


@dataclass
class Injected:
    """One event as it happened (``raw/events.jsonl``)."""

    index: int
    kind: str
    target: str
    start_ms: float
    anchor_ms: float
    end_ms: float = 0.0
    exempt_nodes: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


def _pod_fault(soak: Soak, event: PlannedEvent) -> Injected:
    pods = soak.ready_pods(event.function)
    if not pods:
        raise faults.FaultError(f"{event.function} has no ready Pod to hit")
    pod = pods[event.pick % len(pods)]
    name, node = pod["metadata"]["name"], pod["spec"]["nodeName"]
    if event.kind == "pod-crash":
        fault = faults.crash_container(soak.namespace, name, node)
    else:
        fault = soak.run(faults.delete_pod(soak.session.kube, soak.namespace, name))
    return Injected(event.index, event.kind, f"{soak.namespace}/{name}", fault.t_ms, fault.t_ms)


def _node_kill(soak: Soak, event: PlannedEvent) -> Injected:
    """Kill the agent and keep it down until its Pods have moved to other nodes; then start
    it again and wait until it has finished the evicted Pods' deletion."""
    fault = faults.kill_node(event.node)
    injected = Injected(
        event.index, event.kind, event.node, fault.t_ms, fault.t_ms, exempt_nodes=[event.node]
    )
    try:
        # The status shows the dead node's Pods ready until the node lifecycle controller
        # has noticed (its grace period): wait for that before waiting for the move.
        shown = soak.wait_degraded(fault.t_ms, [event.node], soak.node_grace_s + 10)
        moved = soak.wait_recovered(shown or fault.t_ms, exempt_nodes=[event.node])
    finally:
        restart = faults.start_node(event.node)
    injected.detail = {"shown_ms": shown, "moved_ms": moved, "restarted_ms": restart.t_ms}
    return injected


def burst_manifests(
    names: Sequence[str], workload: str, replicas: int, module: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The burst's WasmFunctions, with the module source the soak's own functions have
    (a default ConfigMap source named a ConfigMap the soak's namespace does not hold)."""
    return [deploy.function_manifest(n, workload, replicas=replicas, module=module) for n in names]


def _operator_kill(soak: Soak, event: PlannedEvent) -> Injected:
    """Create a burst of functions and kill -9 the operator while it works on them."""
    burst = next(soak.bursts)
    names = [f"burst-{burst:02d}-{i}" for i in range(soak.burst)]
    manifests = burst_manifests(names, soak.workload, soak.replicas, soak.module)
    kube = soak.session.kube

    async def create_all() -> None:
        await asyncio.gather(*(deploy.create_function(kube, soak.namespace, m) for m in manifests))

    started = now_ms()
    creating = soak.session.submit(create_all())
    time.sleep(0.05 * soak.burst)  # some created, the operator busy with them
    fault = soak.session.run(faults.kill_operator(kube))
    creating.result(timeout=60)
    return Injected(
        event.index, event.kind, "operator", started, fault.t_ms,
        detail={"burst": names, "killed_ms": fault.t_ms},
    )  # fmt: skip


def _apiserver_restart(soak: Soak, event: PlannedEvent) -> Injected:
    fault = faults.restart_apiserver()
    return Injected(
        event.index, event.kind, fault.target, fault.t_ms, fault.t_ms, detail={"done_ms": now_ms()}
    )


def _etcd_kill(soak: Soak, event: PlannedEvent) -> Injected:
    fault = faults.kill_etcd()
    return Injected(event.index, event.kind, fault.target, fault.t_ms, fault.t_ms)


def _partition(soak: Soak, event: PlannedEvent) -> Injected:
    cut = faults.partition_node(event.node)
    try:
        time.sleep(event.hold_s)
    finally:
        healed = faults.heal_node(event.node)
    return Injected(
        event.index, event.kind, event.node, cut.t_ms, healed.t_ms, detail={"held_s": event.hold_s}
    )


def _freeze(soak: Soak, event: PlannedEvent) -> Injected:
    fault = faults.freeze_node(event.node, event.hold_s)
    thaw_ms = float(fault.detail["thaw_ms"])
    time.sleep(max(0.0, (thaw_ms - now_ms()) / 1000))
    return Injected(
        event.index, event.kind, event.node, fault.t_ms, thaw_ms, detail={"held_s": event.hold_s}
    )


MODULE_SOURCES = ("image", "configMapRef", "url", "inline")  # exactly one is set


def module_replacing(module: Mapping[str, Any]) -> dict[str, Any]:
    """``spec.module`` for a merge patch that replaces the module's source: the sources it
    does not set are removed (null), or the server would hold two and refuse it."""
    return {**{source: None for source in MODULE_SOURCES}, **module}


def _bad_rollout(soak: Soak, event: PlannedEvent) -> Injected:
    """Roll a function to a module the operator must refuse; it has to stay on its
    revision and keep serving. Once refused, the spec goes back."""
    name = event.function
    before = soak.recorder.get("WasmFunction", name) or {}
    spec = before.get("spec") or {}
    revision = (before.get("status") or {}).get("currentRevision")
    good = {"module": module_replacing(spec.get("module") or {}), "version": spec.get("version")}
    bad_version = f"{spec.get('version')}-bad"
    start = soak.patch_function(
        name,
        {
            "module": module_replacing(
                {"configMapRef": {"name": deploy.module_configmap_name(BAD_WORKLOAD)}}
            ),
            "version": bad_version,
        },
    )

    def refused(rec: Recorder) -> dict[str, Any] | None:
        fn = rec.get("WasmFunction", name)
        if fn is None:
            return None
        status = fn.get("status") or {}
        if status.get("observedGeneration") != fn["metadata"].get("generation"):
            return None
        return fn if status.get("phase") == "Invalid" else None

    detail: dict[str, Any] = {"revision_before": revision}
    try:
        fn = soak.run(soak.recorder.wait_for(refused, soak.recovery_timeout_s))
        detail["refused_ms"] = now_ms()
        detail["revision_after"] = (fn.get("status") or {}).get("currentRevision")
        deployment = soak.recorder.get("Deployment", name) or {}
        template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
        detail["deployment_version"] = (template.get("annotations") or {}).get(
            "wasm.bits-dissertation.io/version"
        )
    except TimeoutError:
        detail["refused_ms"] = None
    finally:
        detail["reverted_ms"] = soak.patch_function(name, good)
    detail["stayed"] = detail.get("revision_after") == revision and detail.get(
        "deployment_version"
    ) == spec.get("version")
    return Injected(event.index, event.kind, name, start, start, detail=detail)


def _rollout(soak: Soak, event: PlannedEvent) -> Injected:
    version = f"2.0.{next(soak.versions)}"
    t = soak.patch_function(event.function, {"version": version})
    return Injected(event.index, event.kind, event.function, t, t, detail={"version": version})


def _scale(soak: Soak, event: PlannedEvent) -> Injected:
    to = soak.replicas + 1 if event.kind == "scale-out" else soak.replicas
    t = soak.run(deploy.scale_function(soak.session.kube, soak.namespace, event.function, to))
    return Injected(event.index, event.kind, event.function, t, t, detail={"replicas": to})


INJECTORS: dict[str, Callable[[Soak, PlannedEvent], Injected]] = {
    "pod-crash": _pod_fault,
    "pod-delete": _pod_fault,
    "node-kill": _node_kill,
    "operator-kill": _operator_kill,
    "apiserver-restart": _apiserver_restart,
    "etcd-kill": _etcd_kill,
    "node-partition": _partition,
    "node-freeze": _freeze,
    "bad-rollout": _bad_rollout,
    "rollout": _rollout,
    "scale-out": _scale,
    "scale-in": _scale,
}


# --------------------------------------------------------------------------- invariants


async def _operator_function_count(url: str) -> float | None:
    """The operator's ``wasmop_operator_functions`` gauge summed over phases."""
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response,
        ):
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("wasmop_operator_functions{")
    )


async def converge(kube: Kube, namespace: str, timeout_s: float) -> float:
    """Wait until every function is settled and no Pod is terminating; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        functions = await kube.list(api_path(API_VERSION, FUNCTION_PLURAL, namespace))
        deployments = await kube.list(api_path("apps/v1", "deployments", namespace))
        pods = await kube.list(api_path("v1", "pods", namespace))
        by_name = {d["metadata"]["name"]: d for d in deployments["items"]}
        if all(
            function_settled(f, by_name.get(f["metadata"]["name"])) for f in functions["items"]
        ) and not any(p["metadata"].get("deletionTimestamp") for p in pods["items"]):
            break
        await asyncio.sleep(0.5)
    return time.monotonic() - started


def orphaned_modules(
    modules: Sequence[dict[str, Any]], functions: Sequence[dict[str, Any]]
) -> list[str]:
    """Module ConfigMaps no function's revisions name: a function's own (labelled with it)
    must be named by that function; a shared one (``wasm-module-<digest>``, no function
    label) by any. (The soak's rollouts change the version, never the module, so no shared
    one falls out of use during it; the operator's resync would delete such a one.)"""
    named = [
        (f["metadata"]["name"], r.get("configMap"))
        for f in functions
        for r in (f.get("status") or {}).get("revisions") or []
    ]
    own, shared = set(named), {cm for _, cm in named}
    orphaned = []
    for c in modules:
        name = c["metadata"]["name"]
        function = (c["metadata"].get("labels") or {}).get(FUNCTION_LABEL)
        named_by = (function, name) in own if function else name in shared
        if not named_by:
            orphaned.append(name)
    return orphaned


async def check_invariants(
    kube: Kube, namespace: str, operator_metrics_url: str, gauge_wait_s: float = 15.0
) -> list[dict[str, Any]]:
    """The state a soak must leave behind, one row per invariant (``holds``, ``detail``)."""

    async def items(version: str, plural: str, **params: Any) -> list[dict[str, Any]]:
        return (await kube.list(api_path(version, plural, namespace), **params))["items"]

    functions = await items(API_VERSION, FUNCTION_PLURAL)
    names = {f["metadata"]["name"] for f in functions}
    rows = []

    def record(invariant: str, problems: Sequence[str]) -> None:
        rows.append(
            {"invariant": invariant, "holds": not problems, "detail": "; ".join(problems)[:500]}
        )

    deployments = await items("apps/v1", "deployments")
    by_name = {d["metadata"]["name"]: d for d in deployments}
    record(
        "every function Ready at its desired replicas, observedGeneration current",
        [
            f"{f['metadata']['name']}: {(f.get('status') or {}).get('phase')}"
            f" {(f.get('status') or {}).get('readyReplicas')}/{f['spec'].get('replicas')}"
            for f in functions
            if not function_settled(f, by_name.get(f["metadata"]["name"]))
        ],
    )
    services = await items("v1", "services")
    problems = []
    for kind, objects in (("Deployment", deployments), ("Service", services)):
        owners = [(o["metadata"].get("labels") or {}).get(FUNCTION_LABEL) for o in objects]
        for name in sorted(names):
            if owners.count(name) != 1:
                problems.append(f"{name} has {owners.count(name)} {kind}s")
        problems += [f"{kind} of no function: {o}" for o in sorted(set(owners) - names) if o]
    record("exactly one Deployment and one Service per function", problems)

    modules = await items("v1", "configmaps", labelSelector=f"{LABEL_COMPONENT}=module")
    record("no orphaned module ConfigMaps", orphaned_modules(modules, functions))
    replicasets = await items("apps/v1", "replicasets")
    problems = []
    for name, deployment in sorted(by_name.items()):
        owned = [
            r
            for r in replicasets
            if any(
                o.get("uid") == deployment["metadata"]["uid"]
                for o in r["metadata"].get("ownerReferences") or []
            )
        ]
        limit = int(deployment["spec"].get("revisionHistoryLimit", 10))
        if len(owned) > limit + 1:
            problems.append(f"{name}: {len(owned)} ReplicaSets, history limit {limit}")
    record("no ReplicaSets beyond the revision history limit", problems)
    pods = await items("v1", "pods")
    record(
        "no Pod stuck Terminating",
        [p["metadata"]["name"] for p in pods if p["metadata"].get("deletionTimestamp")],
    )
    # The gauge counts what the operator knows, in every namespace: compare with the API's
    # count across namespaces, a few times (another run's namespace may still be going).
    deadline = time.monotonic() + gauge_wait_s
    while True:
        gauge = await _operator_function_count(operator_metrics_url)
        listed = await kube.list(api_path(API_VERSION, FUNCTION_PLURAL))
        count = len(listed["items"])
        if gauge == count or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    record(
        "the operator's function gauge equals the API's count",
        [] if gauge == count else [f"gauge {gauge}, API {count}"],
    )
    return rows


# --------------------------------------------------------------------------- the experiment


def run_chaos(
    session: BenchSession,
    run: ExperimentRun,
    *,
    functions: int = 10,
    replicas: int = 2,
    workload: str = "hello",
    seed: int = 1,
    rounds: int = 1,
    duration_s: float = 0.0,
    kinds: Sequence[str] | None = None,
    users: int = 10,
    user_rps: float = 5.0,
    burst: int = 3,
    hold_s: Sequence[float] = (3.0, 6.0),
    gap_s: Sequence[float] = (1.0, 3.0),
    warmup_s: float = 3.0,
    recovery_timeout_s: float = 60.0,
    converge_timeout_s: float = 90.0,
    timeout_s: float = 180.0,
) -> None:
    """Deploy ``functions`` functions of ``replicas`` each, load them all through the
    gateway with Locust, and run the seeded schedule: ``rounds`` rounds, more while the
    soak is shorter than ``duration_s``; ``kinds`` (default: all of ``EVENT_KINDS``) are
    the events it draws from. Then stop the load and check the invariants."""
    if replicas < 2:
        raise ValueError("the soak needs at least 2 replicas per function: one may fail")
    layout = StateLayout.default()
    settings = manager.load_settings(layout)
    names = function_names(functions)
    planned_rounds = max(rounds, 1) if duration_s <= 0 else max(rounds, 1, 1000)
    schedule = plan_schedule(
        seed, names, settings.node_names(), rounds=planned_rounds, kinds=kinds or EVENT_KINDS,
        hold_s=(float(hold_s[0]), float(hold_s[1])), gap_s=(float(gap_s[0]), float(gap_s[1])),
    )  # fmt: skip
    operator_base = "http://127.0.0.1"
    with Workspace(session, run.experiment) as ws, recording(session, run, ws.namespace) as rec:
        session.run(deploy.ensure_module(session.kube, ws.namespace, BAD_WORKLOAD))
        outcomes = deploy_workload(
            session, ws.namespace, names, workload, rec,
            mode="operator", replicas=replicas, timeout_s=timeout_s,
        )  # fmt: skip
        failed = [o.name for o in outcomes if not o.ok]
        if failed:
            raise RuntimeError(f"functions not ready before the soak: {', '.join(failed)}")
        wait_serving(session, ws.namespace, names, timeout_s)
        health = HealthSampler(
            session.kube, rec, layout, settings.node_names(),
            operator_url=f"{operator_base}:{settings.operator_health_port}/readyz",
            gateway_url=f"{deploy.gateway_base()}/healthz",
        )  # fmt: skip
        module = (rec.get("WasmFunction", names[0]) or {}).get("spec", {}).get("module")
        if not module:
            raise RuntimeError(f"{names[0]} is not in the recording: no module for the bursts")
        soak = Soak(
            session, ws.namespace, rec, health, workload, replicas, burst, recovery_timeout_s,
            module, node_grace_s=settings.node_monitor_grace_seconds,
        )  # fmt: skip
        session.run(health.start())
        locust = start_locust(
            LocustConfig(
                host=deploy.gateway_base(),
                functions=tuple(MixEntry(ws.namespace, n) for n in names),
                users=users,
                spawn_rate=users,
                user_rps=user_rps,
                run_time_s=24 * 3600,  # stopped when the schedule is done
                fail_ratio=1.0,  # failures are results, not a reason to stop
            ),
            run.paths.raw / LOCUST,
        )
        injected: list[Injected] = []
        started = now_ms()
        try:
            rec.mark("soak-start", started)
            time.sleep(warmup_s)
            for event in schedule:
                elapsed_s = (now_ms() - started) / 1000
                if event.round >= rounds and elapsed_s >= duration_s:
                    break
                time.sleep(event.gap_s)
                log.info(
                    "chaos event %d: %s on %s",
                    event.index,
                    event.kind,
                    event.function or event.node,
                )
                record = INJECTORS[event.kind](soak, event)
                rec.mark(event.kind, record.start_ms, detail=record.target)
                recovered = soak.wait_recovered(record.anchor_ms, record.exempt_nodes)
                record.end_ms = now_ms()
                record.detail["recovered_live_ms"] = recovered
                injected.append(record)
        finally:
            locust.stop()
            ended = now_ms()
            rec.mark("soak-end", ended)
            session.run(health.stop())
            run.write_raw_json(SCHEDULE, [asdict(e) for e in schedule[: len(injected) + 1]])
            run.write_raw(EVENTS, [asdict(i) for i in injected])
            run.write_raw(HEALTH, health.table())
        converge_s = session.run(converge(session.kube, ws.namespace, converge_timeout_s))
        metrics_url = f"{operator_base}:{settings.operator_metrics_port}/metrics"
        invariants = session.run(check_invariants(session.kube, ws.namespace, metrics_url))
        run.write_raw_json(
            INVARIANTS,
            {"soak_start_ms": started, "soak_end_ms": ended, "converge_s": converge_s,
             "invariants": invariants},
        )  # fmt: skip


# --------------------------------------------------------------------------- analysis


def settled_timeline(events: pd.DataFrame) -> list[tuple[float, bool]]:
    """(time, every function settled) after each WasmFunction or Deployment event, from
    the watch events' millisecond timestamps: finer than the health samples, so a Pod
    replaced in 100 ms still shows."""
    rows = events[events["kind"].isin(["WasmFunction", "Deployment"])]
    functions: dict[str, bool] = {}
    deployments: dict[str, bool] = {}
    timeline = []
    for row in rows.sort_values("t_ms", kind="stable").itertuples(index=False):
        table = functions if row.kind == "WasmFunction" else deployments
        if row.event == "DELETED":
            table.pop(row.name, None)
        else:
            table[row.name] = row.ready is True
        settled = bool(functions) and all(
            ok and deployments.get(name, False) for name, ok in functions.items()
        )
        timeline.append((float(row.t_ms), settled))
    return timeline


def health_timeline(
    settled: Sequence[tuple[float, bool]], health: pd.DataFrame, exempt: Sequence[str]
) -> list[tuple[float, bool]]:
    """(time, healthy) at every change of either input: every function settled (watch
    events) and every part answering (health samples; nodes in ``exempt`` may not)."""
    components = [
        (float(row["t_ms"]), _components_ok(row, exempt)) for row in health.to_dict("records")
    ]
    merged = sorted(
        [(t, "settled", ok) for t, ok in settled] + [(t, "components", ok) for t, ok in components],
        key=lambda item: item[0],
    )
    state = {"settled": False, "components": True}
    timeline = []
    for t, what, ok in merged:
        state[what] = ok
        timeline.append((t, state["settled"] and state["components"]))
    return timeline


def window_recovery(
    timeline: Sequence[tuple[float, bool]], start_ms: float, anchor_ms: float, end_ms: float
) -> tuple[float | None, float | None]:
    """(degraded_ms, recovery_ms) of one window: the first unhealthy moment from the
    event's start, and from the anchor to the start of the healthy stretch that lasts to
    the window's end (0 if nothing was noticed, None if the window ended unhealthy)."""
    before = [ok for t, ok in timeline if t < start_ms]
    points = [(start_ms, before[-1] if before else True)]
    points += [(t, ok) for t, ok in timeline if start_ms <= t < end_ms]
    flags = [ok for _, ok in points]
    if all(flags):
        return None, 0.0
    degraded = points[flags.index(False)][0]
    if not flags[-1]:
        return degraded, None
    last_bad = len(flags) - 1 - flags[::-1].index(False)
    return degraded, max(0.0, points[last_bad + 1][0] - anchor_ms)


def event_windows(
    events: pd.DataFrame, settled: Sequence[tuple[float, bool]], health: pd.DataFrame,
    requests: pd.DataFrame, soak_start_ms: float, soak_end_ms: float,
) -> pd.DataFrame:  # fmt: skip
    """One row per event (and one for the steady start): its window, recovery, and the
    requests sent in it and how many failed."""
    starts = [soak_start_ms, *events["start_ms"].tolist()]
    ends = [*events["start_ms"].tolist(), soak_end_ms]
    rows = []
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        if i == 0:
            row: dict[str, Any] = {"index": -1, "kind": STEADY, "target": "", "anchor_ms": start}
            degraded, recovery = None, None
        else:
            event = events.iloc[i - 1]
            timeline = health_timeline(settled, health, list(event.get("exempt_nodes") or []))
            degraded, recovery = window_recovery(timeline, start, event["anchor_ms"], end)
            row = {
                "index": int(event["index"]), "kind": event["kind"], "target": event["target"],
                "anchor_ms": float(event["anchor_ms"]),
            }  # fmt: skip
        sent = requests[(requests["timestamp_ms"] >= start) & (requests["timestamp_ms"] < end)]
        failed = int((~sent["ok"]).sum())
        row.update(
            start_ms=start, end_ms=end, window_s=(end - start) / 1000,
            degraded_ms=degraded, recovery_ms=recovery,
            requests=len(sent), failed_requests=failed,
            success_ratio=(len(sent) - failed) / len(sent) if len(sent) else math.nan,
        )  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def recovery_by_kind(windows: pd.DataFrame) -> pd.DataFrame:
    """Per event kind: n, recovery p50 and max, requests and failures over its windows.
    A window that never recovered makes the kind's maximum infinite."""
    rows = []
    for kind, group in windows[windows["kind"] != STEADY].groupby("kind", sort=True):
        values = group["recovery_ms"].astype(float)
        stats = describe(values.dropna())
        requests, failed = int(group["requests"].sum()), int(group["failed_requests"].sum())
        rows.append(
            {
                "kind": kind,
                "n": len(group),
                "recovered": int(values.notna().sum()),
                "recovery_ms_p50": stats["p50"],
                # A window that never recovered: no maximum to report, the bound is missed.
                "recovery_ms_max": math.nan if values.isna().any() else stats["max"],
                "requests": requests,
                "failed_requests": failed,
                "success_ratio": (requests - failed) / requests if requests else math.nan,
            }
        )
    return pd.DataFrame(rows)


def analyse_chaos(raw: RawData) -> Analysis:
    record = raw.json(INVARIANTS) if raw.exists(f"{INVARIANTS}.json") else {}
    events = pd.DataFrame(raw.jsonl(EVENTS))
    if events.empty:
        events = pd.DataFrame(columns=["index", "kind", "target", "start_ms", "anchor_ms"])
    health = raw.table(HEALTH)
    requests = read_raw_log(raw.path(LOCUST, RAW_LOG))
    soak_start = float(record.get("soak_start_ms", raw.mark_ms("soak-start")))
    soak_end = float(record.get("soak_end_ms", raw.mark_ms("soak-end")))
    settled = settled_timeline(raw.events())
    windows = event_windows(events, settled, health, requests, soak_start, soak_end)
    by_kind = recovery_by_kind(windows)
    invariants = pd.DataFrame(
        record.get("invariants") or [], columns=["invariant", "holds", "detail"]
    )

    result = Analysis()
    result.table("windows", windows)
    result.table("recovery_by_kind", by_kind)
    result.table("invariants", invariants)
    result.table("health", health)
    in_soak = requests[
        (requests["timestamp_ms"] >= soak_start) & (requests["timestamp_ms"] < soak_end)
    ]
    result.count("chaos_requests_total", len(in_soak))
    result.count("chaos_requests_failed", int((~in_soak["ok"]).sum()))
    draining = windows[windows["kind"].isin(DRAINING)]
    result.count("drain_requests_total", int(draining["requests"].sum()))
    result.count("drain_requests_failed", int(draining["failed_requests"].sum()))
    result.count("chaos_invariants_total", len(invariants))
    result.count("chaos_invariants_held", int(invariants["holds"].astype(bool).sum()))
    for row in windows[windows["kind"].isin(FAULTS)].itertuples(index=False):
        # A window that ended unrecovered took at least its whole length: recorded as
        # that (censored), so it can never pass the bound.
        censored = row.recovery_ms is None or pd.isna(row.recovery_ms)
        value = row.end_ms - row.anchor_ms if censored else row.recovery_ms
        result.observe("recovery_ms", value, fault=row.kind, source="chaos", censored=censored)
    result.figure("chaos_timeline", figures.chaos_timeline(requests, windows, health))
    result.figure("chaos_recovery", figures.chaos_recovery(by_kind))
    result.figure("chaos_requests_lost", figures.chaos_requests_lost(windows))
    return result


EXPERIMENTS = (Experiment("chaos", run_chaos, analyse_chaos),)
