"""The function handlers' logic: from a WasmFunction to its ConfigMap, Deployment and
Service, and from their progress back to the function's status.

``reconcile`` is idempotent: every object has a deterministic name and is written with
server-side apply, so running it twice (after an operator restart, say) changes nothing
and duplicates nothing.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.kube.events import EventRecorder
from wasmop.netguard import AddressPolicy
from wasmop.operator.images import ImageResolver, ImageUnavailable, ResolvedModule
from wasmop.operator.module_sources import ModuleSources
from wasmop.operator.module_url import ModuleUrlFetcher
from wasmop.operator.modules import (
    ModuleChecker,
    ModuleUnavailable,
    concealed,
    fetch_module,
    module_from_configmap,
)
from wasmop.operator.owned_objects import (
    ImageModule,
    ModuleBundle,
    ModuleTooLarge,
    build_deployment,
    build_hpa,
    build_module_configmap,
    build_service,
    gateway_url,
    is_module_configmap,
    is_own_module_configmap,
    looks_like_own_module_configmap,
    module_configmap_name,
    module_digest,
    pack_module,
    selector_string,
)
from wasmop.operator.pod_index import PodIndex
from wasmop.operator.spec import SpecError, WasmFunction, WasmRuntime, resolve
from wasmop.operator.state import FunctionState, WriteResult, write_status
from wasmop.operator.status import (
    controlled_by,
    now_rfc3339,
    orphaned_configmaps,
    parse_time,
    record_revision,
)
from wasmop.operator.validation import (
    check_pinned_sha256,
    problem_from_spec_error,
    summarize,
    validate_function,
)
from wasmop.operator.workqueue import Retry
from wasmop.runtime import ModuleTooLarge as RuntimeModuleTooLarge
from wasmop.runtime import RuntimeConfig
from wasmop.runtime.loader import check_compression_ratio
from wasmop.wellknown import FUNCTION_KIND, FUNCTION_LABEL

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

FIELD_MANAGER = "wasmop-operator"
# Status writes triggered by Pod and Deployment events wait this long, so that one write
# covers the events of one moment (replicas turning Ready together). Short: changes of
# counts alone are deferred anyway (MINOR_WRITE_DELAY_S), and this wait is status lag.
WRITE_COALESCE_S = 0.005
# A change of counts alone (ready replicas mid-rollout, metric values) is written this
# long after it was seen, unless a significant change carries it along first.
MINOR_WRITE_DELAY_S = 5.0
RECONCILE_SLOTS = 48
# Packed modules kept by digest: a burst of functions of one module gzips it once.
BUNDLE_CACHE_SIZE = 32


class NotOurs(Exception):
    """An object with the name we need exists and belongs to someone else."""


# How often a function in a namespace the operator is not enabled in is looked at again.
NAMESPACE_RETRY_S = 30.0


class RetryLater(Retry):
    """Transient: the work queue reconciles the function again after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 2.0) -> None:
        super().__init__(message, delay)


