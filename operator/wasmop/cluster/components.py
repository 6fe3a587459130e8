"""The processes of the embedded cluster: their command lines, config files and probes.

The control plane is one binary (``controlplane/``) with a subcommand per component, each
run as its own process exactly as in a kubeadm cluster. Every listener is bound to
127.0.0.1; the ``kubernetes`` Service's endpoint reconciler is off because EndpointSlices
cannot carry a loopback address. etcd speaks TLS only and admits only clients with a
certificate from its own CA (the API server's); the API server encrypts Secrets before
they reach etcd and runs the aggregation layer for metrics-server (``addons``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from wasmop.cluster import encryption, kubeconfig
from wasmop.cluster.layout import StateLayout, controlplane_binary
from wasmop.cluster.pki import (
    FRONT_PROXY_CLIENT_USER,
    KUBELET_CLIENT_USER,
    PKI,
    Identity,
    control_plane_identities,
)
from wasmop.cluster.settings import ClusterSettings
from wasmop.wellknown import (
    HEALTH_PORT,
    HOST_PROCESS_HANDLER,
    HOST_PROCESS_LABEL,
    HOST_PROCESS_RUNTIME_CLASS,
)


@dataclass(frozen=True)
class Probe:
    """An HTTP(S) GET that answers 200 once the component is ready."""

    url: str
    client_cert: tuple[Path, Path] | None = None
    ca: Path | None = None


@dataclass(frozen=True)
class ComponentSpec:
    """One supervised process."""

    name: str
    argv: list[str]
    probe: Probe | None
    after: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    stop_timeout_seconds: float = 10.0
    start_timeout_seconds: float = 60.0
    oneshot: bool = False  # runs to completion (exit 0) instead of staying up
    # On a restart, start the new process as soon as the old one has stopped listening:
    # the old one finishes its shutdown beside it (killed after stop_timeout_seconds).
    restart_once_unbound: bool = False

    @property
    def address(self) -> str:
        """Where it serves (scheme://host:port of its probe), for status output."""
        if self.probe is None:
            return ""
        parts = urlsplit(self.probe.url)
        return f"{parts.scheme}://{parts.netloc}"


# Writes are traced at Request level so that every change the operator makes can be
# reconstructed afterwards (and counted per function, wasmop.bench.audit); Event writes at
# Metadata level (who posted one, not what it said), so they are counted too; reads, lease
# renewals and the rest of the Event traffic are left out to keep the log small. Rules
# match first to last, so the credential rule comes before the one that drops reads: every
# access to a Secret, a read included, is recorded (who, when, which one), and never a body
# that carries a credential (Secrets, issued tokens, token reviews). The operator's reads
# are recorded at Metadata level too: its API requests at rest, per function, are a
# measured cost (the scale experiment).
CREDENTIAL_RESOURCES = [
    {"group": "", "resources": ["secrets", "serviceaccounts/token"]},
    {"group": "authentication.k8s.io", "resources": ["tokenreviews"]},
]
# The operator's identity (bootstrap.OPERATOR_NAMESPACE and OPERATOR_ACCOUNT).
OPERATOR_USER = "system:serviceaccount:wasm-operators:wasmop-operator"
EVENTS = [
    {"group": "", "resources": ["events"]},
    {"group": "events.k8s.io", "resources": ["events"]},
]
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}]},
        {"level": "Metadata", "verbs": ["create", "update", "patch"], "resources": EVENTS},
        {"level": "None", "resources": EVENTS},
        {"level": "Metadata", "resources": CREDENTIAL_RESOURCES},
        {"level": "Metadata", "users": [OPERATOR_USER], "verbs": ["get", "list", "watch"]},
        {"level": "None", "verbs": ["get", "list", "watch"]},
        {"level": "None", "nonResourceURLs": ["/healthz*", "/readyz*", "/livez*", "/version"]},
        {"level": "Request", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "Metadata"},
    ],
}


def control_plane_objects() -> list[dict[str, Any]]:
    """RBAC the control plane's own identities need beyond the defaults."""
    return [
        {
            # The API server's client certificate for kubelets (logs, exec, metrics
            # through the API) gets the kubelet API and nothing else, as in kubeadm.
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "wasmop:apiserver-kubelet-client"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:kubelet-api-admin",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": KUBELET_CLIENT_USER,
                }
            ],
        }
    ]


