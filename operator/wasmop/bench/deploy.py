"""Deploy, scale and delete functions for experiments, timing each step client-side.

Two ways to run a workload:

* through the operator: a ``WasmFunction`` (the operator resolves the module's image, or
  copies it into a module ConfigMap, creates the Deployment and Service and reports
  status); Ready is the function's own status. The module comes from the registry by
  default (``source="image"``: pushed as ``<registry>/wasm/<workload>:sha-<digest>``), or
  from a ConfigMap (``source="configmap"``);
* without it (``plain``): a ConfigMap, a hand-written Deployment and a Service, as the
  node tests do; Ready is the Deployment's status. Useful to test the harness before
  the operator exists, and as a baseline that shows what the operator adds.

Readiness is always decided from a :class:`~wasmop.bench.watch.Recorder`'s events, so the
times are the watch's millisecond client timestamps, not polling intervals.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pandas as pd

from wasmop.bench.clock import now_ms
from wasmop.bench.watch import Recorder, deployment_ready, function_ready
from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.operator.install import enable_function_namespace
from wasmop.wellknown import (
    API_VERSION,
    DOMAIN,
    FUNCTION_KIND,
    FUNCTION_LABEL,
    FUNCTION_PLURAL,
    RUNTIME_LABEL,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

GATEWAY_ENV = "WASMOP_GATEWAY_URL"
REGISTRY_ENV = "WASMOP_REGISTRY"
MODULE_SOURCES = ("image", "configmap")
# The creation time written into every artifact the harness pushes: pushing the same
# module again gives the same digest.
PUSH_CREATED = "1970-01-01T00:00:00Z"
EXPERIMENT_LABEL = f"{DOMAIN}/experiment"  # on each experiment's namespace
WORKLOAD_LABEL = f"{DOMAIN}/workload"  # on module ConfigMaps and WasmFunctions
TOLERATION = {
    "key": RUNTIME_LABEL,
    "operator": "Exists",
    "effect": "NoSchedule",
}
RUNTIME_IMAGE = "wasmop/runtime:0.1.0"


def gateway_base() -> str:
    """``$WASMOP_GATEWAY_URL`` or the embedded cluster's gateway on loopback."""
    env = os.environ.get(GATEWAY_ENV)
    if env:
        return env.rstrip("/")
    from wasmop.cluster import manager
    from wasmop.cluster.layout import StateLayout

    port = manager.load_settings(StateLayout.default()).gateway_port
    return f"http://127.0.0.1:{port}"


def registry_address() -> str:
    """``$WASMOP_REGISTRY`` (host[:port] of any registry a real cluster pulls from; push
    credentials from the usual Docker config) or the embedded cluster's registry."""
    env = os.environ.get(REGISTRY_ENV)
    if env:
        return env.rstrip("/")
    from wasmop.cluster import manager
    from wasmop.cluster.layout import StateLayout

    return manager.load_settings(StateLayout.default()).registry_address


def gateway_url(namespace: str, name: str, path: str = "/", base: str | None = None) -> str:
    """Where the gateway serves a function: ``<base>/<namespace>/<name><path>``."""
    if not path.startswith("/"):
        path = "/" + path
    return f"{base or gateway_base()}/{namespace}/{name}{path}"


@dataclass(frozen=True)
class DeployOutcome:
    name: str
    created_ms: float
    ready_ms: float | None
    ok: bool
    error: str = ""

    @property
    def latency_ms(self) -> float | None:
        return None if self.ready_ms is None else self.ready_ms - self.created_ms


def outcomes_frame(outcomes: Sequence[DeployOutcome]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "function": o.name,
                "created_ms": o.created_ms,
                "ready_ms": o.ready_ms,
                "create_to_ready_ms": o.latency_ms,
                "ok": o.ok,
                "error": o.error,
            }
            for o in outcomes
        ],
        columns=["function", "created_ms", "ready_ms", "create_to_ready_ms", "ok", "error"],
    )


# --------------------------------------------------------------------------- resilience

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.status in TRANSIENT_STATUS
    return isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError)


