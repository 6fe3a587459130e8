"""Pure builders for the objects a WasmFunction owns: ConfigMap, Deployment, Service, HPA.

Handlers create or patch exactly what these return, so the manifests are also the contract
with the node agent, which runs each Pod as a wasmtime function server:

* the module is in an immutable ConfigMap ``wasm-module-<digest[:20]>``, one per module
  and namespace, shared by the functions that run it (functions made by earlier operators
  keep their own ``<function>-<digest[:12]>``), under ``binaryData["module.wasm"]`` or,
  gzip-compressed, ``binaryData["module.wasm.gz"]``; the Pod mounts it at ``/module`` and
  names the file in ``WASMOP_MODULE_PATH``;
* or, for ``spec.module.image``, the Pod names the image by digest in
  ``WASMOP_MODULE_IMAGE`` and the node pulls it; pull secrets are mounted as secret
  volumes (so the Node authorizer lets the Pod's node read them, and the runtime image
  finds them as files) and listed in ``WASMOP_REGISTRY_AUTH``;
* per-request limits and capabilities are ``WASMOP_*`` environment variables of the
  ``function`` container (see :func:`function_env`);
* the pod template's annotations carry the revision and digest, so a new module or version
  changes the template and rolls out.

A module whose (compressed) bytes exceed the 1 MiB ConfigMap limit is refused with
:class:`ModuleTooLarge` rather than split across several ConfigMaps: split modules would need
reassembly in every reader and the url source exists for big modules.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wasmop import __version__
from wasmop.operator.spec import ResolvedFunction, WasmFunction
from wasmop.wellknown import (
    API_VERSION,
    DOMAIN,
    FUNCTION_KIND,
    FUNCTION_LABEL,
    RUNTIME_LABEL,
    ZONE_LABEL,
)

__all__ = [
    "ANNOTATION_DIGEST",
    "ANNOTATION_IMAGE",
    "ANNOTATION_MODULE_KEY",
    "ANNOTATION_REVISION",
    "ANNOTATION_VERSION",
    "CONTAINER_NAME",
    "CONTAINER_PORT",
    "LABEL_COMPONENT",
    "LABEL_DIGEST",
    "LABEL_MANAGED_BY",
    "LABEL_NAME",
    "LABEL_REVISION",
    "LABEL_RUNTIME",
    "MANAGED_BY",
    "MAX_CONFIGMAP_BYTES",
    "MODULE_KEY",
    "MODULE_KEY_GZ",
    "MODULE_MOUNT_PATH",
    "ImageModule",
    "ModuleBundle",
    "ModuleTooLarge",
    "build_configmap",
    "build_deployment",
    "build_hpa",
    "build_module_configmap",
    "build_service",
    "configmap_name",
    "function_env",
    "function_labels",
    "gateway_url",
    "is_module_configmap",
    "is_own_module_configmap",
    "looks_like_own_module_configmap",
    "module_configmap_name",
    "module_digest",
    "owner_reference",
    "pack_module",
    "selector",
    "selector_string",
    "unpack_module",
]

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_REVISION = f"{DOMAIN}/revision"
LABEL_DIGEST = f"{DOMAIN}/digest"
LABEL_RUNTIME = f"{DOMAIN}/wasmruntime"
ANNOTATION_REVISION = f"{DOMAIN}/revision"
ANNOTATION_DIGEST = f"{DOMAIN}/digest"
ANNOTATION_VERSION = f"{DOMAIN}/version"
ANNOTATION_MODULE_KEY = f"{DOMAIN}/module-key"
ANNOTATION_MODULE_SIZE = f"{DOMAIN}/module-size"
ANNOTATION_IMAGE = f"{DOMAIN}/image"
# Set by the operator on the module ConfigMaps it creates: part of the proof that one is
# its own to delete (is_own_module_configmap), never enough alone.
ANNOTATION_CREATED_BY = f"{DOMAIN}/created-by"
MANAGED_BY = "wasmop"
CREATOR = "wasmop-operator"

CONTAINER_NAME = "function"
CONTAINER_PORT = 8080
PORT_NAME = "http"
SERVICE_PORT = 80
MODULE_VOLUME = "module"
MODULE_MOUNT_PATH = "/module"
MODULE_KEY = "module.wasm"
MODULE_KEY_GZ = "module.wasm.gz"
READINESS_PATH = "/readyz"
LIVENESS_PATH = "/healthz"
# A Pod being deleted keeps serving this long (a preStop sleep) before it stops
# accepting: the EndpointSlice controller marks it terminating at once, and the gateway
# needs a moment to learn that and send its requests elsewhere.
DRAIN_SECONDS = 2
# The API server refuses a ConfigMap whose data plus binaryData exceed 1 MiB.
MAX_CONFIGMAP_BYTES = 1024 * 1024
# Compress only when gzip saves at least this fraction: small modules stay plain bytes.
MIN_GZIP_SAVING = 0.1


REGISTRY_AUTH_MOUNT = "/var/run/wasmop/registry-auth"
DOCKER_CONFIG_KEY = ".dockerconfigjson"


class ModuleTooLarge(ValueError):
    """The module does not fit in one ConfigMap even compressed."""


# --------------------------------------------------------------------------- identities


def module_digest(module: bytes) -> str:
    """Hex sha256 of the uncompressed module: names its ConfigMap and its revision."""
    return hashlib.sha256(module).hexdigest()


def configmap_name(function_name: str, digest: str) -> str:
    return f"{function_name}-{digest[:12]}"


MODULE_CONFIGMAP_PREFIX = "wasm-module-"


def module_configmap_name(digest: str) -> str:
    """The ConfigMap of one module in a namespace, shared by every function that runs it:
    ``wasm-module-<first 20 hex digits of its sha256>``."""
    return f"{MODULE_CONFIGMAP_PREFIX}{digest[:20]}"


def is_module_configmap(name: str) -> bool:
    """Whether a ConfigMap name is a shared module ConfigMap's (not one of a function)."""
    return name.startswith(MODULE_CONFIGMAP_PREFIX)


