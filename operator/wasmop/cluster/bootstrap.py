"""Objects every embedded cluster starts with, applied once the API server is ready.

Server-side apply makes this idempotent: a restart re-applies the same manifests and
changes nothing. CustomResourceDefinitions go first and are waited for (Established),
because objects of their kinds cannot be created before.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from wasmop.cluster.layout import StateLayout, repo_root
from wasmop.console import configure_logging
from wasmop.kube import ApiError, Kube, KubeConfig
from wasmop.kube.client import api_path
from wasmop.private_file import write_private

log = logging.getLogger("wasmop.bootstrap")
FIELD_MANAGER = "wasmop-bootstrap"


def embedded_manifests(layout: StateLayout) -> list[Path]:
    """The embedded cluster's own objects, rendered by ``cluster up`` (RBAC of the control
    plane's identities, metrics-server's Service and APIService)."""
    from wasmop.cluster import addons, components

    return [components.control_plane_objects_file(layout), addons.objects_file(layout)]


def manifests() -> list[Path]:
    """The operator's objects, as on a real cluster, in order (files that do not exist yet
    are skipped)."""
    config = repo_root() / "operator" / "config"
    return [
        config / "crds" / "wasmruntimes.yaml",
        config / "crds" / "wasmfunctions.yaml",
        config / "crds" / "kopf-peering.yaml",
        config / "rbac" / "gateway.yaml",
        config / "rbac" / "operator.yaml",
        config / "crds" / "default-runtime.yaml",
    ]


# Kinds bootstrap applies, and where they live in the API.
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
    "WasmRuntime": ("wasmruntimes", False),
    "ClusterKopfPeering": ("clusterkopfpeerings", False),
}

OPERATOR_NAMESPACE = "wasm-operators"
OPERATOR_ACCOUNT = "wasmop-operator"
TOKEN_SECONDS = 365 * 24 * 3600


def object_path(obj: dict[str, Any]) -> str:
    kind = obj["kind"]
    if kind not in RESOURCES:
        raise ValueError(f"bootstrap does not know kind {kind}")
    plural, namespaced = RESOURCES[kind]
    namespace = obj["metadata"].get("namespace", "default") if namespaced else None
    return api_path(obj["apiVersion"], plural, namespace, obj["metadata"]["name"])


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


async def apply_all(kube: Kube, files: list[Path]) -> int:
    applied = 0
    for path in files:
        if not path.exists():
            continue
        for obj in yaml.safe_load_all(path.read_text()):
            if not obj:
                continue
            for attempt in range(50):
                try:
                    await kube.apply(object_path(obj), obj, FIELD_MANAGER)
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


async def write_operator_kubeconfig(kube: Kube, layout: StateLayout) -> Path:
    """The operator runs with its ServiceAccount's token, never as admin."""
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"audiences": [], "expirationSeconds": TOKEN_SECONDS},
    }
    path = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{OPERATOR_ACCOUNT}/token"
    token = (await kube.create(path, request))["status"]["token"]
    authority = (
        {"certificate-authority-data": base64.b64encode(kube.config.ca_data).decode("ascii")}
        if kube.config.ca_data
        else {"certificate-authority": kube.config.ca_file}
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "wasmop",
                "cluster": {"server": kube.config.server, **authority},
            }
        ],
        "users": [{"name": OPERATOR_ACCOUNT, "user": {"token": token}}],
        "contexts": [
            {
                "name": "wasmop",
                "context": {
                    "cluster": "wasmop",
                    "user": OPERATOR_ACCOUNT,
                    "namespace": OPERATOR_NAMESPACE,
                },
            }
        ],
        "current-context": "wasmop",
    }
    return write_private(layout.kubeconfig_for("operator"), yaml.safe_dump(config, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Apply the embedded cluster's base objects.")
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    configure_logging()
    layout = StateLayout(args.state_dir.resolve())

    async def run() -> int:
        async with Kube(
            KubeConfig.from_file(layout.admin_kubeconfig), user_agent=FIELD_MANAGER
        ) as kube:
            count = await apply_all(kube, embedded_manifests(layout) + manifests())
            await write_operator_kubeconfig(kube, layout)
            return count

    count = asyncio.run(run())
    log.info("applied %d objects", count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