async def retrying(call: Callable[[], Awaitable[T]], attempts: int = 20, delay_s: float = 0.5) -> T:
    """Retry a setup or cleanup call while the API server is briefly unavailable (it may
    be restarting, even as part of an experiment). Measured calls are never retried:
    their failures are results."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as exc:
            if attempt == attempts or not _transient(exc):
                raise
            log.info("API call failed (%s); retrying", exc)
            await asyncio.sleep(delay_s)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- namespaces


async def create_namespace(kube: Kube, name: str, labels: Mapping[str, str] | None = None) -> None:
    """A namespace where the operator may run WasmFunctions (its RoleBinding, as
    `wasmop operator install --function-namespace` makes)."""
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if labels:
        body["metadata"]["labels"] = dict(labels)
    try:
        await retrying(lambda: kube.create("/api/v1/namespaces", body))
    except ApiError as exc:
        if not exc.conflict:
            raise
    await retrying(lambda: enable_function_namespace(kube, name))


async def delete_namespace(kube: Kube, name: str, wait_s: float = 0.0) -> None:
    """Delete a namespace; with ``wait_s`` wait (at most that long) until it is gone."""
    try:
        await retrying(lambda: kube.delete(f"/api/v1/namespaces/{name}"))
    except ApiError as exc:
        if not exc.not_found:
            raise
        return
    deadline = asyncio.get_running_loop().time() + wait_s
    while asyncio.get_running_loop().time() < deadline:
        try:
            await retrying(lambda: kube.get(f"/api/v1/namespaces/{name}"))
        except ApiError as exc:
            if exc.not_found:
                return
            raise
        await asyncio.sleep(0.5)


async def clear_namespace(kube: Kube, name: str, timeout_s: float = 60.0) -> bool:
    """Delete the namespace's WasmFunctions and Deployments and wait (at most
    ``timeout_s``) until its Pods are gone (deleting them at once, without their drain),
    so the next experiment starts on idle nodes; then delete the namespace itself
    without waiting for the namespace controller."""
    for version, plural in ((API_VERSION, FUNCTION_PLURAL), ("apps/v1", "deployments")):
        path = api_path(version, plural, name)
        try:
            await retrying(lambda p=path: kube.delete(p, propagationPolicy="Background"))
        except ApiError as exc:
            if not exc.not_found:
                raise
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    gone = False
    skipped_drain = 0.0
    while loop.time() < deadline:
        pods = await retrying(lambda: kube.list(api_path("v1", "pods", name)))
        if not pods.get("items"):
            gone = True
            break
        if loop.time() - skipped_drain > 2.0:
            # Nothing is routed here any more: the Pods need not drain (preStop) first.
            skipped_drain = loop.time()
            path = api_path("v1", "pods", name)
            await retrying(lambda p=path: kube.delete(p, gracePeriodSeconds=0))
        await asyncio.sleep(0.25)
    await delete_namespace(kube, name)
    return gone


# --------------------------------------------------------------------------- modules


def module_configmap_name(workload: str) -> str:
    """The ConfigMap the samples reference: ``wasm-<workload>``."""
    return f"wasm-{workload}"


async def ensure_module(
    kube: Kube, namespace: str, workload: str, data: bytes | None = None
) -> str:
    """Create ``wasm-<workload>`` with the built module (or ``wasm-<workload>-<digest>``
    with ``data``, a variant of it); returns the ConfigMap's name."""
    import hashlib

    from wasmop.runtime.workloads import ensure_built, load_manifest

    name = module_configmap_name(workload)
    if data is None:
        data = ensure_built(load_manifest())[workload].wasm_path.read_bytes()
    else:
        name = f"{name}-{hashlib.sha256(data).hexdigest()[:12]}"
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {WORKLOAD_LABEL: workload}},
        "binaryData": {"module.wasm": base64.b64encode(data).decode()},
    }
    try:
        await retrying(lambda: kube.create(api_path("v1", "configmaps", namespace), body))
    except ApiError as exc:
        if not exc.conflict:
            raise
    return name


def module_variant(module: bytes, label: str) -> bytes:
    """``module`` with a custom section naming ``label``: it behaves the same but has a
    digest of its own, so no node has it cached and no registry or ConfigMap holds it yet
    (the first start of a new module, measured as often as needed)."""
    from wasmop.runtime.loader import uleb128

    name = b"wasmop-variant"
    body = uleb128(len(name)) + name + label.encode()
    return module + b"\x00" + uleb128(len(body)) + body


async def push_module(image: str, data: bytes) -> str:
    """Push ``data`` as a wasm artifact under ``image`` (a tag); returns it pinned by digest."""
    from wasmop.oci import DockerConfig, ImageReference, RegistryClient
    from wasmop.oci.cli import default_auth_file

    ref = ImageReference.parse(image)
    auth = default_auth_file()
    credentials = DockerConfig.parse(auth.read_bytes()) if auth else None
    async with RegistryClient(credentials=credentials, user_agent="wasmop-bench") as client:
        digest = await client.push_module(ref, data, created=PUSH_CREATED)
    return str(ref.pinned(digest))


