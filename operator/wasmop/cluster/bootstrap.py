"""Objects every embedded cluster starts with, applied once the API server is ready.

The embedded cluster's own objects (control-plane RBAC, metrics-server's Service and
APIService), then the same manifests ``wasmop operator install`` applies to any cluster
(see :mod:`wasmop.operator.install`), and a kubeconfig with the operator's own token.
A restart re-applies them and changes nothing.
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
from wasmop.console import configure_logging
from wasmop.kube import Kube, KubeConfig
from wasmop.operator.install import FIELD_MANAGER, Manifest, apply_all, manifests, read_manifest
from wasmop.private_file import write_private

log = logging.getLogger("wasmop.bootstrap")


def embedded_manifests(layout: StateLayout) -> list[Manifest]:
    """The embedded cluster's own objects, rendered by ``cluster up`` (RBAC of the control
    plane's identities, metrics-server's Service and APIService)."""
    return [
        read_manifest(components.control_plane_objects_file(layout)),
        read_manifest(addons.objects_file(layout)),
    ]


OPERATOR_NAMESPACE = "wasm-operators"
OPERATOR_ACCOUNT = "wasmop-operator"
TOKEN_SECONDS = 365 * 24 * 3600


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
