"""Objects every embedded cluster starts with, applied once the API server is ready.

The embedded cluster's own objects (control-plane RBAC, metrics-server's Service and
APIService), then the same manifests ``scripts/setup_operators.sh`` applies to any
cluster (``wasmop operator install``'s CRDs, RBAC and default runtime, then the operator
and gateway Deployments), with what places them on the system node in between, and a
kubeconfig with the operator's own token (for running a second operator by hand). A
restart re-applies them and changes nothing.

``--wait-workloads`` is the last step of ``cluster up``: it waits until the operator
and gateway Pods serve.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import sys
from pathlib import Path

import yaml

from wasmop.cluster import addons, components
from wasmop.cluster.layout import StateLayout
from wasmop.cluster.settings import ClusterSettings
from wasmop.console import configure_logging
from wasmop.kube import ApiError, Kube, KubeConfig
from wasmop.kube.client import api_path
from wasmop.operator.install import (
    FIELD_MANAGER,
    Manifest,
    apply_all,
    manifests,
    manifests_dir,
    read_manifest,
)
from wasmop.private_file import write_private

log = logging.getLogger("wasmop.bootstrap")


def embedded_manifests(layout: StateLayout) -> list[Manifest]:
    """The embedded cluster's own objects, rendered by ``cluster up`` (RBAC of the control
    plane's identities, metrics-server's Service and APIService)."""
    return [
        read_manifest(components.control_plane_objects_file(layout)),
        read_manifest(addons.objects_file(layout)),
    ]


OPERATOR_NAMESPACE = components.OPERATOR_NAMESPACE
OPERATOR_ACCOUNT = "wasmop-operator"
TOKEN_SECONDS = 365 * 24 * 3600
# The real cluster's Deployments of the operator and gateway (setup_operators.sh applies
# the same file), and how the embedded cluster knows them.
WORKLOADS_MANIFEST = "operators/operator.yaml"
DEPLOYMENTS = ("wasmop-operator", "wasmop-gateway")
# The cluster's own adjustments have a field manager of their own, so applying the
# shared manifests again never removes them (and they never remove what those set).
EMBEDDED_FIELD_MANAGER = "wasmop-embedded"


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


async def wait_workloads(layout: StateLayout, poll_s: float = 0.25) -> None:
    """Until each Deployment of the operator and gateway has its replicas available
    (their readiness probes pass: the operator's /readyz, the gateway's /healthz)."""
    waiting = set(DEPLOYMENTS)
    async with Kube(
        KubeConfig.from_file(layout.admin_kubeconfig), user_agent="wasmop-wait"
    ) as kube:
        while waiting:
            for name in sorted(waiting):
                try:
                    body = await kube.get(
                        api_path("apps/v1", "deployments", OPERATOR_NAMESPACE, name)
                    )
                except ApiError as exc:
                    if not exc.not_found:
                        raise
                    continue
                status = body.get("status") or {}
                wanted = (body.get("spec") or {}).get("replicas", 1)
                current = status.get("observedGeneration") == body["metadata"]["generation"]
                if current and status.get("availableReplicas", 0) >= wanted:
                    log.info("%s available", name)
                    waiting.discard(name)
            await asyncio.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Apply the embedded cluster's base objects.")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument(
        "--wait-workloads",
        action="store_true",
        help="wait until the operator and gateway Deployments are available",
    )
    args = parser.parse_args(argv)
    configure_logging()
    layout = StateLayout(args.state_dir.resolve())

    async def run() -> int:
        async with Kube(
            KubeConfig.from_file(layout.admin_kubeconfig), user_agent=FIELD_MANAGER
        ) as kube:
            count = await apply_all(kube, embedded_manifests(layout) + manifests())
            await write_operator_kubeconfig(kube, layout)
            settings = ClusterSettings.load(layout.settings_file) or ClusterSettings()
            if settings.system_node:
                system = read_manifest(components.system_node_objects_file(layout))
                count += await apply_all(kube, [system], EMBEDDED_FIELD_MANAGER)
                workloads = read_manifest(manifests_dir() / WORKLOADS_MANIFEST)
                count += await apply_all(kube, [workloads])
            return count

    if args.wait_workloads:
        asyncio.run(wait_workloads(layout))
        return 0
    count = asyncio.run(run())
    log.info("applied %d objects", count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