def looks_like_own_module_configmap(meta: Mapping[str, Any]) -> bool:
    """From its metadata alone (a resync's listing): whether a ConfigMap may be a module
    ConfigMap the operator created: no owner, the operator's creator annotation, and a
    name that is the one of the digest it declares. Anyone who can write ConfigMaps can
    forge this; :func:`is_own_module_configmap` checks the contents too."""
    annotations = meta.get("annotations") or {}
    digest = str(annotations.get(ANNOTATION_DIGEST, "")).removeprefix("sha256:")
    return (
        not meta.get("ownerReferences")
        and annotations.get(ANNOTATION_CREATED_BY) == CREATOR
        and len(digest) == 64
        and meta.get("name") == module_configmap_name(digest)
    )


def is_own_module_configmap(configmap: Mapping[str, Any], max_bytes: int, max_ratio: float) -> bool:
    """Whether a ConfigMap is exactly what :func:`build_module_configmap` makes: its
    metadata as :func:`looks_like_own_module_configmap` requires, immutable, nothing but
    the module under the key it declares, and those bytes hash to the digest its name
    and annotation carry (decoded under the runtime's caps).

    The operator deletes a module ConfigMap only when this holds, so a tenant's
    ConfigMap that merely carries its labels or name is never deleted; one that passes
    is a byte-exact copy of what the operator would write, and holds nothing of anyone's.
    """
    from wasmop.runtime import ModuleError
    from wasmop.runtime.loader import decode_module_bytes

    meta = configmap.get("metadata") or {}
    if not looks_like_own_module_configmap(meta):
        return False
    if configmap.get("immutable") is not True or configmap.get("data"):
        return False
    annotations = meta.get("annotations") or {}
    key = annotations.get(ANNOTATION_MODULE_KEY)
    binary = configmap.get("binaryData") or {}
    if key not in (MODULE_KEY, MODULE_KEY_GZ) or set(binary) != {key}:
        return False
    try:
        packed = base64.b64decode(binary[key], validate=True)
        if (packed[:2] == b"\x1f\x8b") != (key == MODULE_KEY_GZ):
            return False
        module, _ = decode_module_bytes(packed, max_bytes, max_ratio)
    except (ValueError, ModuleError):
        return False
    return f"sha256:{module_digest(module)}" == annotations.get(ANNOTATION_DIGEST)


