"""Waking idle functions: a request for a function with no ready endpoint is held while
the gateway scales the function from zero through its scale subresource.

The path a cold request takes (docs/architecture.md): the gateway patches
``wasmfunctions/<name>/scale`` from 0 to 1 replica, and at the same moment the scale of the
function's Deployment (``deployments/<name>/scale``, the same name) from 0 to 1: those two
patches are its only writes, and the only verbs its RBAC grants on WasmFunctions and
Deployments. The Deployment controller and ReplicaSet controller create a Pod without
waiting for the operator (a Pod under a CPU quota, busy with every other function's
reconcile when 25 wake at once: its apply of the Deployment was the slowest hop), the
scheduler binds it, the node agent starts it, the EndpointSlice controller publishes it,
and the gateway's EndpointSlice watch sees it: every held request for the function is
forwarded at once. The operator's later apply of the Deployment asks for the same 1
replica; an apply of 0 that crossed the activation (an idle scale-down already on its way)
may take the Deployment back to 0, and the operator's apply for the function's new
replicas (the WasmFunction's patch) brings it to 1 again: the WasmFunction stays the
authority, the Deployment's patch only goes first.

Holding is bounded twice: at most ``max_held_per_function`` requests per function and
``max_held`` in all wait (beyond that: 503 ``ActivationQueueFull`` at once), and none
waits longer than ``timeout_s`` (503 ``ActivationTimeout``). A function that cannot be
activated at all (gone, or the gateway may not scale it) fails its held requests at once
(503 ``ActivationFailed``). Every refusal says why in ``X-Wasmop-Reason``.

Each patch is a JSON patch that tests the Scale's ``spec`` is empty (replicas 0 is
omitted) before adding ``replicas: 1``: when the function (or its Deployment) has replicas
already (the autoscaler woke it for the same burst, or another gateway did) the test fails
with 422 and nothing changes, so an activation never overrides a larger count. Only the
WasmFunction's answer decides the outcome: the Deployment's patch failing (not there yet,
an install without that grant, the API server's trouble) leaves the activation to the
operator, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.wellknown import API_VERSION, FUNCTION_PLURAL

log = logging.getLogger(__name__)

JSON_PATCH = "application/json-patch+json"
FIELD_MANAGER = "wasmop-gateway"
FROM_ZERO = (
    {"op": "test", "path": "/spec", "value": {}},
    {"op": "add", "path": "/spec/replicas", "value": 1},
)
QUEUE_FULL = "ActivationQueueFull"
TIMED_OUT = "ActivationTimeout"
FAILED = "ActivationFailed"


class ActivationRefused(Exception):
    """A request that cannot be held or whose function cannot be activated."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ActivationSettings:
    timeout_s: float = 15.0  # the longest any request is held
    max_held_per_function: int = 1000
    max_held: int = 10000
    # Still no endpoint this long after a patch: patch again, in case the function went
    # back to zero meanwhile (an idle scale-down that crossed the request); then after
    # twice as long each time. (Every 2 s, 25 functions woken at once on a loaded machine
    # sent 33 patches refused as already scaled, to an API server busy with their Pods.)
    repatch_after_s: float = 2.0


@dataclass
class Activation:
    """One function's activation while requests wait for it."""

    namespace: str
    function: str
    held: int = 0
    started: float = field(default_factory=time.monotonic)
    patched_at: float | None = None
    outcome: str = ""  # scaled, running (had replicas already) or failed
    failure: ActivationRefused | None = None
    task: asyncio.Task[None] | None = None


async def scale_from_zero(kube: Kube, namespace: str, function: str) -> str:
    """Patch the function's scale subresource from 0 to 1 replica, and its Deployment's
    beside it: ``scaled``, or ``running`` when the function had replicas already. Raises
    :class:`ActivationRefused` when it never can be (no such function, or no
    permission)."""
    outcome, _ = await asyncio.gather(
        _scale_function(kube, namespace, function), _scale_deployment(kube, namespace, function)
    )
    return outcome


