"""Installing the operator's API on a cluster: CRDs, kopf peering, RBAC, default runtime.

The manifests ship inside the package (``wasmop/manifests`` is a link to
``operator/config``), so ``wasmop operator install`` works the same from a checkout, an
editable install and the operator image. Server-side apply makes installing idempotent:
applying again changes nothing. CustomResourceDefinitions go first and are waited for
(Established), because objects of their kinds cannot be created before.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
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
INSTALL_ORDER: tuple[str, ...] = (
    "crds/wasmruntimes.yaml",
    "crds/wasmfunctions.yaml",
    "crds/kopf-peering.yaml",
    "rbac/gateway.yaml",
    "rbac/operator.yaml",
    "crds/default-runtime.yaml",
)

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


def manifests(directory: Path | None = None) -> list[Manifest]:
    """Every manifest the install applies, in order, read and checked; a missing file is an
    error naming all that are missing, never a silent "applied 0 objects"."""
    directory = manifests_dir() if directory is None else directory
    missing = [name for name in INSTALL_ORDER if not (directory / name).is_file()]
    if missing:
        raise ManifestsMissing(
            f"the wasmop package has no {', '.join(missing)} under {directory}; it was "
            "installed without its manifests: reinstall it from a wheel or checkout "
            "(pip install 'wasmop[operator]')"
        )
    return [read_manifest(directory / name) for name in INSTALL_ORDER]


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
