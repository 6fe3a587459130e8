"""Cluster services beside the control plane: the OCI registry and metrics-server.

Both are upstream Go programs built from modules of their own by ``controlplane/build.sh``
and supervised like the control plane (status, logs, stop/start/restart).

**Registry** (CNCF distribution v3): plain HTTP on ``127.0.0.1:<registry_port>`` (5000),
filesystem storage under ``<state>/registry`` so pushed modules survive restarts and
``cluster up --fresh`` removes them. Anyone who can reach loopback can push and pull, as
with any local development registry; image references pin modules by digest.

**metrics-server** serves ``metrics.k8s.io/v1beta1`` on ``127.0.0.1:<metrics_server_port>``
(4443) and is registered as the APIService ``v1beta1.metrics.k8s.io``. There is no
kube-proxy, so the APIService names an ``ExternalName`` Service whose name is 127.0.0.1:
the aggregator dials ``127.0.0.1:<port>`` and checks the serving certificate (cluster CA)
for ``metrics-server.kube-system.svc``. The aggregator authenticates as
``front-proxy-client`` (front-proxy CA) and passes the caller in ``X-Remote-*`` headers,
which metrics-server trusts through the ``extension-apiserver-authentication`` ConfigMap.

How metrics-server reaches each node agent's kubelet API (what an agent must serve):
``https://<Node InternalIP>:<status.daemonEndpoints.kubeletEndpoint.Port>/metrics/resource``
(the agents publish 10.244.0.(4N+2) and 10250), verifying the agent's serving certificate
against the cluster CA (``pki/ca.crt``; it needs an IP SAN for the InternalIP) and
presenting the client certificate ``pki/metrics-server.crt`` (CN ``system:metrics-server``,
no groups, cluster CA). An agent authorizes that user with a SubjectAccessReview for
``get nodes/metrics`` (subresource ``metrics``), which the ``system:metrics-server``
ClusterRole below grants.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

import yaml

from wasmop.cluster import kubeconfig
from wasmop.cluster.components import ComponentSpec, Probe
from wasmop.cluster.layout import StateLayout, go_binary
from wasmop.cluster.pki import PKI, Identity
from wasmop.cluster.settings import ClusterSettings
from wasmop.private_file import write_private

REGISTRY = "registry"
METRICS_SERVER = "metrics-server"
REGISTRY_BINARY = "wasmop-registry"
METRICS_SERVER_BINARY = "wasmop-metrics-server"
BINARIES = (METRICS_SERVER_BINARY, REGISTRY_BINARY)

METRICS_NAMESPACE = "kube-system"
METRICS_SERVICE = "metrics-server"
METRICS_SERVER_DNS = f"{METRICS_SERVICE}.{METRICS_NAMESPACE}.svc"
METRICS_SERVER_USER = "system:metrics-server"
METRICS_GROUP = "metrics.k8s.io"
METRICS_VERSION = "v1beta1"
METRICS_APISERVICE = f"{METRICS_VERSION}.{METRICS_GROUP}"
# How often metrics-server scrapes every node (upstream's minimum is 10 s).
METRIC_RESOLUTION = "15s"

METRICS_SERVER_IDENTITIES = [
    Identity("metrics-server", METRICS_SERVER_USER),
    Identity(
        "metrics-server-serving",
        METRICS_SERVICE,
        server=True,
        client=False,
        dns_names=(METRICS_SERVER_DNS,),
        ip_addresses=("127.0.0.1",),
    ),
]


def registry_config(
    layout: StateLayout, settings: ClusterSettings, http_secret: str
) -> dict[str, Any]:
    """distribution's configuration: loopback only, storage in the state dir, one log line
    per request (its Apache-style access log would repeat each)."""
    return {
        "version": "0.1",
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(layout.registry_data)},
            "delete": {"enabled": True},
        },
        "http": {
            "addr": settings.registry_address,
            # Signs upload state; kept across restarts so an interrupted upload resumes.
            "secret": http_secret,
            "draintimeout": "5s",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }


def _rbac(
    kind: str,
    name: str,
    *,
    namespace: str | None = None,
    labels: dict[str, str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {"app.kubernetes.io/part-of": "wasmop", **(labels or {})},
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": metadata,
        **fields,
    }


def metrics_server_objects(pki: PKI, settings: ClusterSettings) -> list[dict[str, Any]]:
    """RBAC, Service and APIService that put metrics-server behind the aggregation layer
    (upstream's manifests, with a user from a certificate instead of a ServiceAccount)."""
    user = [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": METRICS_SERVER_USER}]
    read = ["get", "list", "watch"]
    return [
        # Whoever may view a namespace may read its Pods' figures (kubectl top).
        _rbac(
            "ClusterRole",
            "system:aggregated-metrics-reader",
            labels={
                f"rbac.authorization.k8s.io/aggregate-to-{role}": "true"
                for role in ("view", "edit", "admin")
            },
            rules=[{"apiGroups": [METRICS_GROUP], "resources": ["pods", "nodes"], "verbs": read}],
        ),
        _rbac(
            "ClusterRole",
            METRICS_SERVER_USER,
            rules=[
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": read},
            ],
        ),
        _rbac(
            "ClusterRoleBinding",
            METRICS_SERVER_USER,
            roleRef=_role_ref("ClusterRole", METRICS_SERVER_USER),
            subjects=user,
        ),
        _rbac(
            "ClusterRoleBinding",
            "metrics-server:system:auth-delegator",
            roleRef=_role_ref("ClusterRole", "system:auth-delegator"),
            subjects=user,
        ),
        _rbac(
            "RoleBinding",
            "metrics-server-auth-reader",
            namespace=METRICS_NAMESPACE,
            roleRef=_role_ref("Role", "extension-apiserver-authentication-reader"),
            subjects=user,
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": METRICS_SERVICE, "namespace": METRICS_NAMESPACE},
            "spec": {
                "type": "ExternalName",
                "externalName": "127.0.0.1",
                "ports": [
                    {"name": "https", "port": settings.metrics_server_port, "protocol": "TCP"}
                ],
            },
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": METRICS_APISERVICE},
            "spec": {
                "group": METRICS_GROUP,
                "version": METRICS_VERSION,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
                "service": {
                    "name": METRICS_SERVICE,
                    "namespace": METRICS_NAMESPACE,
                    "port": settings.metrics_server_port,
                },
                "caBundle": base64.b64encode(pki.ca_cert.read_bytes()).decode(),
            },
        },
    ]


def _role_ref(kind: str, name: str) -> dict[str, str]:
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}


def objects_file(layout: StateLayout) -> Path:
    """The Kubernetes objects of the cluster services, applied by bootstrap."""
    return layout.config / "addons.yaml"


def registry_config_file(layout: StateLayout) -> Path:
    return layout.config / "registry.yaml"


def _registry_http_secret(layout: StateLayout) -> str:
    path = layout.pki / "registry-http.secret"
    if not path.exists():
        write_private(path, secrets.token_hex(32))
    return path.read_text().strip()


def prepare(layout: StateLayout, settings: ClusterSettings, pki: PKI) -> None:
    """Certificates, kubeconfig and config files of the registry and metrics-server."""
    pki.ensure(METRICS_SERVER_IDENTITIES)
    kubeconfig.write(
        layout.kubeconfig_for(METRICS_SERVER),
        settings.api_url,
        pki.ca_cert,
        *pki.pair("metrics-server"),
        METRICS_SERVER_USER,
    )
    layout.registry_data.mkdir(parents=True, exist_ok=True)
    config = registry_config(layout, settings, _registry_http_secret(layout))
    write_private(registry_config_file(layout), yaml.safe_dump(config, sort_keys=False))
    objects_file(layout).write_text(
        yaml.safe_dump_all(metrics_server_objects(pki, settings), sort_keys=False)
    )


def specs(layout: StateLayout, settings: ClusterSettings) -> list[ComponentSpec]:
    """The registry (no dependencies) and metrics-server (after bootstrap: it needs its
    RBAC to read the front-proxy CA from kube-system)."""
    pki = PKI(layout.pki)
    kc = layout.kubeconfig_for(METRICS_SERVER)
    serving_cert, serving_key = pki.pair("metrics-server-serving")
    client_cert, client_key = pki.pair("metrics-server")
    metrics_server = [
        str(go_binary(METRICS_SERVER_BINARY)),
        "--bind-address=127.0.0.1",
        f"--secure-port={settings.metrics_server_port}",
        f"--tls-cert-file={serving_cert}",
        f"--tls-private-key-file={serving_key}",
        # Unused while the certificate above is given, but it must be absolute outside
        # a Pod (the default is relative to the working directory).
        f"--cert-dir={layout.run / METRICS_SERVER}",
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        f"--kubelet-certificate-authority={pki.ca_cert}",
        f"--kubelet-client-certificate={client_cert}",
        f"--kubelet-client-key={client_key}",
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        f"--metric-resolution={METRIC_RESOLUTION}",
        "--profiling=false",
    ]
    return [
        ComponentSpec(
            REGISTRY,
            [str(go_binary(REGISTRY_BINARY)), str(registry_config_file(layout))],
            Probe(f"http://{settings.registry_address}/v2/"),
            env={"OTEL_TRACES_EXPORTER": "none"},
        ),
        ComponentSpec(
            METRICS_SERVER,
            metrics_server,
            # /livez, not /readyz: readiness waits for a first scrape of every node,
            # which needs the agents' kubelet API.
            Probe(f"https://127.0.0.1:{settings.metrics_server_port}/livez", ca=pki.ca_cert),
            after=("bootstrap",),
        ),
    ]
