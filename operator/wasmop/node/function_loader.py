"""From a Pod's container plan to a servable function: module bytes, settings, engine.

A node runs many Pods in one process, so what they can share is shared here: the
ConfigMaps their modules come in (immutable ones are cached), the modules pulled from
registries (:mod:`wasmop.node.images`: once per node, kept by digest), and one wasmtime
engine per distinct feature set (with its compiled-module cache, so Pods of one module
compile it once; a Pod that pins a module the engine holds starts without reading it).
Everything a Pod got wrong becomes a :class:`PodSpecError` with a reason for its
status, never an exception that reaches the agent.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.node import graph_reads
from wasmop.node.images import NodeImages
from wasmop.node.podspec import (
    DEFAULT_MODULE_KEYS,
    ContainerPlan,
    ImageSource,
    ModuleSource,
    PodSpecError,
)
from wasmop.oci import AuthConfigError, DockerConfig, ImageReference, ReferenceError, RegistryError
from wasmop.oci.auth import docker_config_from_secret
from wasmop.runtime import Function, ModuleError, Runtime, RuntimeConfig, RuntimeConfigError
from wasmop.runtime.loader import CompiledModule, decode_module_bytes, digest_of
from wasmop.runtime.podenv import PodEnvironment, from_env

log = logging.getLogger(__name__)

# (reason, message) of an Event about the Pod, such as Pulled.
Notify = Callable[[str, str], None]

MAX_CONFIGMAP_CACHE = 64


class FunctionLoader:
    """Loads the function of each Pod on one node; ``close`` stops every engine."""

    def __init__(
        self, kube: Kube, cache_dir: Path | None = None, images: NodeImages | None = None
    ) -> None:
        self.kube = kube
        self.cache_dir = cache_dir  # precompiled modules, shared by every engine
        self.images = images  # None: this node runs no image-sourced Pods
        self._runtimes: dict[Any, Runtime] = {}
        self._configmaps: dict[tuple[str, str], dict[str, Any]] = {}

    async def load(
        self, namespace: str, pod_name: str, plan: ContainerPlan, notify: Notify | None = None
    ) -> Function:
        """The Pod's function, compiled (or taken from the cache) and ready to serve."""
        environment = pod_environment(pod_name, plan)
        try:
            runtime = self.runtime_for(environment)
            if isinstance(plan.module, ImageSource):
                module = await self._image_module(
                    namespace, plan.module, environment, runtime, notify
                )
            else:
                data = await self.fetch_module(namespace, plan.module)
                check_pinned_digest(data, environment.module_digest, runtime.config)
                module = await runtime.load_async(data)
            return runtime.function(module, environment.function)
        except ModuleError as exc:
            raise PodSpecError(exc.reason, str(exc)) from exc
        except RuntimeConfigError as exc:
            raise PodSpecError("InvalidSettings", str(exc)) from exc

    async def _image_module(
        self,
        namespace: str,
        source: ImageSource,
        environment: PodEnvironment,
        runtime: Runtime,
        notify: Notify | None,
    ) -> CompiledModule:
        """The module of an image: compiled already, or pulled (or read from the content
        store), checked against the digest the Pod pins, and compiled."""
        pinned = environment.module_digest
        if pinned:
            cached = runtime.load_cached(pinned)
            if cached is not None:
                return cached
        if self.images is None:
            raise PodSpecError("ImagesNotSupported", "this node does not pull images")
        try:
            ref = ImageReference.parse(source.image)
        except ReferenceError as exc:
            raise PodSpecError("InvalidImageName", str(exc)) from exc
        credentials = await self._pull_credentials(namespace, source.pull_secrets)
        try:
            pulled = await self.images.pull(ref, environment.max_module_bytes, credentials)
        except RegistryError as exc:
            if exc.detail:  # the administrator's log only: status gets the generic text
                log.warning("pull of %s in %s: %s: %s", ref, namespace, exc.reason, exc.detail)
            raise PodSpecError(
                "ErrImagePull" if exc.transient else exc.reason, f"{exc.reason}: {exc.message}"
            ) from exc
        if notify is not None:
            notify(
                "Pulled",
                f'Module image "{ref}" already present on node'
                if pulled.from_store
                else f'Successfully pulled module image "{ref}" in {pulled.seconds * 1000:.0f} ms'
                f" ({len(pulled.data)} bytes)",
            )
        check_pinned_digest(pulled.data, pinned, runtime.config, f"image {ref}")
        return await runtime.load_async(pulled.data)

    async def _pull_credentials(
        self, namespace: str, secrets: tuple[str, ...]
    ) -> DockerConfig | None:
        if not secrets:
            return None
        configs = []
        for name in secrets:
            secret = await self._get_referenced(namespace, "secrets", name, "PullSecretNotFound")
            try:
                configs.append(docker_config_from_secret(secret, f"{namespace}/{name}"))
            except AuthConfigError as exc:
                raise PodSpecError("InvalidPullSecret", str(exc)) from exc
        return DockerConfig.merged(configs)

    def runtime_for(self, environment: PodEnvironment) -> Runtime:
        """The engine for the Pod's feature set (one wasmtime Engine per distinct set)."""
        key = environment.engine_key
        if key not in self._runtimes:
            config = RuntimeConfig(
                features=environment.features,
                consume_fuel=environment.consume_fuel,
                cache_dir=self.cache_dir,
                max_module_bytes=environment.max_module_bytes,
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
        return await self._get_referenced(namespace, "configmaps", name, "ModuleNotFound")

    async def _get_referenced(
        self, namespace: str, plural: str, name: str, missing: str
    ) -> dict[str, Any]:
        """GET a ConfigMap or Secret a Pod of ours mounts (graph_reads: the retries)."""
        kind = {"configmaps": "ConfigMap", "secrets": "Secret"}[plural]
        path = api_path("v1", plural, namespace, name)
        try:
            return await graph_reads.for_pod(lambda: self.kube.get(path))
        except ApiError as exc:
            if exc.not_found:
                raise PodSpecError(missing, f"{kind} {namespace}/{name} not found") from exc
            raise PodSpecError(missing, f"cannot read {kind}: {exc}") from exc

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


def check_pinned_digest(
    data: bytes, pinned: str | None, config: RuntimeConfig, where: str = "the module ConfigMap"
) -> None:
    """Refuse module bytes other than those the Pod pins, before they are compiled.

    The operator validated the module with this digest and wrote it into the Pod
    template; a node finds the bytes by ConfigMap name (or image reference), and whoever
    can write ConfigMaps in the namespace could put other bytes under that name. Decoded
    under the runtime's own size and compression-ratio caps, so a bomb stays one. Pods
    that pin nothing (not made by the operator) are not checked.
    """
    if not pinned:
        return
    wasm, _ = decode_module_bytes(data, config.max_module_bytes, config.max_compression_ratio)
    if digest_of(wasm) != pinned.lower():
        raise PodSpecError(
            "ModuleDigestMismatch",
            f"{where} holds a module other than the one the Pod pins (sha256:{pinned[:12]})",
        )