async def ensure_image(workload: str, data: bytes | None = None, tag: str | None = None) -> str:
    """Push a built workload (or ``data``) to ``<registry>/wasm/<workload>:<tag>`` (by
    default ``sha-`` and 12 hex digits of the module); returns that tagged reference."""
    import hashlib

    from wasmop.runtime.workloads import ensure_built, load_manifest

    if data is None:
        data = ensure_built(load_manifest())[workload].wasm_path.read_bytes()
    tag = tag or f"sha-{hashlib.sha256(data).hexdigest()[:12]}"
    image = f"{registry_address()}/wasm/{workload}:{tag}"
    await retrying(lambda: push_module(image, data))
    return image


async def module_source(
    kube: Kube, namespace: str, workload: str, source: str = "image", data: bytes | None = None
) -> dict[str, Any]:
    """``spec.module`` for ``workload`` from ``source`` (image or configmap), with the
    module put where that source says."""
    if source == "image":
        return {"image": await ensure_image(workload, data)}
    if source == "configmap":
        return {"configMapRef": {"name": await ensure_module(kube, namespace, workload, data)}}
    raise ValueError(f"source must be one of {', '.join(MODULE_SOURCES)}, not {source!r}")


# --------------------------------------------------------------------------- WasmFunctions


def function_manifest(
    name: str,
    workload: str,
    *,
    replicas: int = 1,
    version: str = "1.0.0",
    labels: Mapping[str, str] | None = None,
    spec: Mapping[str, Any] | None = None,
    module: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A WasmFunction for a built workload; its ``module`` from :func:`module_source`
    (default: the ConfigMap ``wasm-<workload>``)."""
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": FUNCTION_KIND,
        "metadata": {
            "name": name,
            "labels": {WORKLOAD_LABEL: workload, **(labels or {})},
        },
        "spec": {
            "module": dict(module or {"configMapRef": {"name": module_configmap_name(workload)}}),
            "version": version,
            "replicas": replicas,
        },
    }
    body["spec"].update(spec or {})
    return body


async def create_function(kube: Kube, namespace: str, manifest: Mapping[str, Any]) -> float:
    """Create a WasmFunction; returns the client time just before the request."""
    created = now_ms()
    await kube.create(api_path(API_VERSION, FUNCTION_PLURAL, namespace), dict(manifest))
    return created


async def _create_all(
    kube: Kube, namespace: str, manifests: Sequence[Mapping[str, Any]], create: Any
) -> list[tuple[str, float, str]]:
    async def one(manifest: Mapping[str, Any]) -> tuple[str, float, str]:
        name = manifest["metadata"]["name"]
        started = now_ms()
        try:
            return name, await create(kube, namespace, manifest), ""
        except ApiError as exc:
            return name, started, f"create failed: {exc}"

    return list(await asyncio.gather(*(one(m) for m in manifests)))


async def _wait_all(
    recorder: Recorder,
    kind: str,
    created: list[tuple[str, float, str]],
    test: Any,
    timeout_s: float,
) -> list[DeployOutcome]:
    """Wait until each created object passes ``test``; its ready time is the first
    recorded event that showed it ready (not when this waiter happened to wake up)."""
    pending = {name for name, _, error in created if not error}

    def check(rec: Recorder) -> bool:
        for name in list(pending):
            obj = rec.get(kind, name)
            if obj is not None and test(obj):
                pending.discard(name)
        return not pending

    with contextlib.suppress(TimeoutError):
        await recorder.wait_for(check, timeout_s)
    outcomes = []
    for name, created_ms, error in created:
        if error:
            outcomes.append(DeployOutcome(name, created_ms, None, False, error))
        elif name not in pending:
            ready_ms = first_ready_ms(recorder.rows, kind, name, created_ms)
            outcomes.append(DeployOutcome(name, created_ms, ready_ms, ready_ms is not None))
        else:
            outcomes.append(
                DeployOutcome(name, created_ms, None, False, f"not Ready after {timeout_s:g} s")
            )
    return outcomes


def first_ready_ms(
    rows: Sequence[Mapping[str, Any]],
    kind: str,
    name: str,
    after_ms: float,
    replicas: int | None = None,
) -> float | None:
    """Client time of the first event of ``kind``/``name`` after ``after_ms`` that showed
    it ready (and, if given, with ``replicas`` desired)."""
    for row in list(rows):
        if row["kind"] != kind or row["name"] != name or row["t_ms"] < after_ms:
            continue
        if row["event"] in ("LISTED", "DELETED") or not row["ready"]:
            continue
        if replicas is not None and row["replicas_desired"] != replicas:
            continue
        return float(row["t_ms"])
    return None


async def deploy_functions(
    kube: Kube,
    namespace: str,
    manifests: Sequence[Mapping[str, Any]],
    recorder: Recorder,
    timeout_s: float = 120.0,
) -> list[DeployOutcome]:
    """Create all WasmFunctions at once and wait for each to be Ready (status)."""
    created = await _create_all(kube, namespace, manifests, create_function)
    return await _wait_all(recorder, "WasmFunction", created, function_ready, timeout_s)


async def scale_function(kube: Kube, namespace: str, name: str, replicas: int) -> float:
    """Set replicas through the scale subresource (as kubectl scale does)."""
    t = now_ms()
    await kube.patch(
        api_path(API_VERSION, FUNCTION_PLURAL, namespace, name, "scale"),
        {"spec": {"replicas": replicas}},
    )
    return t


async def delete_functions(kube: Kube, namespace: str, names: Sequence[str]) -> None:
    async def one(name: str) -> None:
        try:
            await kube.delete(api_path(API_VERSION, FUNCTION_PLURAL, namespace, name))
        except ApiError as exc:
            if not exc.not_found:
                raise

    await asyncio.gather(*(one(n) for n in names))


# --------------------------------------------------------------------------- without the operator


def plain_deployment(
    name: str, configmap: str, replicas: int = 1, period_s: int = 2
) -> dict[str, Any]:
    """A Deployment of a wasm function written by hand: no operator involved."""
    labels = {"app": name, FUNCTION_LABEL: name}
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": period_s}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {FUNCTION_LABEL: name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "tolerations": [TOLERATION],
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "function",
                            "image": RUNTIME_IMAGE,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": probe,
                            "livenessProbe": {
                                **probe,
                                "httpGet": {"path": "/healthz", "port": "http"},
                            },
                            "volumeMounts": [{"name": "module", "mountPath": "/module"}],
                        }
                    ],
                    "volumes": [{"name": "module", "configMap": {"name": configmap}}],
                },
            },
        },
    }


def plain_service(name: str) -> dict[str, Any]:
    """The baseline's Service: headless, as the embedded cluster's operator creates them
    (it has no kube-proxy), so that a burst of either mode asks the API server for the same
    work (a cluster IP is allocated under one lock, one round trip per Service)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {FUNCTION_LABEL: name}},
        "spec": {
            "clusterIP": "None",
            "selector": {FUNCTION_LABEL: name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }


async def create_plain(kube: Kube, namespace: str, manifest: Mapping[str, Any]) -> float:
    """Create a hand-written Deployment and its Service; returns the client time just
    before the request."""
    name = manifest["metadata"]["name"]
    service = plain_service(name)
    created = now_ms()
    await kube.create(api_path("apps/v1", "deployments", namespace), dict(manifest))
    try:
        await kube.create(api_path("v1", "services", namespace), service)
    except ApiError as exc:
        if not exc.conflict:
            raise
    return created


async def deploy_plain(
    kube: Kube,
    namespace: str,
    names: Sequence[str],
    workload: str,
    recorder: Recorder,
    *,
    replicas: int = 1,
    timeout_s: float = 120.0,
) -> list[DeployOutcome]:
    """Deploy ``workload`` under each name as ConfigMap + Deployment + Service, at once,
    and wait for every Deployment to have all replicas ready."""
    configmap = await ensure_module(kube, namespace, workload)
    manifests = [plain_deployment(n, configmap, replicas) for n in names]
    created = await _create_all(kube, namespace, manifests, create_plain)
    return await _wait_all(recorder, "Deployment", created, deployment_ready, timeout_s)


async def scale_deployment(kube: Kube, namespace: str, name: str, replicas: int) -> float:
    """Set a Deployment's replicas through its scale subresource."""
    t = now_ms()
    await kube.patch(
        api_path("apps/v1", "deployments", namespace, name, "scale"),
        {"spec": {"replicas": replicas}},
    )
    return t


async def wait_replicas_ready(
    recorder: Recorder,
    kind: str,
    name: str,
    replicas: int,
    after_ms: float,
    timeout_s: float = 120.0,
) -> float:
    """Client time at which ``kind`` (WasmFunction or Deployment) first reported
    ``replicas`` desired and all of them ready, after ``after_ms``."""
    test = function_ready if kind == "WasmFunction" else deployment_ready

    def ok(rec: Recorder) -> bool:
        obj = rec.get(kind, name)
        return obj is not None and (obj.get("spec") or {}).get("replicas") == replicas and test(obj)

    await recorder.wait_for(ok, timeout_s)
    stamp = first_ready_ms(recorder.rows, kind, name, after_ms, replicas)
    assert stamp is not None, "the recorder saw the object ready"
    return stamp
