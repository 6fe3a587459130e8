"""The operator process: kopf handlers wired to the controllers, plus its telemetry.

Handlers are small: each parses what kopf hands it and calls a controller
(:mod:`.function_controller`, :mod:`.scaling`, runtimes below). They are registered on a
registry of our own with closures over one ``Operator``, so nothing lives in module globals.

Every handler is a watch-event handler: kopf writes nothing to a WasmFunction (no
progress or diff-base annotations, no finalizer). A function that needs a reconcile (new,
or a new generation) goes into one work queue (:mod:`.workqueue`) that retries it after
a delay when it must wait; the generation it reconciled lives in memory and its outcome
in status. The autoscaler and the resync are one loop each per WasmRuntime, run in a kopf
daemon of the runtime so that they stop while another replica leads (peering), never a
timer or daemon per function.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from wasmop.kube import ApiError, Kube, KubeConfig
from wasmop.kube.client import api_path
from wasmop.kube.events import EventRecorder
from wasmop.netguard import AddressPolicy
from wasmop.oci.policy import RegistryPolicy
from wasmop.operator.function_controller import RECONCILE_SLOTS, FunctionController
from wasmop.operator.images import ImageResolver
from wasmop.operator.module_sources import ModuleSources
from wasmop.operator.module_url import ModuleUrlFetcher
from wasmop.operator.modules import ModuleChecker
from wasmop.operator.node_index import NodeIndex, runtime_status
from wasmop.operator.owned_objects import LABEL_MANAGED_BY, MANAGED_BY
from wasmop.operator.scaling import Autoscaler, MetricsCollector, TickSchedule
from wasmop.operator.spec import SpecError, WasmRuntime
from wasmop.operator.status import now_rfc3339, set_condition
from wasmop.operator.telemetry import OperatorMetrics, serve_telemetry
from wasmop.operator.validation import summarize, validate_runtime
from wasmop.operator.workqueue import WorkQueue
from wasmop.supervision import TaskState, TaskSupervisor, register_metrics
from wasmop.wellknown import (
    API_VERSION,
    DOMAIN,
    FUNCTION_PLURAL,
    GROUP,
    RUNTIME_KIND,
    RUNTIME_PLURAL,
    VERSION,
)

log = logging.getLogger(__name__)

FUNCTIONS = (GROUP, VERSION, FUNCTION_PLURAL)
RUNTIMES = (GROUP, VERSION, RUNTIME_PLURAL)
ANNOTATION_PREFIX = DOMAIN
FINALIZER = f"{ANNOTATION_PREFIX}/operator"  # kopf's, for WasmRuntimes (their daemon)
FIRST_RESYNC_S = 5.0
# A shared module ConfigMap no function names is deleted once it is this old: one just
# created for a function whose reconcile is under way is left alone.
MODULE_CONFIGMAP_GRACE_S = 30.0  # after a start or a take-over: repair what changed meanwhile


# The kinds with a kopf daemon or change handler: the only ones whose events need kopf's
# diff against the last handled state (it decides whether a daemon's idling restarts).
KINDS_WITH_DIFFS = frozenset({RUNTIME_KIND})


class DiffBaseOfKinds(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base, built only for ``kinds``.

    kopf builds the diff-base of every event it processes, a deep copy of the whole body
    (managed fields and all) and another to clear progress fields, whatever the handlers
    are. The events of Pods, Deployments, functions and nodes go to event handlers only,
    which never read it; in a burst of 100 functions those copies took 45 % of the
    operator's CPU (cProfile of `make bench-operator`). For them it is empty now.
    """

    def __init__(self, kinds: frozenset[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kinds = kinds

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        if body.get("kind") not in self.kinds:
            return kopf.BodyEssence()
        return super().build(body=body, extra_fields=extra_fields)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if body.get("kind") not in self.kinds:
            return None
        return super().fetch(body=body)


@dataclass(frozen=True)
class OperatorSettings:
    """How the operator runs: metrics on 8080, health on 8081, a resync every minute and
    five minutes per handler by default (the flags of ``wasmop operator run``)."""

    kubeconfig: str | None = None
    listen_address: str = "127.0.0.1"
    metrics_port: int = 8080
    health_port: int = 8081
    resync_interval_s: float = 60.0
    handler_timeout_s: float = 300.0
    scaling_interval_s: float = 5.0
    gateway_url: str = "http://127.0.0.1:8000"
    peering_name: str = "wasmop"
    # A restarted replica with the same identity takes over its own peering record at
    # once, instead of pausing until its dead predecessor's record expires.
    peering_identity: str | None = None
    priority: int | None = None
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    headless_services: bool = False  # no cluster IPs (owned_objects.build_service)
    # Registries reached whatever their address (host[:port]); others must be public.
    registry_allow: tuple[str, ...] = ()
    # Address ranges (CIDRs) module URLs and registries may (allow) or may never (deny)
    # be reached at; by default only public unicast addresses (netguard.AddressPolicy).
    module_url_allow: tuple[str, ...] = ()
    module_url_deny: tuple[str, ...] = ()


@dataclass
class Operator:
    settings: OperatorSettings
    config: KubeConfig
    kube: Kube
    events: EventRecorder
    functions: FunctionController
    autoscaler: Autoscaler
    nodes: NodeIndex = field(default_factory=NodeIndex)
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # The operator's own loops (kopf runs its watches and exits if one of them fails).
    tasks: TaskSupervisor = field(default_factory=lambda: TaskSupervisor("operator"))
    _runtime_sync: asyncio.Task[None] | None = None
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    # Each runtime's status as last written: unchanged, it is not written again.
    _runtime_written: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Namespaces that held a function since this process started (the resync's sweep).
    seen_namespaces: set[str] = field(default_factory=set)
    queue: WorkQueue = field(init=False)

    def __post_init__(self) -> None:
        self.queue = WorkQueue(
            self._reconcile_key,  # type: ignore[arg-type]
            workers=RECONCILE_SLOTS,
            timeout_s=self.settings.handler_timeout_s,
            backoff_s=3.0,  # kopf's would be 60 s
            name="reconcile",
        )
        assert self.functions.sources is not None
        # A module source that changed: the functions that name it are reconciled again.
        self.functions.sources.on_change = self._source_changed

    @classmethod
    def create(cls, settings: OperatorSettings) -> Operator:
        config = KubeConfig.load(settings.kubeconfig)
        kube = Kube(config, user_agent="wasmop-operator", max_connections=100)
        events = EventRecorder(kube, "wasmop-operator", "wasmop-operator")
        # One address policy for every fetch a tenant aims: module URLs and registries.
        addresses = AddressPolicy.parse(settings.module_url_allow, settings.module_url_deny)
        functions = FunctionController(
            kube,
            events,
            ModuleChecker(),
            settings.gateway_url,
            headless_services=settings.headless_services,
            urls=ModuleUrlFetcher(addresses),
            images=ImageResolver(kube, RegistryPolicy.of(settings.registry_allow, addresses)),
            # Its watches hold their connections: a pool of their own, without a limit.
            sources=ModuleSources(Kube(config, user_agent="wasmop-operator", max_connections=0)),
        )
        nodes = NodeIndex()
        collector = MetricsCollector(nodes, settings.gateway_url, config)
        autoscaler = Autoscaler(
            kube, events, functions, collector, functions.pods, interval=settings.scaling_interval_s
        )
        return cls(settings, config, kube, events, functions, autoscaler, nodes)

    # --- runtimes -------------------------------------------------------------------

    def apply_runtime(self, event_type: str | None, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        if event_type == "DELETED":
            self.functions.runtimes.pop(name, None)
            self._runtime_written.pop(name, None)
        else:
            try:
                self.functions.runtimes[name] = WasmRuntime.from_body(body)
            except SpecError as exc:
                log.warning("WasmRuntime %s is not usable: %s", name, exc)
                self.functions.runtimes.pop(name, None)
        self.schedule_runtime_sync()

    def schedule_runtime_sync(self) -> None:
        """Coalesce bursts of node and runtime events into one status pass."""
        if self._runtime_sync is None or self._runtime_sync.done():
            self._runtime_sync = asyncio.create_task(self._sync_runtimes())

    async def _sync_runtimes(self) -> None:
        await asyncio.sleep(0.05)
        became_ready = []
        for name, runtime in list(self.functions.runtimes.items()):
            nodes = self.nodes.serving(runtime)
            users = sum(1 for s in self.functions.states.values() if s.runtime == name)
            status = runtime_status(runtime, nodes, users)
            problems = validate_runtime(runtime)
            reason, message = (
                summarize(problems) if problems else ("Valid", "defaults within maximums")
            )
            previous = self._runtime_written.get(name) or {}
            status["conditions"] = set_condition(
                previous.get("conditions"), "Validated", not problems, reason, message,
                observed_generation=runtime.generation, now=now_rfc3339(),
            )  # fmt: skip
            ready = status["readyNodes"] > 0 and not problems
            if ready and name not in self.functions.ready_runtimes:
                became_ready.append(name)
            (self.functions.ready_runtimes.add if ready else self.functions.ready_runtimes.discard)(
                name
            )
            if status == previous:
                continue  # its own write comes back as an event: nothing to write again
            try:
                await self.kube.patch(
                    api_path(API_VERSION, RUNTIME_PLURAL, name=name, subresource="status"),
                    {"status": status},
                )
                self._runtime_written[name] = status
            except ApiError as exc:
                log.warning("status of WasmRuntime %s not written: %s", name, exc)
        for name in became_ready:
            for key in self.functions.waiting_on(name):
                self.queue.add(key)

    # --- functions -------------------------------------------------------------------

    def observe_function(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        # A function created and deleted between two resyncs still leaves its module
        # ConfigMap in this namespace: the sweep must look there (_function_namespaces).
        self.seen_namespaces.add(meta["namespace"])
        if event_type == "DELETED":
            # Functions carry no finalizer: the watch's DELETED event is where the
            # operator lets go of one. Owner references let the garbage collector remove
            # what it owned.
            self.functions.forget(*key)
            self.autoscaler.forget(*key)
            self.queue.forget(key)
        else:
            if FINALIZER in (meta.get("finalizers") or []):
                self._spawn(self._release(body))
            if self.functions.observe_function(body):
                self.queue.add(key)

    def _source_changed(self, namespace: str, names: list[str]) -> None:
        log.info("module source in %s changed: reconciling %s", namespace, ", ".join(names))
        for name in names:
            self.queue.add((namespace, name))

    async def _release(self, body: dict[str, Any]) -> None:
        """Remove the finalizer an earlier operator's kopf daemon put on a function: no
        handler of this one would ever remove it, and the function could not be deleted."""
        meta = body["metadata"]
        path = api_path(API_VERSION, FUNCTION_PLURAL, meta["namespace"], meta["name"])
        kept = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        patch = {"metadata": {"finalizers": kept, "resourceVersion": meta["resourceVersion"]}}
        try:
            await self.kube.patch(path, patch)
        except ApiError as exc:
            if not (exc.not_found or exc.conflict):  # gone, or changed: its next event retries
                log.warning("finalizer of %s not removed: %s", path, exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reconcile_key(self, key: tuple[str, str]) -> None:
        state = self.functions.states.get(key)
        if state is None or state.body is None:
            return  # deleted meanwhile
        body = state.body
        with self.metrics.observe("reconcile"):
            try:
                # Never reconciled by any operator: nothing an earlier spec left to clean.
                await self.functions.reconcile(body, fresh=not body.get("status"))
            except ApiError as exc:
                if exc.status == 403 and "being terminated" in exc.message:
                    return  # its namespace is going away, and the function with it
                raise

    async def resync_all(self) -> dict[str, Any]:
        """A resync pass of every known runtime now (``POST /-/resync``)."""
        passes = {name: await self.resync(name) for name in list(self.functions.runtimes)}
        return {
            "functions": len(self.functions.states),
            "queued": sum(passes.values()),
            "runtimes": passes,
        }

    async def resync(self, runtime: str) -> int:
        """Reconcile the functions of ``runtime`` whose objects drifted or whose events
        were missed, judged from one listing each of functions, Deployments, Services and
        module ConfigMaps (metadata only): no request per function. Returns how many were
        queued."""
        scopes = self.settings.namespaces or (None,)  # None: every namespace
        managed = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        functions: list[dict[str, Any]] = []  # metadata only
        deployments: dict[tuple[str, str], dict[str, Any]] = {}
        services: dict[tuple[str, str], dict[str, Any]] = {}
        configmaps: dict[str, dict[str, dict[str, Any]]] = {}  # namespace -> name -> metadata
        for namespace in scopes:
            path = api_path(API_VERSION, FUNCTION_PLURAL, namespace)
            # An empty metadata list has "items": null.
            functions += (await self.kube.list_metadata(path)).get("items") or []
            for path, into in (
                (api_path("apps/v1", "deployments", namespace), deployments),
                (api_path("v1", "services", namespace), services),
            ):
                listing = await self.kube.list_metadata(path, labelSelector=managed)
                for item in listing.get("items") or []:
                    meta = item["metadata"]
                    into[(meta["namespace"], meta["name"])] = meta
        # Module ConfigMaps are the operator's only per namespace (rbac/operator.yaml):
        # listed in each namespace that holds a function or did since it started.
        for namespace in self.settings.namespaces or self._function_namespaces(functions):
            path = api_path("v1", "configmaps", namespace)
            try:
                listing = await self.kube.list_metadata(path, labelSelector=managed)
            except ApiError as exc:
                if exc.status != 403:
                    raise
                continue  # not enabled for functions: they wait with NamespaceNotEnabled
            for item in listing.get("items") or []:
                meta = item["metadata"]
                configmaps.setdefault(meta["namespace"], {})[meta["name"]] = meta
        seen = set()
        queued = 0
        for item in functions:
            meta = item["metadata"]
            key = (meta["namespace"], meta["name"])
            seen.add(key)
            if meta.get("deletionTimestamp"):
                continue
            state = self.functions.states.get(key)
            known = state.body["metadata"] if state is not None and state.body else {}
            if known.get("uid") != meta.get("uid") or known.get("generation") != meta.get(
                "generation"
            ):
                # An ADDED or MODIFIED event was missed: read the function itself.
                path = api_path(API_VERSION, FUNCTION_PLURAL, key[0], key[1])
                try:
                    self.observe_function("ADDED", await self.kube.get(path))
                except ApiError as exc:
                    if not exc.not_found:
                        raise
                self.queue.add(key)
                queued += 1
                continue
            if state is None or state.runtime != runtime:
                continue
            why = self.functions.drift(
                state, item, deployments.get(key), services.get(key),
                set(configmaps.get(key[0], {})),
            )  # fmt: skip
            if why is not None:
                log.info("resync: %s/%s: %s", *key, why)
                # A function whose reconcile is under way drifted only in that it has
                # not finished ("spec not reconciled", "Deployment missing"): that run
                # ends the drift. Running it once more doubled a burst's applies when the
                # resync fell within it (81 of 100 functions in one bench-operator run).
                self.queue.add(key, rerun=False)
                queued += 1
        for key, state in list(self.functions.states.items()):
            if key not in seen and state.runtime == runtime:
                self.observe_function(
                    "DELETED", {"metadata": {"namespace": key[0], "name": key[1]}}
                )
        # Every listed function is known now: a shared module ConfigMap none of them
        # names is garbage.
        await self.functions.sweep_module_configmaps(configmaps, MODULE_CONFIGMAP_GRACE_S)
        return queued

    def _function_namespaces(self, listed: list[dict[str, Any]]) -> list[str]:
        """Namespaces with a function now (``listed``: metadata) or seen since this
        process started (observe_function), whose module ConfigMaps the resync looks at."""
        self.seen_namespaces.update(item["metadata"]["namespace"] for item in listed)
        self.seen_namespaces.update(namespace for namespace, _ in self.functions.states)
        return sorted(self.seen_namespaces)

    # --- autoscaling -----------------------------------------------------------------

    def autoscaled(self, runtime: str) -> list[dict[str, Any]]:
        """The latest body of every function of ``runtime`` the operator autoscales."""
        found = []
        for state in self.functions.states.values():
            body = state.body
            if body is None or state.runtime != runtime:
                continue
            scaling = (body.get("spec") or {}).get("scaling") or {}
            if scaling and scaling.get("engine", "operator") == "operator":
                found.append(body)
        return found

    async def prime(self) -> None:
        """Know the runtimes and nodes before the first function is handled."""
        for item in (await self.kube.list(api_path(API_VERSION, RUNTIME_PLURAL))).get("items", []):
            self.apply_runtime("ADDED", item)
        for item in (await self.kube.list(api_path("v1", "nodes"))).get("items", []):
            self.nodes.apply("ADDED", item)
        self.schedule_runtime_sync()
        if self._runtime_sync is not None:
            await self._runtime_sync

    async def close(self) -> None:
        await self.autoscaler.collector.close()
        await self.functions.urls.close()
        if self.functions.sources is not None:
            await self.functions.sources.close()
            await self.functions.sources.kube.close()
        self.functions.checker.close()
        if self.functions.images is not None:
            await self.functions.images.close()
        await self.events.drain()
        await self.kube.close()


def build_registry(op: Operator) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=ANNOTATION_PREFIX
        )
        settings.persistence.diffbase_storage = DiffBaseOfKinds(
            KINDS_WITH_DIFFS, prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
        )
        settings.persistence.finalizer = FINALIZER
        settings.posting.enabled = False  # we post our own, meaningful Events
        # React within a millisecond, not kopf's 100 ms: each step of a function's way to
        # Ready (created, Pods Ready) waits for it, and a burst of events of one object is
        # cheap to handle one by one (most need no write).
        settings.batching.batch_window = 0.001
        settings.execution.max_workers = 8
        settings.watching.server_timeout = 600
        settings.peering.priority = op.settings.priority or random.randint(1, 10**6)
        # Replicas peer through the ClusterKopfPeering even when they watch only some
        # namespaces (kopf would look for a namespaced KopfPeering, which is not installed).
        settings.peering.clusterwide = True
        await asyncio.gather(op.prime(), op.functions.checker.warm_up())
        op.queue.start()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        c = op.config
        return kopf.ConnectionInfo(
            server=c.server,
            ca_path=c.ca_file,
            ca_data=c.ca_data,
            insecure=c.insecure,
            certificate_path=c.cert_file,
            certificate_data=c.cert_data,
            private_key_path=c.key_file,
            private_key_data=c.key_data,
            token=c.bearer_token(),
            default_namespace=c.namespace,
        )

    @kopf.on.event(*FUNCTIONS, registry=registry)
    async def function_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        with op.metrics.observe("function_event"):
            op.observe_function(type, _view(body))

    managed = {LABEL_MANAGED_BY: MANAGED_BY}

    @kopf.on.event("apps", "v1", "deployments", registry=registry, labels=managed)
    async def deployment_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        with op.metrics.observe("deployment_event"):
            await op.functions.observe_deployment(type or "ADDED", _view(body))

    @kopf.on.event("", "v1", "pods", registry=registry, labels=managed)
    async def pod_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        op.functions.observe_pod(type or "ADDED", _view(body))

    @kopf.on.event("", "v1", "nodes", registry=registry)
    async def node_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        if op.nodes.apply(type or "ADDED", _view(body)):
            op.schedule_runtime_sync()

    generations = itertools.count(1)

    @kopf.daemon(*RUNTIMES, registry=registry, cancellation_timeout=2.0)
    async def runtime_loops(stopped: kopf.DaemonStopped, name: str, **_: Any) -> None:
        """The resync and the autoscaler of this runtime's functions, one supervised loop
        each: a pass that fails is logged and the loop goes on. kopf stops them while
        another replica leads, and on the runtime's deletion."""

        async def resync(task: TaskState) -> None:
            await asyncio.sleep(FIRST_RESYNC_S)
            while True:
                with op.metrics.observe("resync"):
                    try:
                        await op.resync(name)
                        task.progress()
                    except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                        log.warning("resync of runtime %s failed: %s", name, exc)
                await asyncio.sleep(op.settings.resync_interval_s)

        async def autoscale(task: TaskState) -> None:
            schedule = TickSchedule(op.settings.scaling_interval_s)
            while True:
                functions = {
                    (b["metadata"]["namespace"], b["metadata"]["name"]): b
                    for b in op.autoscaled(name)
                }
                due = schedule.due(list(functions), time.monotonic())
                if due:
                    with op.metrics.observe("autoscale"):
                        await op.autoscaler.refresh()
                        for key in due:
                            delay = op.settings.scaling_interval_s
                            try:
                                before = op.autoscaler.decisions
                                delay = await op.autoscaler.tick(functions[key])
                                if op.autoscaler.decisions > before:
                                    op.metrics.scaling_decisions.labels("changed").inc()
                            except (ApiError, SpecError, aiohttp.ClientError) as exc:
                                log.warning("autoscaling %s/%s failed: %s", *key, exc)
                            schedule.done(key, time.monotonic(), delay)
                task.progress()
                await asyncio.sleep(schedule.sleep_for(time.monotonic()))

        # Numbered: a successor kopf starts may overlap this daemon's stopping.
        n = next(generations)
        names = (f"resync {n} of runtime {name}", f"autoscaler {n} of runtime {name}")
        op.tasks.start(names[0], resync, kind="resync", essential=False)
        op.tasks.start(names[1], autoscale, kind="autoscale", essential=False)
        try:
            await stopped.wait()
        finally:
            await op.tasks.stop(*names)

    @kopf.on.event(*RUNTIMES, registry=registry)
    async def runtime_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        op.apply_runtime(type or "ADDED", _view(body))

    return registry


def _view(body: kopf.Body) -> dict[str, Any]:
    """kopf's body as a dict without copying: for observers that read it before awaiting."""
    return dict(body)


async def run(settings: OperatorSettings, stop: asyncio.Event) -> None:
    # kopf reports every handler success at INFO; ours say what matters.
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("kopf.objects", "kopf.activities", "kopf._core"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # Except when replicas hand over work: that is worth a line in the log.
        logging.getLogger("kopf._core.engines.peering").setLevel(logging.INFO)
    op = Operator.create(settings)
    registry = build_registry(op)
    register_metrics(op.tasks, op.metrics.registry)
    runners = await serve_telemetry(
        op.metrics,
        op.functions.phases,
        op.ready,
        op.tasks.problems,
        host=settings.listen_address,
        metrics_port=settings.metrics_port,
        health_port=settings.health_port,
        resync=op.resync_all,
    )
    namespaces = list(settings.namespaces)
    try:
        await kopf.operator(
            registry=registry,
            clusterwide=not namespaces,
            namespaces=namespaces,
            peering_name=settings.peering_name,
            identity=settings.peering_identity,  # type: ignore[arg-type]
            standalone=False,
            priority=settings.priority,
            ready_flag=op.ready,
            stop_flag=stop,
        )
    finally:
        await op.queue.stop()
        await op.tasks.stop()
        for runner in runners:
            await runner.cleanup()
        await op.close()