@dataclass
class FunctionController:
    kube: Kube
    events: EventRecorder
    checker: ModuleChecker
    gateway: str
    runtimes: dict[str, WasmRuntime] = field(default_factory=dict)
    ready_runtimes: set[str] = field(default_factory=set)
    states: dict[tuple[str, str], FunctionState] = field(default_factory=dict)
    pods: PodIndex = field(default_factory=PodIndex)
    # Fetches spec.module.url under the administrator's address policy (netguard).
    urls: ModuleUrlFetcher = field(default_factory=lambda: ModuleUrlFetcher(AddressPolicy()))
    headless_services: bool = False  # see owned_objects.build_service
    images: ImageResolver | None = None  # spec.module.image (default: public registries)
    # The configMapRef sources, kept by watches (default: watched through ``kube``).
    sources: ModuleSources | None = None

    def __post_init__(self) -> None:
        if self.images is None:
            self.images = ImageResolver(self.kube)
        if self.sources is None:
            self.sources = ModuleSources(self.kube)

    _writes: set[asyncio.Task[None]] = field(default_factory=set)
    # Reconciles in flight at once: a burst of creations queues here instead of all
    # contending for the API server (and the operator's memory) at the same moment.
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(RECONCILE_SLOTS))
    _bundles: OrderedDict[str, ModuleBundle] = field(default_factory=OrderedDict)
    _fetching: dict[tuple[str, str, str], asyncio.Future[bytes]] = field(default_factory=dict)
    # Shared module ConfigMaps being created or checked now: a burst's reconciles wait for
    # the one that asked first (they each created it, 15 of 16 refused, and read it back).
    _ensuring: dict[tuple[str, str], asyncio.Future[None]] = field(default_factory=dict)
    # Shared module ConfigMaps known to hold the right bytes: (namespace, name) -> uid.
    module_configmaps: dict[tuple[str, str], str] = field(default_factory=dict)

    def state_for(self, body: dict[str, Any]) -> FunctionState:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        state = self.states.get(key)
        if state is None or state.uid != body["metadata"].get("uid"):
            state = FunctionState.from_body(body)
            self.states[key] = state
        return state

    def forget(self, namespace: str, name: str) -> None:
        self.states.pop((namespace, name), None)
        assert self.sources is not None
        self.sources.forget(namespace, name)

    def observe_function(self, body: dict[str, Any]) -> bool:
        """A WasmFunction as its watch delivered it; True when it needs a reconcile.

        Only a function new to this process and a changed spec (a new
        ``metadata.generation``) do: the events of status writes, the operator's own
        among them, need nothing. The body is copied only then.
        """
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return False
        state = self.state_for(body)
        generation = int(meta.get("generation") or 0)
        if state.body is not None and int(state.body["metadata"].get("generation") or 0) == (
            generation
        ):
            return False  # a status change; a retry pending has its own timer
        state.body = copy.deepcopy(body)
        return True

    # --- reconcile ------------------------------------------------------------------

    async def reconcile(self, body: dict[str, Any], *, fresh: bool = False) -> None:
        """Bring the function's objects and status in line with its spec.

        ``fresh`` (a just-created function) skips the clean-up of objects an earlier
        spec may have left (an HPA, module ConfigMaps), which cannot exist yet.
        """
        state = self.state_for(body)
        queued = time.monotonic()
        async with self._slots, state.reconciling:
            started = time.monotonic()
            try:
                await self._reconcile(state, body, fresh)
            except ApiError as exc:
                if exc.status != 403 or "being terminated" in exc.message:
                    raise
                # The operator writes a function's objects only where an administrator
                # bound it (rbac/operator.yaml): say so, and look again now and then.
                message = (
                    f"the operator may not manage objects in namespace {state.namespace}; an"
                    " administrator enables it with `wasmop operator install"
                    f" --function-namespace {state.namespace}`"
                )
                await self._wait(state, "NamespaceNotEnabled", message)
                raise RetryLater(message, delay=NAMESPACE_RETRY_S) from exc
            state.reconciled_generation = int(body["metadata"].get("generation") or 0)
        log.debug(
            "reconciled %s/%s: queued %.0f ms, ran %.0f ms",
            state.namespace,
            state.name,
            (started - queued) * 1000,
            (time.monotonic() - started) * 1000,
        )

    async def _reconcile(self, state: FunctionState, body: dict[str, Any], fresh: bool) -> None:
        now = now_rfc3339()
        meta = body["metadata"]
        state.generation = int(meta.get("generation") or 0)
        try:
            function = WasmFunction.from_body(body)
        except SpecError as exc:
            problem = problem_from_spec_error(exc)
            await self._invalid(state, problem.reason, str(problem))
            return
        state.desired = function.spec.desired_replicas
        change = state.observe_desired(state.desired, now)
        if change is not None:
            self.events.record(state.reference, *change)
        state.runtime = function.spec.runtime
        state.url = gateway_url(self.gateway, function)
        state.selector = selector_string(function.name)

        runtime = self.runtimes.get(function.spec.runtime)
        if runtime is None:
            await self._wait(
                state, "RuntimeNotFound", f'WasmRuntime "{function.spec.runtime}" does not exist'
            )
            return
        if runtime.name not in self.ready_runtimes:
            await self._wait(
                state, "NoReadyNodes", f'WasmRuntime "{runtime.name}" has no Ready node'
            )
            return

        image: ResolvedModule | None = None
        module: bytes | None
        if function.spec.module.image is not None:
            image = await self._resolve_image(state, function, runtime)
            if image is None:
                return
            module, digest = image.data, image.module.digest
        else:
            try:
                module = await self._fetch(function)
            except ModuleUnavailable as exc:
                if exc.permanent:
                    await self._invalid(state, exc.reason, exc.message)
                    return
                await self._wait(state, exc.reason, exc.message)
                raise RetryLater(exc.message, delay=5.0) from exc
            digest = module_digest(module)
        problems = validate_function(function, runtime, module=module, check_module=None)
        if module is None:  # validate_function compares the bytes when it has them
            problems += check_pinned_sha256(digest, function.spec.module.sha256)
        if not problems:
            if module is not None:
                problems = await self.checker.check(module, runtime.spec, digest)
                if function.spec.module.url is not None:
                    problems = concealed(problems)
            else:  # a known image: resolve() fetched nothing because this is known
                problems = self.checker.verdict(digest, runtime.spec) or []
        if problems:
            reason, message = summarize(problems)
            await self._invalid(state, reason, message)
            return
        bundle: ModuleBundle | ImageModule
        if image is not None:
            bundle = image.module
        else:
            assert module is not None
            try:
                bundle = await self._pack(module, digest)
            except (ModuleTooLarge, RuntimeModuleTooLarge) as exc:
                await self._invalid(state, "ModuleTooLarge", str(exc))
                return

        state.valid = True
        state.waiting = None
        origin = f"image {bundle.image}, " if isinstance(bundle, ImageModule) else ""
        state.validation = (
            "Valid",
            f"{origin}module sha256:{bundle.digest[:12]} fits WasmRuntime {runtime.name}",
        )
        state.observed_generation = state.generation
        cm_name = "" if image is not None else module_configmap_name(bundle.digest)
        update = record_revision(
            state.revisions,
            state.revision,
            digest=bundle.digest,
            version=function.spec.version,
            config_map=cm_name,
            now=now,
            limit=function.spec.revision_history_limit,
            image=image.module.image if image is not None else "",
            source=image.source if image is not None else "",
        )
        if update.changed or state.timings.revision is None:
            state.timings = state.timings.for_revision(update.current.revision, now)
            state.settled = False
        if state.timings.accepted_at is None:
            state.timings = state.timings.mark("accepted_at", now)
        state.timings = state.timings.mark("validated_at", now_rfc3339())
        if state.deployment is not None and state.deployment.replicas != state.desired:
            state.settled = False
        state.revision, state.revisions = update.current.revision, update.history

        resolved = resolve(function, runtime)
        deployment = build_deployment(
            resolved, bundle, revision=update.current.revision, configmap=update.current.config_map
        )
        basis = replicas_basis(body, runtime)
        # A new generation that changed replicas alone (an activation from zero, the
        # autoscaler, kubectl scale) needs the Deployment's apply and nothing else: the
        # Service, the HPA and the ConfigMap sweep do not depend on replicas. Twenty-five
        # functions woken at once made 50 needless requests to a busy API server here.
        scale_only = (
            state.applied_basis == basis
            and not update.changed
            and state.reconciled_generation is not None
            and state.reconciled_generation != state.generation
        )
        try:
            # One round trip for all three: the module ConfigMap is created long before a
            # Pod of the new ReplicaSet reaches a node (and a node retries if it is not).
            _, applied, _ = await asyncio.gather(
                self._ensure_module_configmap(function.namespace, bundle)
                if isinstance(bundle, ModuleBundle)
                else asyncio.sleep(0),
                self._apply_deployment(state, function, deployment),
                asyncio.sleep(0) if scale_only else self._apply_service(state, function),
            )
        except NotOurs as exc:
            await self._wait(state, "ResourceConflict", str(exc))
            raise RetryLater(str(exc), delay=10.0) from exc
        except ApiError as exc:
            if exc.status != 422:
                raise
            # The spec passed every check here, yet an object made from it does not pass
            # the API server's: retrying cannot help, the spec must change.
            await self._invalid(
                state,
                "ObjectRejected",
                f"the API server refuses an object of the function: {exc.message}",
            )
            return
        if not scale_only:
            await self._sync_hpa(function, state, fresh)
        state.observe_deployment(applied)
        self.schedule_write(state)
        if update.changed and update.rolled_back:
            self.events.record(
                state.reference, "RolledBack", f"back to revision {update.current.revision}"
            )
        elif update.changed and len(update.history) > 1:
            self.events.record(
                state.reference, "RollingOut",
                f"revision {update.current.revision} (version {function.spec.version})",
            )  # fmt: skip
        own = [n for n in update.config_maps_to_delete if not is_module_configmap(n)]
        if own:  # a shared one goes when no function names it (the resync's sweep)
            await self._delete_old_configmaps(function, own)
        if not fresh and not update.changed and not scale_only:
            # A resume or resync: sweep ConfigMaps an interrupted earlier pass left behind.
            await self._collect_configmaps(function, state)
        state.applied_basis = basis

    async def _resolve_image(
        self, state: FunctionState, function: WasmFunction, runtime: WasmRuntime
    ) -> ResolvedModule | None:
        """The image's module for this spec, or None once status says why it cannot be had
        (an Event for each failed try; RetryLater with back-off if it may work later)."""
        assert self.images is not None
        try:
            image = await self.images.resolve(
                function, runtime, state.revisions,
                lambda digest: self.checker.verdict(digest, runtime.spec) is not None,
            )  # fmt: skip
        except ImageUnavailable as exc:
            delay = state.image_retry_delay()
            self.events.record(state.reference, exc.reason, exc.message, warning=True)
            if exc.permanent:
                await self._invalid(state, exc.reason, exc.message)
            else:
                await self._wait(state, exc.reason, f"{exc.message} (retrying in {delay:g} s)")
            raise RetryLater(exc.message, delay=delay) from None
        state.image_failures = 0
        return image

    async def _fetch(self, function: WasmFunction) -> bytes:
        """The function's module. A ConfigMap source comes from its namespace's watch
        (:mod:`.module_sources`), no request; when the watch cannot tell, or has no such
        ConfigMap, it is read, functions of the same moment sharing one GET."""
        ref = function.spec.module.config_map
        assert self.sources is not None
        if ref is None:
            self.sources.forget(function.namespace, function.name)
            return await fetch_module(self.kube, function, self.urls)
        known, configmap = await self.sources.lookup(function.namespace, ref.name, function.name)
        if known and configmap is not None:
            return module_from_configmap(function, configmap)
        key = (function.namespace, ref.name, ref.key)
        return await shared(
            self._fetching, key, lambda: fetch_module(self.kube, function, self.urls)
        )

    async def _pack(self, module: bytes, digest: str) -> ModuleBundle:
        """The module as its ConfigMap stores it, packed once per digest."""
        bundle = self._bundles.get(digest)
        if bundle is not None:
            self._bundles.move_to_end(digest)
            return bundle
        # gzip -9 of a large module takes a while: off the event loop.
        bundle = await asyncio.to_thread(pack_module, module, digest=digest)
        if bundle.key.endswith(".gz"):  # nodes refuse what expands like a bomb
            check_compression_ratio(
                bundle.size, len(bundle.data), RuntimeConfig().max_compression_ratio
            )
        self._bundles[digest] = bundle
        while len(self._bundles) > BUNDLE_CACHE_SIZE:
            self._bundles.popitem(last=False)
        return bundle

    async def _apply_deployment(
        self, state: FunctionState, function: WasmFunction, deployment: dict[str, Any]
    ) -> dict[str, Any]:
        path = api_path("apps/v1", "deployments", function.namespace, function.name)
        # Seen controlled by this function already: take its fields back by force at once.
        # The gateway's activation writes the Deployment's replicas, so without it every
        # return to zero after an activation was a refused apply, a get and a forced one.
        ours = state.deployment is not None
        applied = await self._apply_owned(path, deployment, function, ours=ours)
        state.timings = state.timings.mark("deployment_created_at", now_rfc3339())
        state.applied_generation = int(applied["metadata"].get("generation") or 0)
        return applied

    async def _apply_service(self, state: FunctionState, function: WasmFunction) -> None:
        path = api_path("v1", "services", function.namespace, function.name)
        service = build_service(function, headless=self.headless_services)
        try:
            applied = await self._apply_owned(path, service, function)
        except ApiError as exc:
            if not (self.headless_services and exc.status == 422):
                raise
            # A Service created with a cluster IP keeps it (the field is immutable).
            applied = await self._apply_owned(path, build_service(function), function)
        state.service_version = applied["metadata"].get("resourceVersion")

    async def _apply_owned(
        self, path: str, body: dict[str, Any], function: WasmFunction, *, ours: bool = False
    ) -> dict[str, Any]:
        """Server-side apply, refusing to take over an object another owner controls.

        The first apply does not force: a conflict means some other manager holds fields,
        and only when the object is controlled by this very WasmFunction (say, someone
        ran ``kubectl scale`` on its Deployment) is it taken back by force. ``ours``: its
        watch has shown it controlled by this function, so it is forced at once.
        """
        if ours:
            return await self.kube.apply(path, body, FIELD_MANAGER, force=True)
        try:
            return await self.kube.apply(path, body, FIELD_MANAGER, force=False)
        except ApiError as exc:
            if not exc.conflict:
                raise
        existing = await self.kube.get(path)
        owners = existing["metadata"].get("ownerReferences") or []
        if not any(o.get("uid") == function.uid and o.get("controller") for o in owners):
            raise NotOurs(
                f"{body['kind']} {function.namespace}/{function.name} exists and is not owned by"
                " this WasmFunction; delete or rename it"
            )
        return await self.kube.apply(path, body, FIELD_MANAGER, force=True)

    async def _write(self, state: FunctionState, *, defer_minor: bool = False) -> WriteResult:
        async with state.lock:
            return await write_status(
                self.kube,
                self.events,
                state,
                self.pods.pods(state.namespace, state.name),
                defer_minor=defer_minor,
            )

    def schedule_write(self, state: FunctionState) -> None:
        """Write status soon, once for a burst of events (Pods of one rollout, say); a
        change of counts alone later (:data:`MINOR_WRITE_DELAY_S`)."""
        if state.write_pending:
            return
        state.write_pending = True

        async def write() -> None:
            await asyncio.sleep(WRITE_COALESCE_S)
            state.write_pending = False
            result = await self._write(state, defer_minor=True)
            if result is WriteResult.DEFERRED and not state.minor_pending:
                state.minor_pending = True
                self._spawn(write_minor())

        async def write_minor() -> None:
            await asyncio.sleep(MINOR_WRITE_DELAY_S)
            state.minor_pending = False
            await self._write(state)

        self._spawn(write())

    def _spawn(self, write: Coroutine[Any, Any, None]) -> None:
        async def guarded() -> None:
            try:
                await write
            except ApiError as exc:
                log.warning("status of a function not written: %s", exc)

        task = asyncio.create_task(guarded())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _invalid(self, state: FunctionState, reason: str, message: str) -> None:
        state.valid = False
        state.waiting = None
        state.validation = (reason, message)
        state.observed_generation = state.generation
        await self._write(state)

    async def _wait(self, state: FunctionState, reason: str, message: str) -> None:
        state.valid = None if state.valid is False else state.valid
        state.waiting = (reason, message)
        state.observed_generation = state.generation
        await self._write(state)

    async def _ensure_module_configmap(self, namespace: str, bundle: ModuleBundle) -> None:
        """Create the module's shared ConfigMap in ``namespace`` unless it is there.

        One that exists is used only if it is immutable and holds exactly these bytes
        (its name is predictable: anyone could have put other bytes there), checked once
        per object; the Pods pin the digest besides, and a node checks it.
        """
        configmap = build_module_configmap(namespace, bundle)
        key = (namespace, configmap["metadata"]["name"])
        if key in self.module_configmaps:
            return
        await shared(self._ensuring, key, lambda: self._create_module_configmap(configmap))

    async def _create_module_configmap(self, configmap: dict[str, Any]) -> None:
        namespace, name = configmap["metadata"]["namespace"], configmap["metadata"]["name"]
        try:
            created = await self.kube.create(api_path("v1", "configmaps", namespace), configmap)
            self.module_configmaps[(namespace, name)] = created["metadata"]["uid"]
            return
        except ApiError as exc:
            if not exc.conflict:
                raise
        existing = await self.kube.get(api_path("v1", "configmaps", namespace, name))
        if not (
            existing.get("immutable") is True
            and existing.get("binaryData") == configmap["binaryData"]
            and not existing.get("data")
        ):
            raise NotOurs(
                f"ConfigMap {namespace}/{name} exists with other contents or is mutable;"
                " delete it so the operator can store the module there"
            )
        self.module_configmaps[(namespace, name)] = existing["metadata"]["uid"]

    async def sweep_module_configmaps(
        self, listed: dict[str, dict[str, dict[str, Any]]], grace_s: float
    ) -> int:
        """Delete the shared module ConfigMaps no known function's revision history names
        (:func:`unused_module_configmaps`) once read and proven the operator's own
        (:func:`is_own_module_configmap`), each preconditioned on the uid listed. Returns
        how many were deleted."""
        deleted = 0
        limits = RuntimeConfig()
        for namespace, name, uid in unused_module_configmaps(
            listed, self.states.values(), time.time(), grace_s
        ):
            self.module_configmaps.pop((namespace, name), None)
            try:
                configmap = await self.kube.get(api_path("v1", "configmaps", namespace, name))
            except ApiError as exc:
                if exc.not_found:
                    continue
                raise
            if configmap["metadata"].get("uid") != uid or not is_own_module_configmap(
                configmap, limits.max_module_bytes, limits.max_compression_ratio
            ):
                log.info("ConfigMap %s/%s is not a module ConfigMap of ours: kept", namespace, name)
                continue
            if await self._delete_configmap(namespace, name, uid):
                deleted += 1
        return deleted

    async def _collect_configmaps(self, function: WasmFunction, state: FunctionState) -> None:
        """Delete the per-function module ConfigMaps (an earlier operator's) this function
        controls that no revision in the history refers to any more."""
        path = api_path("v1", "configmaps", function.namespace)
        listing = await self.kube.list(path, labelSelector=f"{FUNCTION_LABEL}={function.name}")
        orphans = orphaned_configmaps(
            listing.get("items", []), state.revisions, owner_uid=function.uid
        )
        for name, uid in orphans:
            await self._delete_configmap(function.namespace, name, uid)

    async def _delete_old_configmaps(self, function: WasmFunction, names: Iterable[str]) -> None:
        """Delete the per-function ConfigMaps of revisions that left the history, if this
        function controls them (the names alone could be anyone's by now)."""
        for name in names:
            try:
                existing = await self.kube.get(
                    api_path("v1", "configmaps", function.namespace, name)
                )
            except ApiError as exc:
                if exc.not_found:
                    continue
                raise
            meta = existing["metadata"]
            if controlled_by(meta, function.uid):
                await self._delete_configmap(function.namespace, name, meta["uid"])

    async def _delete_configmap(self, namespace: str, name: str, uid: str) -> bool:
        """Delete exactly the object looked at: a precondition on its uid, so one
        re-created under the same name in between is left alone. True if deleted."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            await self.kube.delete(api_path("v1", "configmaps", namespace, name), body)
        except ApiError as exc:
            if exc.not_found or exc.conflict:
                return False
            raise
        return True

    async def _sync_hpa(self, function: WasmFunction, state: FunctionState, fresh: bool) -> None:
        """A native HPA exists exactly while ``scaling.engine`` is ``hpa``."""
        path = api_path(
            "autoscaling/v2", "horizontalpodautoscalers", function.namespace, function.name
        )
        scaling = function.spec.scaling
        if scaling is not None and scaling.engine == "hpa":
            await self.kube.apply(path, build_hpa(function), FIELD_MANAGER)
            state.has_hpa = True
            return
        if fresh or state.has_hpa is False:
            state.has_hpa = False
            return
        try:
            await self.kube.delete(path)
        except ApiError as exc:
            if not exc.not_found:
                raise
        state.has_hpa = False

    # --- observation ----------------------------------------------------------------

    async def observe_deployment(self, event_type: str, body: dict[str, Any]) -> None:
        """A Deployment we own changed: mirror its progress into the function's status."""
        meta = body["metadata"]
        owner = next(
            (o for o in meta.get("ownerReferences") or [] if o.get("kind") == FUNCTION_KIND), None
        )
        if owner is None:
            return
        state = self.states.get((meta["namespace"], owner["name"]))
        if state is None or state.uid != owner.get("uid"):
            return
        state.observe_deployment(None if event_type == "DELETED" else body)
        self.schedule_write(state)

    def observe_pod(self, event_type: str, body: dict[str, Any]) -> None:
        key = self.pods.apply(event_type, body)
        state = self.states.get(key) if key else None
        if state is not None and state.deployment is not None:
            self.schedule_write(state)

    async def record_scaling(self, namespace: str, name: str, scaling: dict[str, Any]) -> None:
        state = self.states.get((namespace, name))
        if state is None:
            return
        state.scaling = scaling
        self.schedule_write(state)

    def drift(
        self,
        state: FunctionState,
        body: dict[str, Any],
        deployment: dict[str, Any] | None,
        service: dict[str, Any] | None,
        configmaps: set[str],
    ) -> str | None:
        """Why a function needs a reconcile that no event asked for, from a resync's
        listings (the objects' metadata): a spec not reconciled yet, an owned object
        missing, or changed by someone else since the operator applied it. None when all
        is as it was left. Versions the operator has not seen in this process (after a
        restart) are taken as they are."""
        generation = int(body["metadata"].get("generation") or 0)
        if state.reconciled_generation != generation:
            return "spec not reconciled"
        if not state.valid:
            return None  # invalid or waiting: its events and retries take care of it
        if deployment is None:
            return "Deployment missing"
        if service is None:
            return "Service missing"
        current = next((r for r in state.revisions if r.revision == state.revision), None)
        # An image revision has no module ConfigMap (its config_map is empty).
        if current is not None and current.config_map and current.config_map not in configmaps:
            self.module_configmaps.pop((state.namespace, current.config_map), None)
            return "module ConfigMap missing"
        observed = int(deployment.get("generation") or 0)
        if state.applied_generation is None:
            state.applied_generation = observed
        elif observed != state.applied_generation:
            return "Deployment changed"
        version = service.get("resourceVersion")
        if state.service_version is None:
            state.service_version = version
        elif version != state.service_version:
            return "Service changed"
        return None

    def waiting_on(self, runtime: str) -> list[tuple[str, str]]:
        return [
            key
            for key, state in self.states.items()
            if state.waiting is not None and state.runtime == runtime
        ]

    def phases(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for state in self.states.values():
            if state.phase is not None:
                counts[state.phase.value] = counts.get(state.phase.value, 0) + 1
        return counts


def replicas_basis(body: dict[str, Any], runtime: WasmRuntime) -> tuple[str, WasmRuntime]:
    """What a function's objects are made from, its replicas aside: the spec without
    ``replicas``, and the runtime it resolves against."""
    spec = {k: v for k, v in (body.get("spec") or {}).items() if k != "replicas"}
    return json.dumps(spec, sort_keys=True, default=str), runtime


async def shared(
    running: dict[K, asyncio.Future[T]], key: K, start: Callable[[], Awaitable[T]]
) -> T:
    """``start()``'s result, or that of the call for ``key`` already in flight: callers
    at the same moment share one request. A call cancelled (its reconcile timed out) is
    a retry for those who waited on it, never a cancellation of theirs."""
    pending = running.get(key)
    if pending is not None:
        return await asyncio.shield(pending)
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    running[key] = future
    try:
        result = await start()
    except BaseException as exc:
        interrupted = RetryLater(f"shared request interrupted: {exc!r}", 1.0)
        future.set_exception(interrupted if isinstance(exc, asyncio.CancelledError) else exc)
        future.exception()  # retrieved: the waiters see it, nobody else must
        raise
    finally:
        running.pop(key, None)
    future.set_result(result)
    return result


def unused_module_configmaps(
    listed: dict[str, dict[str, dict[str, Any]]],
    states: Iterable[FunctionState],
    now: float,
    grace_s: float,
) -> list[tuple[str, str, str]]:
    """(namespace, name, uid) of each shared module ConfigMap in a resync's listing
    (namespace -> name -> metadata) that no function's revision history names, older than
    ``grace_s``. The listing must come from a pass in which every listed function is
    known. Only those whose metadata may be the operator's own are chosen
    (:func:`looks_like_own_module_configmap`: no owner references, its creator annotation,
    a name that is its digest's); the caller reads each and checks its contents before
    deleting it."""
    used = {(state.namespace, r.config_map) for state in states for r in state.revisions}
    unused = []
    for namespace, configmaps in listed.items():
        for name, meta in configmaps.items():
            if not is_module_configmap(name) or (namespace, name) in used:
                continue
            if not looks_like_own_module_configmap({**meta, "name": name}):
                continue
            if now - parse_time(meta["creationTimestamp"]).timestamp() < grace_s:
                continue
            unused.append((namespace, name, meta["uid"]))
    return unused