async def _scale_function(kube: Kube, namespace: str, function: str) -> str:
    path = api_path(API_VERSION, FUNCTION_PLURAL, namespace, function, "scale")
    try:
        await kube.patch(path, list(FROM_ZERO), content_type=JSON_PATCH, fieldManager=FIELD_MANAGER)
    except ApiError as exc:
        if exc.status == 422:
            return "running"
        if exc.not_found:
            raise ActivationRefused(FAILED, f"no WasmFunction {namespace}/{function}") from exc
        if exc.status == 403:
            raise ActivationRefused(
                FAILED, f"the gateway may not scale {namespace}/{function}: {exc.message}"
            ) from exc
        raise
    return "scaled"


async def _scale_deployment(kube: Kube, namespace: str, function: str) -> str:
    """The Deployment's scale from 0 to 1 ahead of the operator: ``scaled``, ``running``
    (it had replicas), or ``skipped`` for any failure (the WasmFunction's patch still
    activates it through the operator)."""
    path = api_path("apps/v1", "deployments", namespace, function, "scale")
    try:
        await kube.patch(path, list(FROM_ZERO), content_type=JSON_PATCH, fieldManager=FIELD_MANAGER)
    except Exception as exc:  # the function's own patch decides the outcome
        if isinstance(exc, ApiError) and exc.status == 422:
            return "running"
        log.info("activation of %s/%s: its Deployment not scaled: %r", namespace, function, exc)
        return "skipped"
    return "scaled"


ScaleFromZero = Callable[[str, str], Awaitable[str]]


class Activator:
    """Holds requests for idle functions within bounds and activates each function once
    per idle period with ``scale`` (:func:`scale_from_zero` in the gateway). ``notify``
    wakes the waiting requests (the gateway's table condition) when an activation fails
    for good; ``on_outcome(namespace, service, outcome)`` counts outcomes."""

    def __init__(
        self,
        scale: ScaleFromZero,
        settings: ActivationSettings,
        notify: Callable[[], Awaitable[None]],
        on_outcome: Callable[[str, str, str], None] = lambda *_: None,
    ) -> None:
        self.scale = scale
        self.settings = settings
        self.notify = notify
        self.on_outcome = on_outcome
        self.activations: dict[tuple[str, str], Activation] = {}
        self.held = 0

    @contextlib.contextmanager
    def holding(self, key: tuple[str, str], function: str) -> Iterator[Activation]:
        """Count one held request for ``key`` (namespace, service) while inside; refuse
        it when the bounds are reached. The function's activation starts with its first
        held request and is forgotten with its last."""
        activation = self.activations.get(key)
        if activation is not None and activation.held >= self.settings.max_held_per_function:
            raise ActivationRefused(
                QUEUE_FULL,
                f"{activation.held} requests already wait for {key[0]}/{key[1]} to activate",
            )
        if self.held >= self.settings.max_held:
            raise ActivationRefused(
                QUEUE_FULL, f"{self.held} requests already wait for functions to activate"
            )
        if activation is None:
            activation = self.activations[key] = Activation(key[0], function)
        activation.held += 1
        self.held += 1
        try:
            if activation.task is None:
                activation.task = asyncio.create_task(
                    self._activate(key, activation), name=f"activate {key[0]}/{key[1]}"
                )
            yield activation
        finally:
            activation.held -= 1
            self.held -= 1
            if activation.held == 0:
                self.activations.pop(key, None)
                if activation.task is not None and not activation.task.done():
                    activation.task.cancel()

    async def _activate(self, key: tuple[str, str], activation: Activation) -> None:
        """Scale from zero, and again after ``repatch_after_s``, doubling, while requests
        wait."""
        wait = self.settings.repatch_after_s
        while True:
            try:
                outcome = await self.scale(activation.namespace, activation.function)
            except ActivationRefused as refused:
                activation.failure, activation.outcome = refused, "failed"
                self.on_outcome(*key, "failed")
                log.warning("activation of %s/%s failed: %s", *key, refused.message)
                await self.notify()
                return
            except Exception as exc:  # the API server's trouble: try again shortly
                outcome = "error"
                log.warning("activation of %s/%s: %r; trying again", *key, exc)
            if outcome == "scaled":
                log.info("activated %s/%s: 0 -> 1 replica", *key)
            if activation.patched_at is None or outcome == "scaled":
                activation.outcome = outcome
                self.on_outcome(*key, outcome)
            activation.patched_at = time.monotonic()
            if outcome == "error":
                await asyncio.sleep(0.25)
                continue
            await asyncio.sleep(wait)
            wait *= 2

    async def close(self) -> None:
        tasks = [a.task for a in self.activations.values() if a.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