def selector(function_name: str) -> dict[str, str]:
    """The stable selector of a function's pods (never includes the revision)."""
    return {FUNCTION_LABEL: function_name}


def selector_string(function_name: str) -> str:
    """``status.selector`` for the scale subresource, in label-selector string form."""
    return f"{FUNCTION_LABEL}={function_name}"


def function_labels(function: WasmFunction, component: str) -> dict[str, str]:
    return {
        LABEL_NAME: function.name,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: component,
        FUNCTION_LABEL: function.name,
    }


def owner_reference(function: WasmFunction) -> dict[str, Any]:
    """Makes the WasmFunction the controller of an object, so deletion cascades."""
    return {
        "apiVersion": API_VERSION,
        "kind": FUNCTION_KIND,
        "name": function.name,
        "uid": function.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def gateway_url(gateway: str, function: WasmFunction) -> str:
    """``status.url``: where the gateway serves the function (``/<namespace>/<name>``)."""
    return f"{gateway.rstrip('/')}/{function.namespace}/{function.name}"


def _metadata(
    function: WasmFunction,
    name: str,
    component: str,
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": function.namespace,
        "labels": {**function_labels(function, component), **(labels or {})},
        "ownerReferences": [owner_reference(function)],
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


# --------------------------------------------------------------------------- module


@dataclass(frozen=True)
class ModuleBundle:
    """A module as stored: the bytes under ``key`` and the digest of the original."""

    digest: str
    key: str
    data: bytes
    size: int

    @property
    def compressed(self) -> bool:
        return self.key == MODULE_KEY_GZ


@dataclass(frozen=True)
class ImageModule:
    """A module a Pod pulls from a registry: the image by digest, the module's sha256 (of
    its uncompressed bytes), and the Secrets with credentials for the pull."""

    image: str
    digest: str
    pull_secrets: tuple[str, ...] = ()
    max_bytes: int | None = None


def pack_module(
    module: bytes, *, compress: bool | None = None, digest: str | None = None
) -> ModuleBundle:
    """Choose how to store ``module``; ``compress=None`` gzips when it saves 10% or more.

    gzip runs with a zero timestamp so the same module always packs to the same bytes and a
    re-created immutable ConfigMap is identical to the existing one.
    """
    digest = digest or module_digest(module)
    packed = gzip.compress(module, compresslevel=9, mtime=0)
    if compress is None:
        compress = len(packed) <= len(module) * (1 - MIN_GZIP_SAVING)
    key, data = (MODULE_KEY_GZ, packed) if compress else (MODULE_KEY, module)
    if len(data) > MAX_CONFIGMAP_BYTES:
        raise ModuleTooLarge(
            f"module is {len(module)} bytes ({len(packed)} gzip-compressed), above the "
            f"{MAX_CONFIGMAP_BYTES}-byte ConfigMap limit; serve it with spec.module.url instead"
        )
    return ModuleBundle(digest=digest, key=key, data=data, size=len(module))


def unpack_module(key: str, data: bytes) -> bytes:
    """The inverse of :func:`pack_module`, for readers of the ConfigMap."""
    return gzip.decompress(data) if key.endswith(".gz") else data


def build_configmap(function: WasmFunction, bundle: ModuleBundle) -> dict[str, Any]:
    """The immutable ConfigMap that holds one module digest of a function."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(
            function,
            configmap_name(function.name, bundle.digest),
            "module",
            labels={LABEL_DIGEST: bundle.digest[:12]},
            annotations={
                ANNOTATION_DIGEST: f"sha256:{bundle.digest}",
                ANNOTATION_MODULE_KEY: bundle.key,
                ANNOTATION_MODULE_SIZE: str(bundle.size),
            },
        ),
        "immutable": True,
        "binaryData": {bundle.key: base64.b64encode(bundle.data).decode("ascii")},
    }


def build_module_configmap(namespace: str, bundle: ModuleBundle) -> dict[str, Any]:
    """The immutable ConfigMap of one module in ``namespace``, shared by the functions that
    run it. It has no owner: the operator deletes it when no function's revision history
    names it any more (the resync's sweep), and the namespace's deletion takes it along."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": module_configmap_name(bundle.digest),
            "namespace": namespace,
            "labels": {
                LABEL_MANAGED_BY: MANAGED_BY,
                LABEL_COMPONENT: "module",
                LABEL_DIGEST: bundle.digest[:12],
            },
            "annotations": {
                ANNOTATION_DIGEST: f"sha256:{bundle.digest}",
                ANNOTATION_MODULE_KEY: bundle.key,
                ANNOTATION_MODULE_SIZE: str(bundle.size),
                ANNOTATION_CREATED_BY: CREATOR,
            },
        },
        "immutable": True,
        "binaryData": {bundle.key: base64.b64encode(bundle.data).decode("ascii")},
    }


# --------------------------------------------------------------------------- workload


def function_env(
    resolved: ResolvedFunction, bundle: ModuleBundle | ImageModule, revision: int
) -> list[dict[str, str]]:
    """The ``WASMOP_*`` environment the node agent (and the runtime image) reads.

    Guest variables requested under spec.capabilities.env are passed as they are, and
    ``WASMOP_GUEST_ENV`` lists their names: only those reach the wasm module.
    """
    fn = resolved.function
    limits = resolved.limits
    env: list[tuple[str, str]] = [
        ("WASMOP_FUNCTION", fn.name),
        ("WASMOP_NAMESPACE", fn.namespace),
        ("WASMOP_VERSION", fn.spec.version),
        ("WASMOP_REVISION", str(revision)),
        ("WASMOP_RUNTIME", resolved.runtime.name),
        ("WASMOP_PORT", str(CONTAINER_PORT)),
        *_module_env(bundle),
        ("WASMOP_FEATURES", ",".join(resolved.runtime.spec.features.enabled())),
    ]
    if limits.timeout_ms is not None:
        env.append(("WASMOP_TIMEOUT_MS", str(limits.timeout_ms)))
    if limits.memory_bytes is not None:
        env.append(("WASMOP_MEMORY_BYTES", str(limits.memory_bytes)))
    if limits.output_bytes is not None:
        env.append(("WASMOP_OUTPUT_BYTES", str(limits.output_bytes)))
    if limits.fuel is not None:
        env.append(("WASMOP_FUEL", str(limits.fuel)))
    guest = fn.spec.capabilities.env
    env.append(("WASMOP_GUEST_ENV", ",".join(var.name for var in guest)))
    env += [(var.name, var.value) for var in guest]
    return [{"name": name, "value": value} for name, value in env]


def _module_env(module: ModuleBundle | ImageModule) -> list[tuple[str, str]]:
    if isinstance(module, ModuleBundle):
        return [
            ("WASMOP_MODULE_PATH", f"{MODULE_MOUNT_PATH}/{module.key}"),
            ("WASMOP_MODULE_SHA256", module.digest),
        ]
    env = [("WASMOP_MODULE_IMAGE", module.image), ("WASMOP_MODULE_SHA256", module.digest)]
    if module.max_bytes is not None:
        env.append(("WASMOP_MAX_MODULE_BYTES", str(module.max_bytes)))
    if module.pull_secrets:
        paths = [_auth_path(i) for i in range(len(module.pull_secrets))]
        env.append(("WASMOP_REGISTRY_AUTH", ",".join(paths)))
    return env


def _auth_path(index: int) -> str:
    return f"{REGISTRY_AUTH_MOUNT}/{index}/config.json"


def _module_volumes(
    module: ModuleBundle | ImageModule, configmap: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volume mounts) that bring the module, or the pull credentials, to the Pod."""
    if isinstance(module, ModuleBundle):
        volume = {
            "name": MODULE_VOLUME,
            "configMap": {"name": configmap, "items": [{"key": module.key, "path": module.key}]},
        }
        mount = {"name": MODULE_VOLUME, "mountPath": MODULE_MOUNT_PATH, "readOnly": True}
        return [volume], [mount]
    volumes, mounts = [], []
    for index, secret in enumerate(module.pull_secrets):
        name = f"registry-auth-{index}"
        volumes.append(
            {
                "name": name,
                "secret": {
                    "secretName": secret,
                    "items": [{"key": DOCKER_CONFIG_KEY, "path": "config.json"}],
                    "defaultMode": 0o400,
                },
            }
        )
        mounts.append(
            {"name": name, "mountPath": f"{REGISTRY_AUTH_MOUNT}/{index}", "readOnly": True}
        )
    return volumes, mounts


def _image(resolved: ResolvedFunction) -> str:
    engine = resolved.runtime.spec.engine
    return engine.image or f"wasmop/runtime:{__version__}"


def _node_selector(resolved: ResolvedFunction) -> dict[str, str]:
    """The runtime's selector, narrowed by the function's placement: the runtime's keys
    win, so no placement reaches nodes outside the runtime (validation marks a function
    whose placement contradicts them Invalid before it gets here)."""
    placement = resolved.spec.placement
    chosen = dict(placement.node_selector)
    if placement.zone:
        chosen[ZONE_LABEL] = placement.zone
    chosen.update(resolved.runtime.spec.node_selector)
    return chosen


def _tolerations(resolved: ResolvedFunction) -> list[dict[str, Any]]:
    """The runtime's own wasm node taint, and how long to stay on a failed node when the
    spec says.

    Wasm nodes taint themselves ``RUNTIME_LABEL=<runtime>:NoSchedule``; the Pods tolerate
    the value their runtime selects, not every wasm runtime's (``Exists`` only for a
    runtime that selects its nodes by other labels, which pin the Pods anyway). Without
    ``placement.tolerationSeconds`` the cluster's own default applies (the API server's
    DefaultTolerationSeconds admission: 300 s upstream, 2 s in the embedded cluster,
    which is tuned for recovery experiments).
    """
    seconds = resolved.spec.placement.toleration_seconds
    runtime_value = resolved.runtime.spec.node_selector.get(RUNTIME_LABEL)
    wasm_taint: dict[str, Any] = (
        {"key": RUNTIME_LABEL, "operator": "Exists", "effect": "NoSchedule"}
        if runtime_value is None
        else {
            "key": RUNTIME_LABEL,
            "operator": "Equal",
            "value": runtime_value,
            "effect": "NoSchedule",
        }
    )
    tolerations = [wasm_taint]
    if seconds is not None:
        tolerations += [
            {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}
            for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
        ]
    return tolerations


def _probe(resolved: ResolvedFunction, path: str) -> dict[str, Any]:
    check = resolved.spec.health_check
    return {
        "httpGet": {"path": path, "port": PORT_NAME, "scheme": "HTTP"},
        "periodSeconds": check.period_seconds,
        "timeoutSeconds": check.timeout_seconds,
        "failureThreshold": check.failure_threshold,
        "initialDelaySeconds": check.initial_delay_seconds,
        "successThreshold": 1,
    }


def _strategy(resolved: ResolvedFunction) -> dict[str, Any]:
    rollout = resolved.spec.rollout
    if rollout.strategy == "Recreate":
        return {"type": "Recreate"}
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {
            "maxSurge": rollout.max_surge,
            "maxUnavailable": rollout.max_unavailable,
        },
    }


def build_deployment(
    resolved: ResolvedFunction,
    bundle: ModuleBundle | ImageModule,
    *,
    revision: int,
    configmap: str | None = None,
    replicas: int | None = None,
) -> dict[str, Any]:
    """The Deployment that runs the function's pods on the runtime's wasm nodes.

    ``replicas`` overrides the spec (the scaling handler's choice); by default spec.replicas
    kept within the scaling bounds. ``configmap`` defaults to the digest's ConfigMap name.
    """
    fn = resolved.function
    spec = fn.spec
    cm = configmap or configmap_name(fn.name, bundle.digest)
    revision_labels = {LABEL_REVISION: str(revision), LABEL_RUNTIME: resolved.runtime.name}
    pod_annotations = {
        ANNOTATION_REVISION: str(revision),
        ANNOTATION_DIGEST: f"sha256:{bundle.digest}",
        ANNOTATION_VERSION: spec.version,
    }
    if isinstance(bundle, ModuleBundle):
        pod_annotations[ANNOTATION_MODULE_KEY] = bundle.key
    else:
        pod_annotations[ANNOTATION_IMAGE] = bundle.image
    volumes, mounts = _module_volumes(bundle, cm)
    container = {
        "name": CONTAINER_NAME,
        "image": _image(resolved),
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": PORT_NAME, "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": function_env(resolved, bundle, revision),
        "resources": {
            key: value
            for key, value in (
                ("requests", resolved.resources.requests.to_manifest()),
                ("limits", resolved.resources.limits.to_manifest()),
            )
            if value
        },
        "readinessProbe": _probe(resolved, READINESS_PATH),
        "livenessProbe": _probe(resolved, LIVENESS_PATH),
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(
            fn,
            fn.name,
            "function",
            labels={LABEL_RUNTIME: resolved.runtime.name},
            annotations={ANNOTATION_REVISION: str(revision), ANNOTATION_VERSION: spec.version},
        ),
        "spec": {
            "replicas": spec.desired_replicas if replicas is None else replicas,
            "selector": {"matchLabels": selector(fn.name)},
            "strategy": _strategy(resolved),
            "minReadySeconds": spec.rollout.min_ready_seconds,
            "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
            "revisionHistoryLimit": spec.revision_history_limit,
            "template": {
                "metadata": {
                    "labels": {**function_labels(fn, "function"), **revision_labels},
                    "annotations": pod_annotations,
                },
                "spec": {
                    "containers": [container],
                    "volumes": volumes,
                    "nodeSelector": _node_selector(resolved),
                    "tolerations": _tolerations(resolved),
                    # Replicas on different nodes where there are several, so one node's
                    # failure leaves the function served (preferred, never blocking).
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": selector(fn.name)},
                            "matchLabelKeys": ["pod-template-hash"],
                        }
                    ],
                    # Wasm guests never talk to the API server and need no service env vars.
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                },
            },
        },
    }


def build_service(function: WasmFunction, *, headless: bool = False) -> dict[str, Any]:
    """Service on port 80 to the pods' ``http`` port; its EndpointSlices feed the gateway.

    ``headless`` leaves out the cluster IP. Where nothing routes cluster IPs (the
    embedded cluster has no kube-proxy) that costs nothing, and it spares the API server
    an IP allocation that it serialises across all Service creations.
    """
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "selector": selector(function.name),
        "ports": [
            {
                "name": PORT_NAME,
                "port": SERVICE_PORT,
                "targetPort": PORT_NAME,
                "protocol": "TCP",
            }
        ],
    }
    if headless:
        spec["clusterIP"] = "None"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(function, function.name, "function"),
        "spec": spec,
    }


def build_hpa(function: WasmFunction) -> dict[str, Any]:
    """A native autoscaling/v2 HPA for ``scaling.engine: hpa``, targeting the WasmFunction's
    own scale subresource so the operator still owns the Deployment."""
    scaling = function.spec.scaling
    if scaling is None:
        raise ValueError(f"WasmFunction {function.name} has no spec.scaling")
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(function, function.name, "autoscaler"),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": API_VERSION,
                "kind": FUNCTION_KIND,
                "name": function.name,
            },
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [metric.to_manifest() for metric in scaling.metrics],
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": scaling.behavior.scale_up_window_seconds},
                "scaleDown": {
                    "stabilizationWindowSeconds": scaling.behavior.scale_down_window_seconds
                },
            },
        },
    }