def control_plane_objects_file(layout: StateLayout) -> Path:
    return layout.config / "control-plane.yaml"


def prepare(layout: StateLayout, settings: ClusterSettings) -> PKI:
    """Write the PKI, kubeconfigs and config files the components read."""
    layout.ensure()
    pki = PKI(layout.pki)
    pki.ensure(
        [*control_plane_identities(settings.service_ip), Identity("gateway", "wasmop:gateway")]
    )
    encryption.ensure(layout.encryption_config)
    users = {
        "admin": layout.admin_kubeconfig,
        "gateway": layout.kubeconfig_for("gateway"),
        "controller-manager": layout.kubeconfig_for("controller-manager"),
        "scheduler": layout.kubeconfig_for("scheduler"),
    }
    for name, path in users.items():
        kubeconfig.write(path, settings.api_url, pki.ca_cert, *pki.pair(name), name)
    (layout.config / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False))
    control_plane_objects_file(layout).write_text(yaml.safe_dump_all(control_plane_objects()))
    system_node_objects_file(layout).write_text(yaml.safe_dump_all(system_node_objects(settings)))
    scheduler_config = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {
            "kubeconfig": str(layout.kubeconfig_for("scheduler")),
            "qps": settings.client_qps,
            "burst": settings.client_burst,
        },
        "leaderElection": {"leaderElect": False},
    }
    (layout.config / "scheduler.yaml").write_text(yaml.safe_dump(scheduler_config))
    return pki


