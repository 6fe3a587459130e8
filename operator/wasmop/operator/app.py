"""The operator process: kopf handlers wired to the controllers, plus its telemetry.

Handlers are small: each parses what kopf hands it and calls a controller
(:mod:`.function_controller`, :mod:`.scaling`, runtimes below). They are registered on a
registry of our own with closures over one ``Operator``, so nothing lives in module globals.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from wasmop.kube import ApiError, Kube, KubeConfig
from wasmop.kube.client import api_path
from wasmop.kube.events import EventRecorder
from wasmop.oci.policy import RegistryPolicy
from wasmop.operator.function_controller import FunctionController, RetryLater
from wasmop.operator.images import ImageResolver
from wasmop.operator.modules import ModuleChecker
from wasmop.operator.node_index import NodeIndex, runtime_status
from wasmop.operator.owned_objects import LABEL_MANAGED_BY, MANAGED_BY
from wasmop.operator.scaling import Autoscaler, MetricsCollector
from wasmop.operator.spec import SpecError, WasmRuntime
from wasmop.operator.status import now_rfc3339, set_condition
from wasmop.operator.telemetry import OperatorMetrics, serve_telemetry
from wasmop.operator.validation import summarize, validate_runtime
from wasmop.supervision import TaskState, TaskSupervisor, register_metrics
from wasmop.wellknown import (
    API_VERSION,
    DOMAIN,
    FUNCTION_PLURAL,
    GROUP,
    RUNTIME_PLURAL,
    VERSION,
)

log = logging.getLogger(__name__)

FUNCTIONS = (GROUP, VERSION, FUNCTION_PLURAL)
RUNTIMES = (GROUP, VERSION, RUNTIME_PLURAL)
ANNOTATION_PREFIX = DOMAIN
RESYNC_CONCURRENCY = 8


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
    _retries: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def create(cls, settings: OperatorSettings) -> Operator:
        config = KubeConfig.load(settings.kubeconfig)
        kube = Kube(config, user_agent="wasmop-operator", max_connections=100)
        events = EventRecorder(kube, "wasmop-operator", "wasmop-operator")
        functions = FunctionController(
            kube,
            events,
            ModuleChecker(),
            settings.gateway_url,
            headless_services=settings.headless_services,
            images=ImageResolver(kube, RegistryPolicy.of(settings.registry_allow)),
        )
        nodes = NodeIndex()
        collector = MetricsCollector(nodes, settings.gateway_url)
        autoscaler = Autoscaler(
            kube, events, functions, collector, functions.pods, interval=settings.scaling_interval_s
        )
        return cls(settings, config, kube, events, functions, autoscaler, nodes)

    # --- runtimes -------------------------------------------------------------------

    def apply_runtime(self, event_type: str | None, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        if event_type == "DELETED":
            self.functions.runtimes.pop(name, None)
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
            status["conditions"] = set_condition(
                [], "Validated", not problems, reason, message,
                observed_generation=runtime.generation, now=now_rfc3339(),
            )  # fmt: skip
            ready = status["readyNodes"] > 0 and not problems
            if ready and name not in self.functions.ready_runtimes:
                became_ready.append(name)
            (self.functions.ready_runtimes.add if ready else self.functions.ready_runtimes.discard)(
                name
            )
            try:
                await self.kube.patch(
                    api_path(API_VERSION, RUNTIME_PLURAL, name=name, subresource="status"),
                    {"status": status},
                )
            except ApiError as exc:
                log.warning("status of WasmRuntime %s not written: %s", name, exc)
        for name in became_ready:
            for namespace, fn in self.functions.waiting_on(name):
                state = self.functions.states.get((namespace, fn))
                if state is not None and state.body is not None:
                    task = asyncio.create_task(self._retry(state.body))
                    self._retries.add(task)
                    task.add_done_callback(self._retries.discard)

    async def _retry(self, body: dict[str, Any]) -> None:
        try:
            await self.functions.reconcile(body)
        except Exception as exc:
            log.info("early retry of %s failed: %s", body["metadata"]["name"], exc)

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
        if self.functions.http is not None:
            await self.functions.http.close()
        self.functions.checker.close()
        if self.functions.images is not None:
            await self.functions.images.close()
        await self.events.drain()
        await self.kube.close()


def build_registry(op: Operator) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    settings = op.settings
    timeout = settings.handler_timeout_s
    backoff = 3.0  # seconds before a failed handler runs again (kopf: 60)

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=ANNOTATION_PREFIX
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/operator"
        settings.posting.enabled = False  # we post our own, meaningful Events
        settings.batching.batch_window = 0.01  # react within milliseconds, not 100 ms
        settings.execution.max_workers = 8
        settings.watching.server_timeout = 600
        settings.peering.priority = op.settings.priority or random.randint(1, 10**6)
        await asyncio.gather(op.prime(), op.functions.checker.warm_up())

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

    async def reconcile(body: kopf.Body, handler: str, fresh: bool = False) -> None:
        if body.metadata.get("deletionTimestamp"):
            return  # being deleted: the garbage collector removes what it owned
        with op.metrics.observe(handler):
            plain = _plain(body)
            state = op.functions.state_for(plain)
            state.body = plain
            try:
                await op.functions.reconcile(plain, fresh=fresh)
            except RetryLater as exc:
                raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
            except ApiError as exc:
                if exc.status == 403 and "being terminated" in exc.message:
                    return  # its namespace is going away, and the function with it
                raise

    @kopf.on.create(*FUNCTIONS, registry=registry, timeout=timeout, backoff=backoff)
    async def function_created(body: kopf.Body, **_: Any) -> None:
        await reconcile(body, "function_created", fresh=True)

    @kopf.on.update(*FUNCTIONS, registry=registry, timeout=timeout, backoff=backoff, field="spec")
    async def function_updated(body: kopf.Body, **_: Any) -> None:
        await reconcile(body, "function_updated")

    @kopf.on.resume(*FUNCTIONS, registry=registry, timeout=timeout, backoff=backoff)
    async def function_resumed(body: kopf.Body, **_: Any) -> None:
        await reconcile(body, "function_resumed")

    @kopf.on.event(*FUNCTIONS, registry=registry)
    async def function_event(type: str | None, namespace: str, name: str, **_: Any) -> None:
        """Functions carry no finalizer, so kopf's deletion handlers never run for them: the
        watch's DELETED event is where the operator lets go of a function. Owner references
        let the garbage collector remove what it owned."""
        if type == "DELETED":
            op.functions.forget(namespace, name)
            op.autoscaler.forget(namespace, name)

    def autoscaled(spec: kopf.Spec, **_: Any) -> bool:
        scaling = spec.get("scaling") or {}
        return bool(scaling) and scaling.get("engine", "operator") == "operator"

    autoscalers = itertools.count(1)

    @kopf.daemon(*FUNCTIONS, registry=registry, when=autoscaled, cancellation_timeout=2.0)
    async def autoscale(
        stopped: kopf.DaemonStopped, body: kopf.Body, namespace: str, name: str, **_: Any
    ) -> None:
        """One supervised loop per autoscaled function: a pass that fails unexpectedly is
        logged and the loop restarts within seconds (kopf would wait its handler back-off,
        a minute, before running a failed daemon again)."""

        async def loop(_: TaskState) -> None:
            while True:
                with op.metrics.observe("autoscale"):
                    delay = op.settings.scaling_interval_s
                    try:
                        before = op.autoscaler.decisions
                        delay = await op.autoscaler.tick(_plain(body))
                        if op.autoscaler.decisions > before:
                            op.metrics.scaling_decisions.labels("changed").inc()
                    except (ApiError, SpecError, aiohttp.ClientError) as exc:
                        log.warning("autoscaling %s failed: %s", body["metadata"]["name"], exc)
                await asyncio.sleep(delay)

        # Numbered: a successor kopf starts may overlap this daemon's stopping.
        key = f"autoscaler {next(autoscalers)} of {namespace}/{name}"
        op.tasks.start(key, loop, kind="autoscale", essential=False)
        try:
            await stopped.wait()
        finally:
            await op.tasks.stop(key)

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

    @kopf.timer(*RUNTIMES, registry=registry, interval=settings.resync_interval_s)
    async def resync_functions(name: str, **_: Any) -> None:
        """Periodic resync of the functions on this runtime: repairs drift (a deleted
        Service, say) that no event announces. It runs on the WasmRuntime, not on each
        function, so functions need no finalizer and are created without waiting for one."""
        with op.metrics.observe("resync"):
            scopes = op.settings.namespaces or (None,)  # None: every namespace
            items = [
                body
                for namespace in scopes
                for body in (
                    await op.kube.list(api_path(API_VERSION, FUNCTION_PLURAL, namespace))
                ).get("items", [])
            ]
            limit = asyncio.Semaphore(RESYNC_CONCURRENCY)

            async def one(body: dict[str, Any]) -> None:
                async with limit:
                    try:
                        await op.functions.reconcile(body)
                    except Exception as exc:  # one function must not stop the rest
                        log.warning("resync of %s failed: %s", body["metadata"]["name"], exc)

            def on_this_runtime(body: dict[str, Any]) -> bool:
                """Functions the operator handles already, as parsed (runtime defaulted)."""
                meta = body["metadata"]
                state = op.functions.states.get((meta["namespace"], meta["name"]))
                return state is not None and state.runtime == name

            await asyncio.gather(
                *(
                    one(body)
                    for body in items
                    if on_this_runtime(body) and not body["metadata"].get("deletionTimestamp")
                )
            )

    @kopf.on.event(*RUNTIMES, registry=registry)
    async def runtime_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        op.apply_runtime(type or "ADDED", _view(body))

    return registry


def _view(body: kopf.Body) -> dict[str, Any]:
    """kopf's body as a dict without copying: for observers that read it before awaiting."""
    return dict(body)


def _plain(body: kopf.Body) -> dict[str, Any]:
    """A snapshot of kopf's live body: it must not change under an awaiting handler."""
    return copy.deepcopy(dict(body))


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
        await op.tasks.stop()
        for runner in runners:
            await runner.cleanup()
        await op.close()
