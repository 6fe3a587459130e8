"""Installing the operator's API on a cluster: CRDs, kopf peering, RBAC, default runtime.

The manifests ship inside the package (``wasmop/manifests`` is a link to
``operator/config``), so ``wasmop operator install`` works the same from a checkout, an
editable install and the operator image. Server-side apply makes installing idempotent:
applying again changes nothing. CustomResourceDefinitions go first and are waited for
(Established), because objects of their kinds cannot be created before.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

import wasmop
from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.wellknown import RUNTIME_KIND, RUNTIME_PLURAL

# The field manager of every apply, here and in the embedded cluster's bootstrap: one
# owner of these objects, whichever command applied them last.
FIELD_MANAGER = "wasmop-bootstrap"

# What to apply, in order, relative to the manifests directory.
OPERATOR_RBAC = "rbac/operator.yaml"
# Instead, for an operator that watches only some namespaces (operator run --namespace).
NAMESPACED_OPERATOR_RBAC = "rbac-namespaced/operator.yaml"
INSTALL_ORDER: tuple[str, ...] = (
    "crds/wasmruntimes.yaml",
    "crds/wasmfunctions.yaml",
    "crds/kopf-peering.yaml",
    "rbac/gateway.yaml",
    OPERATOR_RBAC,
    "rbac/tenant.yaml",
    "crds/default-runtime.yaml",
)
# The RBAC manifests hold their per-namespace objects (Role, RoleBinding) for this one;
# an install for other namespaces repeats them there.
TEMPLATE_NAMESPACE = "default"

# Kinds the install and the embedded cluster's bootstrap apply, and where they live in
# the API: (plural, namespaced).
RESOURCES: dict[str, tuple[str, bool]] = {
    "CustomResourceDefinition": ("customresourcedefinitions", False),
    "Namespace": ("namespaces", False),
    "Service": ("services", True),
    "APIService": ("apiservices", False),
    "ServiceAccount": ("serviceaccounts", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "ConfigMap": ("configmaps", True),
    "Deployment": ("deployments", True),
    "RuntimeClass": ("runtimeclasses", False),
    RUNTIME_KIND: (RUNTIME_PLURAL, False),
    "ClusterKopfPeering": ("clusterkopfpeerings", False),
}


class ManifestsMissing(Exception):
    """The package lacks manifests it should carry: a broken or partial install."""


@dataclass(frozen=True)
class Manifest:
    """One file to apply and the objects in it."""

    path: Path
    objects: tuple[dict[str, Any], ...]


def manifests_dir() -> Path:
    """Where the installed package keeps its manifests (a checkout's operator/config)."""
    return Path(str(files(wasmop) / "manifests"))


def manifests(
    directory: Path | None = None,
    *,
    function_namespaces: Sequence[str] = (),
    watch_namespaces: Sequence[str] = (),
) -> list[Manifest]:
    """Every manifest the install applies, in order, read and checked; a missing file is an
    error naming all that are missing, never a silent "applied 0 objects".

    ``function_namespaces``: where a cluster-wide operator may run WasmFunctions (default:
    the manifests' own, "default"). ``watch_namespaces``: install for an operator that
    watches only these (``operator run --namespace``), with a Role in each instead.
    """
    directory = manifests_dir() if directory is None else directory
    order = INSTALL_ORDER
    if watch_namespaces:
        order = tuple(NAMESPACED_OPERATOR_RBAC if n == OPERATOR_RBAC else n for n in order)
    missing = [name for name in order if not (directory / name).is_file()]
    if missing:
        raise ManifestsMissing(
            f"the wasmop package has no {', '.join(missing)} under {directory}; it was "
            "installed without its manifests: reinstall it from a wheel or checkout "
            "(pip install 'wasmop[operator]')"
        )
    chosen = [read_manifest(directory / name) for name in order]
    namespaces = watch_namespaces or function_namespaces
    if namespaces:
        chosen = [per_namespace(m, namespaces) for m in chosen]
    return chosen


def per_namespace(manifest: Manifest, namespaces: Sequence[str]) -> Manifest:
    """The manifest with its per-namespace RBAC objects repeated in each of ``namespaces``
    instead of the template namespace; other objects stay as they are."""
    objects: list[dict[str, Any]] = []
    for obj in manifest.objects:
        template = obj["kind"] in ("Role", "RoleBinding") and (
            obj["metadata"].get("namespace") == TEMPLATE_NAMESPACE
        )
        if not template:
            objects.append(obj)
            continue
        for namespace in namespaces:
            copied = copy.deepcopy(obj)
            copied["metadata"]["namespace"] = namespace
            objects.append(copied)
    return replace(manifest, objects=tuple(objects))


def function_namespace_binding(namespace: str) -> dict[str, Any]:
    """The RoleBinding that lets a cluster-wide operator run WasmFunctions in ``namespace``
    (ClusterRole wasmop:operator-functions there, and only there)."""
    manifest = per_namespace(read_manifest(manifests_dir() / OPERATOR_RBAC), [namespace])
    [binding] = [o for o in manifest.objects if o["kind"] == "RoleBinding"]
    return binding


async def enable_function_namespace(kube: Kube, namespace: str) -> None:
    """Apply :func:`function_namespace_binding` (idempotent)."""
    binding = function_namespace_binding(namespace)
    await kube.apply(object_path(binding), binding, FIELD_MANAGER)


def read_manifest(path: Path) -> Manifest:
    """The objects in one file; an unknown kind fails here, before anything is applied."""
    objects = tuple(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    for obj in objects:
        object_path(obj)
    return Manifest(path, objects)


def object_path(obj: dict[str, Any]) -> str:
    kind = obj["kind"]
    if kind not in RESOURCES:
        raise ValueError(f"the install does not know kind {kind}")
    plural, namespaced = RESOURCES[kind]
    namespace = obj["metadata"].get("namespace", "default") if namespaced else None
    return api_path(obj["apiVersion"], plural, namespace, obj["metadata"]["name"])


def describe(obj: dict[str, Any]) -> str:
    """``Kind namespace/name`` (or ``Kind name``), as a dry run lists an object."""
    meta = obj["metadata"]
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {where}{meta['name']}"


async def wait_established(kube: Kube, name: str, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    while time.monotonic() < deadline:
        crd = await kube.get(path)
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"CRD {name} not Established after {within_s:.0f} s")


async def apply_all(
    kube: Kube, to_apply: list[Manifest], field_manager: str = FIELD_MANAGER
) -> int:
    """Server-side apply every object in order; returns how many were applied."""
    applied = 0
    for manifest in to_apply:
        for obj in manifest.objects:
            for attempt in range(50):
                try:
                    await kube.apply(object_path(obj), obj, field_manager)
                    break
                except ApiError as exc:
                    # A kind whose CRD was just established may not be served for a moment.
                    if exc.status == 404 and attempt < 49:
                        await asyncio.sleep(0.1)
                        continue
                    raise
            applied += 1
            if obj["kind"] == "CustomResourceDefinition":
                await wait_established(kube, obj["metadata"]["name"])
    return applied