def control_plane(layout: StateLayout, settings: ClusterSettings) -> list[ComponentSpec]:
    """etcd, kube-apiserver, kube-controller-manager and kube-scheduler, in start order."""
    binary = str(controlplane_binary())
    pki = PKI(layout.pki)
    ca = pki.ca_cert
    admin = pki.pair("admin")
    s = settings
    etcd_ca = str(pki.etcd_ca_cert)
    etcd = [
        binary,
        "etcd",
        "--name=wasmop",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={s.etcd_url}",
        f"--advertise-client-urls={s.etcd_url}",
        f"--cert-file={pki.cert_path('etcd-server')}",
        f"--key-file={pki.key_path('etcd-server')}",
        "--client-cert-auth=true",
        f"--trusted-ca-file={etcd_ca}",
        f"--listen-peer-urls={s.etcd_peer_url}",
        f"--initial-advertise-peer-urls={s.etcd_peer_url}",
        f"--initial-cluster=wasmop={s.etcd_peer_url}",
        f"--peer-cert-file={pki.cert_path('etcd-peer')}",
        f"--peer-key-file={pki.key_path('etcd-peer')}",
        "--peer-client-cert-auth=true",
        f"--peer-trusted-ca-file={etcd_ca}",
        "--listen-metrics-urls=",
        "--log-level=warn",
        "--quota-backend-bytes=4294967296",
        "--auto-compaction-retention=10m",
        "--auto-compaction-mode=periodic",
    ]
    if not s.etcd_fsync:
        etcd.append("--unsafe-no-fsync")
    apiserver = [
        binary,
        "kube-apiserver",
        f"--etcd-servers={s.etcd_url}",
        f"--etcd-cafile={etcd_ca}",
        f"--etcd-certfile={pki.cert_path('apiserver-etcd-client')}",
        f"--etcd-keyfile={pki.key_path('apiserver-etcd-client')}",
        f"--encryption-provider-config={layout.encryption_config}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={s.api_port}",
        "--endpoint-reconciler-type=none",
        f"--service-cluster-ip-range={s.service_cidr}",
        f"--client-ca-file={ca}",
        f"--tls-cert-file={pki.cert_path('apiserver')}",
        f"--tls-private-key-file={pki.key_path('apiserver')}",
        f"--kubelet-client-certificate={pki.cert_path('apiserver-kubelet-client')}",
        f"--kubelet-client-key={pki.key_path('apiserver-kubelet-client')}",
        # A node agent's kubelet API must present a serving certificate of the cluster CA
        # with its InternalIP as an IP SAN (logs, exec and metrics go through it).
        f"--kubelet-certificate-authority={ca}",
        "--kubelet-preferred-address-types=InternalIP",
        # The aggregation layer: the API server proxies metrics.k8s.io to metrics-server
        # as front-proxy-client, asserting the caller in X-Remote-* headers. Without
        # kube-proxy it dials the APIService's Service itself; an ExternalName Service
        # at 127.0.0.1 makes that loopback (aggregator routing would need an
        # EndpointSlice address, and those refuse loopback).
        f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT_USER}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki.cert_path('front-proxy-client')}",
        f"--proxy-client-key-file={pki.key_path('front-proxy-client')}",
        "--enable-aggregator-routing=false",
        f"--service-account-key-file={pki.sa_public_key}",
        f"--service-account-signing-key-file={pki.sa_private_key}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--authorization-mode=Node,RBAC",
        # PodTolerationRestriction: a namespace's default tolerations (wasm-operators
        # tolerates the system node, whose taint keeps every other Pod off it).
        "--enable-admission-plugins=NodeRestriction,PodTolerationRestriction",
        f"--default-not-ready-toleration-seconds={s.not_ready_toleration_seconds}",
        f"--default-unreachable-toleration-seconds={s.unreachable_toleration_seconds}",
        f"--audit-policy-file={layout.config / 'audit-policy.yaml'}",
        f"--audit-log-path={layout.audit_log}",
        "--audit-log-format=json",
        "--audit-log-maxsize=100",
        "--audit-log-maxbackup=3",
        "--audit-log-mode=batch",
        "--audit-log-batch-max-wait=1s",
        "--profiling=false",
        "--event-ttl=2h",
    ]
    controller_kubeconfig = layout.kubeconfig_for("controller-manager")
    controller_manager = [
        binary,
        "kube-controller-manager",
        f"--kubeconfig={controller_kubeconfig}",
        f"--authentication-kubeconfig={controller_kubeconfig}",
        f"--authorization-kubeconfig={controller_kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={s.controller_manager_port}",
        "--leader-elect=false",
        "--use-service-account-credentials=true",
        f"--root-ca-file={ca}",
        f"--service-account-private-key-file={pki.sa_private_key}",
        f"--cluster-signing-cert-file={ca}",
        f"--cluster-signing-key-file={pki.key_path('ca')}",
        f"--service-cluster-ip-range={s.service_cidr}",
        f"--node-monitor-grace-period={s.node_monitor_grace_seconds}s",
        f"--node-monitor-period={round(s.node_monitor_period_seconds * 1000)}ms",
        f"--kube-api-qps={s.client_qps}",
        f"--kube-api-burst={s.client_burst}",
        "--concurrent-deployment-syncs=50",
        "--concurrent-replicaset-syncs=50",
        "--concurrent-service-endpoint-syncs=50",
        "--concurrent-gc-syncs=40",
        "--horizontal-pod-autoscaler-sync-period=5s",
        # Consumers here read EndpointSlices; the legacy Endpoints objects (deprecated since
        # 1.33) would only double the writes of every rollout.
        "--controllers=*,-endpoints-controller,-endpointslice-mirroring-controller",
        "--profiling=false",
    ]
    scheduler_kubeconfig = layout.kubeconfig_for("scheduler")
    scheduler = [
        binary,
        "kube-scheduler",
        f"--config={layout.config / 'scheduler.yaml'}",
        f"--authentication-kubeconfig={scheduler_kubeconfig}",
        f"--authorization-kubeconfig={scheduler_kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={s.scheduler_port}",
        "--profiling=false",
    ]
    return [
        ComponentSpec(
            "etcd",
            etcd,
            Probe(
                f"{s.etcd_url}/health",
                client_cert=pki.pair("etcd-healthcheck-client"),
                ca=pki.etcd_ca_cert,
            ),
        ),
        ComponentSpec(
            "kube-apiserver",
            apiserver,
            Probe(f"{s.api_url}/readyz", client_cert=admin, ca=ca),
            after=("etcd",),
            # On SIGTERM it stops listening at once, flushes its audit batch within a
            # second, and then lingers for many seconds before it exits (upstream
            # kubernetes#131052). Its state is in etcd: it may be killed soon after,
            # and a restart need not wait for it at all (the API was away 12.8 s).
            stop_timeout_seconds=3.0,
            restart_once_unbound=True,
        ),
        ComponentSpec(
            "kube-controller-manager",
            controller_manager,
            Probe(f"https://127.0.0.1:{s.controller_manager_port}/healthz"),
            after=("kube-apiserver",),
        ),
        ComponentSpec(
            "kube-scheduler",
            scheduler,
            Probe(f"https://127.0.0.1:{s.scheduler_port}/healthz"),
            after=("kube-apiserver",),
        ),
    ]


