"""From a Pod's container plan to a servable function: module bytes, settings, engine.

A node runs many Pods in one process, so what they can share is shared here: the
ConfigMaps their modules come in (immutable ones are cached), and one wasmtime engine per
distinct feature set (with its compiled-module cache, so Pods of one module compile it
once). Everything a Pod got wrong becomes a :class:`PodSpecError` with a reason for its
status, never an exception that reaches the agent.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.node.podspec import DEFAULT_MODULE_KEYS, ContainerPlan, ModuleSource, PodSpecError
from wasmop.runtime import Function, ModuleError, Runtime, RuntimeConfig, RuntimeConfigError
from wasmop.runtime.podenv import PodEnvironment, from_env

MAX_CONFIGMAP_CACHE = 64
GRAPH_RETRIES = 60  # about 20 s of "no relationship found" before a Pod reports it


class FunctionLoader:
    """Loads the function of each Pod on one node; ``close`` stops every engine."""

    def __init__(self, kube: Kube, cache_dir: Path | None = None) -> None:
        self.kube = kube
        self.cache_dir = cache_dir  # precompiled modules, shared by every engine
        self._runtimes: dict[Any, Runtime] = {}
        self._configmaps: dict[tuple[str, str], dict[str, Any]] = {}

    async def load(self, namespace: str, pod_name: str, plan: ContainerPlan) -> Function:
        """The Pod's function, compiled (or taken from the cache) and ready to serve."""
        data = await self.fetch_module(namespace, plan.module)
        environment = pod_environment(pod_name, plan)
        try:
            runtime = self.runtime_for(environment)
            module = await runtime.load_async(data)
            return runtime.function(module, environment.function)
        except ModuleError as exc:
            raise PodSpecError(exc.reason, str(exc)) from exc
        except RuntimeConfigError as exc:
            raise PodSpecError("InvalidSettings", str(exc)) from exc

    def runtime_for(self, environment: PodEnvironment) -> Runtime:
        """The engine for the Pod's feature set (one wasmtime Engine per distinct set)."""
        key = environment.engine_key
        if key not in self._runtimes:
            config = RuntimeConfig(
                features=environment.features,
                consume_fuel=environment.consume_fuel,
                cache_dir=self.cache_dir,
            )
            self._runtimes[key] = Runtime(config)
        return self._runtimes[key]

    async def fetch_module(self, namespace: str, source: ModuleSource) -> bytes:
        """The module bytes from the ConfigMap the Pod mounts (cached: they are immutable)."""
        key = (namespace, source.configmap)
        configmap = self._configmaps.get(key)
        if configmap is None or not configmap.get("immutable"):
            configmap = await self._get_configmap(namespace, source.configmap)
            if len(self._configmaps) >= MAX_CONFIGMAP_CACHE:
                self._configmaps.pop(next(iter(self._configmaps)))
            self._configmaps[key] = configmap
        return module_bytes(configmap, namespace, source)

    async def _get_configmap(self, namespace: str, name: str) -> dict[str, Any]:
        """GET a ConfigMap a Pod of ours mounts.

        The Node authorizer learns that this node may read it only once its graph has seen
        the Pod bound here, which can trail the Pod's arrival at this agent by a moment:
        "no relationship found" is retried briefly, as a kubelet would.
        """
        path = api_path("v1", "configmaps", namespace, name)
        for attempt in range(GRAPH_RETRIES):
            try:
                return await self.kube.get(path)
            except ApiError as exc:
                if exc.not_found:
                    raise PodSpecError(
                        "ModuleNotFound", f"ConfigMap {namespace}/{name} not found"
                    ) from exc
                if (
                    exc.status == 403
                    and "no relationship" in exc.message
                    and attempt < GRAPH_RETRIES - 1
                ):
                    await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
                    continue
                raise PodSpecError("ModuleNotFound", f"cannot read ConfigMap: {exc}") from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Stop every engine (interrupts requests still running)."""
        for runtime in self._runtimes.values():
            runtime.close()
        self._runtimes.clear()


def pod_environment(pod_name: str, plan: ContainerPlan) -> PodEnvironment:
    """The Pod's WASMOP_* settings (see wasmop.runtime.podenv)."""
    try:
        return from_env(plan.env, pod_name)
    except RuntimeConfigError as exc:
        raise PodSpecError("InvalidSettings", f"cannot apply the Pod's settings: {exc}") from exc


def module_bytes(configmap: dict[str, Any], namespace: str, source: ModuleSource) -> bytes:
    """The module in a ConfigMap: the key the Pod names, else a default key, else the only
    key there is (binaryData is base64, data is text)."""
    binary = configmap.get("binaryData") or {}
    text = configmap.get("data") or {}
    keys = [source.key] if source.key else list(DEFAULT_MODULE_KEYS)
    if source.key is None and len(binary) + len(text) == 1:
        keys.append(next(iter([*binary, *text])))
    for k in keys:
        if k in binary:
            return base64.b64decode(binary[k])
        if k in text:
            return text[k].encode()
    raise PodSpecError(
        "ModuleNotFound",
        f"ConfigMap {namespace}/{source.configmap} has no key {' or '.join(keys)}",
    )