def workloads(layout: StateLayout, settings: ClusterSettings) -> list[ComponentSpec]:
    """Base objects, the wasm node agents and the system node: what makes the cluster
    run WebAssembly, started once the control plane is up. The operator and gateway are
    Pods of the system node (installed by bootstrap from the real cluster's manifests);
    the last step waits until both serve."""
    from wasmop.node.netns import NodeNetwork

    wasmop = [sys.executable, "-m", "wasmop"]
    state = ["--state-dir", str(layout.root)]
    specs = [
        ComponentSpec(
            "bootstrap",
            [sys.executable, "-m", "wasmop.cluster.bootstrap", *state],
            probe=None,
            after=("kube-apiserver",),
            oneshot=True,
        )
    ]

    def node(name: str, cidr: str, zone: str, *extra: str) -> ComponentSpec:
        network = NodeNetwork.for_node(name, cidr)
        return ComponentSpec(
            name,
            [
                *wasmop, "node", *state, "run", "--name", name, "--pod-cidr", cidr,
                "--zone", zone, "--max-pods", str(settings.max_pods),
                "--registry-allow", settings.registry_address,
                # The operator's address policy, for the registries nodes pull from.
                *(f"--module-url-allow={allowed}" for allowed in settings.module_url_allow),
                "--lease-renew-seconds", f"{settings.lease_renew_seconds:g}", *extra,
            ],
            Probe(f"http://{network.node_address}:{HEALTH_PORT}/healthz"),
            after=("bootstrap",),
            stop_timeout_seconds=35.0,
        )  # fmt: skip

    for index, name in enumerate(settings.node_names(), start=1):
        specs.append(node(name, settings.node_pod_cidr(index), settings.node_zone(index)))
    if settings.system_node:
        specs.append(
            node(
                settings.system_node_name,
                settings.system_node_pod_cidr,
                settings.node_zone(1),
                "--runtime-handler",
                HOST_PROCESS_HANDLER,
            )
        )
        specs.append(
            ComponentSpec(
                WORKLOADS_READY,
                [sys.executable, "-m", "wasmop.cluster.bootstrap", *state, "--wait-workloads"],
                probe=None,
                after=(settings.system_node_name,),
                oneshot=True,
                start_timeout_seconds=150.0,
            )
        )
    return specs


# The last step of cluster up: the operator and gateway Pods serve.
WORKLOADS_READY = "operator-and-gateway"


def system_node_objects(settings: ClusterSettings) -> list[dict[str, Any]]:
    """What places the operator and gateway Pods on the system node and tells the
    operator about this cluster, without changing the real cluster's manifests:

    * the ``wasm-operators`` namespace's default toleration of the system node's taint
      (the PodTolerationRestriction admission plugin adds it to the namespace's Pods);
    * the operator's settings ConfigMap (its Deployment reads it through an optional
      ``envFrom``): headless Services (no kube-proxy here) and the gateway on loopback;
    * the RuntimeClass of the host-process handler, for Pods elsewhere that ask for it.
    """
    toleration = {"key": HOST_PROCESS_LABEL, "operator": "Exists", "effect": "NoSchedule"}
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": OPERATOR_NAMESPACE,
                "annotations": {
                    "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps([toleration])
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": OPERATOR_SETTINGS, "namespace": OPERATOR_NAMESPACE},
            "data": {
                "WASMOP_SERVICE_MODE": "headless",
                "WASMOP_GATEWAY_URL": f"http://127.0.0.1:{settings.gateway_port}",
                # The cluster's own registry is on loopback, which no tenant's may be.
                "WASMOP_REGISTRY_ALLOW": settings.registry_address,
                "WASMOP_MODULE_URL_ALLOW": ",".join(settings.module_url_allow),
            },
        },
        {
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": HOST_PROCESS_RUNTIME_CLASS},
            "handler": HOST_PROCESS_HANDLER,
            "scheduling": {
                "nodeSelector": {HOST_PROCESS_LABEL: "true"},
                "tolerations": [toleration],
            },
        },
    ]


def system_node_objects_file(layout: StateLayout) -> Path:
    return layout.config / "system-node.yaml"


OPERATOR_NAMESPACE = "wasm-operators"
OPERATOR_SETTINGS = "wasmop-operator-settings"
