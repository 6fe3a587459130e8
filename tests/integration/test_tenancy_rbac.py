"""Who may do what, on the real embedded cluster: the operator (its ServiceAccount's
token, as the cluster runs it), a wasm node (its system:node certificate), a tenant bound
to ClusterRole wasmop:tenant, and an operator run with --namespace under the namespaced
RBAC variant. Each is refused what is not its own (403), and can do its job."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import uuid
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from support import Tenant, module_configmap, operator_log, operator_pod, wait_for
from support import tenant_function as function
from wasmop.cluster import manager
from wasmop.cluster.layout import repo_root
from wasmop.operator.install import manifests
from wasmop.private_file import write_private
from wasmop.wellknown import (
    API_VERSION,
    FUNCTION_LABEL,
    FUNCTION_PLURAL,
    GROUP,
    RUNTIME_KIND,
    RUNTIME_PLURAL,
    VERSION,
)

pytestmark = pytest.mark.integration

HELLO = repo_root() / "functions" / "build" / "hello.wasm"


@pytest.fixture
def tenant(api: client.ApiClient, namespace: str) -> Tenant:
    module_configmap(client.CoreV1Api(api), namespace, "wasm-hello", HELLO)
    return Tenant(api, namespace)


# --------------------------------------------------------------------------- namespaces


def test_a_namespace_nobody_enabled_gets_a_reason_not_a_function(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        module_configmap(core, name, "wasm-hello", HELLO)
        tenant = Tenant(api, name)
        tenant.create(function("hello"))
        wait_for(
            lambda: (
                (c := tenant.condition("hello", "Available"))
                and c["reason"] == "NamespaceNotEnabled"
            ),
            what="hello waiting on NamespaceNotEnabled",
        )
        assert "--function-namespace" in (tenant.condition("hello", "Available") or {})["message"]
        assert not client.AppsV1Api(api).list_namespaced_deployment(name).items
    finally:
        core.delete_namespace(name)


# --------------------------------------------------------------------------- RBAC


def as_user(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


def forbidden(call: Any) -> None:
    with pytest.raises(ApiException) as denied:
        call()
    assert denied.value.status == 403, denied.value.body


def test_the_operator_reads_no_secrets_and_nothing_in_kube_system(cluster, tenant: Tenant) -> None:  # type: ignore[no-untyped-def]
    """With the operator's own token: Secrets nowhere, kube-system's ConfigMaps and
    Deployments not at all; its function namespace's ConfigMaps, yes."""
    operator = as_user(str(cluster.layout.kubeconfig_for("operator")))
    core, apps = client.CoreV1Api(operator), client.AppsV1Api(operator)
    forbidden(lambda: core.list_secret_for_all_namespaces())
    forbidden(lambda: core.list_namespaced_secret(tenant.namespace))
    forbidden(lambda: core.read_namespaced_config_map("kube-root-ca.crt", "kube-system"))
    forbidden(lambda: core.list_namespaced_config_map("kube-system"))
    forbidden(lambda: core.list_config_map_for_all_namespaces())
    forbidden(
        lambda: apps.patch_namespaced_deployment(
            "anything", "kube-system", {"metadata": {"labels": {"x": "y"}}}
        )
    )
    assert core.read_namespaced_config_map("wasm-hello", tenant.namespace).metadata.name


def test_a_node_cannot_touch_another_node_s_pods(cluster, tenant: Tenant) -> None:  # type: ignore[no-untyped-def]
    """Node authorization and NodeRestriction: wasm-node-1's identity reads, changes and
    deletes only Pods bound to wasm-node-1."""
    tenant.create(function("spread", replicas=4))
    tenant.wait_phase("spread", "Ready")
    pods = tenant.core.list_namespaced_pod(
        tenant.namespace, label_selector=f"{FUNCTION_LABEL}=spread"
    )
    by_node = {p.spec.node_name: p.metadata.name for p in pods.items}
    assert {"wasm-node-1", "wasm-node-2"} <= set(by_node), by_node
    node1 = client.CoreV1Api(as_user(str(cluster.layout.kubeconfig_for("node-wasm-node-1"))))
    own, other = by_node["wasm-node-1"], by_node["wasm-node-2"]
    assert node1.read_namespaced_pod(own, tenant.namespace).spec.node_name == "wasm-node-1"
    forbidden(lambda: node1.read_namespaced_pod(other, tenant.namespace))
    forbidden(
        lambda: node1.patch_namespaced_pod_status(
            other,
            tenant.namespace,
            {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        )
    )
    forbidden(lambda: node1.delete_namespaced_pod(other, tenant.namespace))
    forbidden(lambda: node1.list_namespaced_config_map(tenant.namespace))
    forbidden(lambda: node1.read_namespaced_config_map("wasm-hello", tenant.namespace))
    assert tenant.core.read_namespaced_pod(other, tenant.namespace).status.phase == "Running"


def token_kubeconfig(cluster, account: str, namespace: str, path) -> client.ApiClient:  # type: ignore[no-untyped-def]
    """A client authenticated as a ServiceAccount (a fresh token), with a 0600 kubeconfig."""
    core = client.CoreV1Api(as_user(str(cluster.kubeconfig)))
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    token = core.create_namespaced_service_account_token(account, namespace, request).status.token
    admin = yaml.safe_load(cluster.layout.admin_kubeconfig.read_text())
    context = {"cluster": admin["clusters"][0]["name"], "user": account}
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": context}],
        "current-context": "c",
    }
    write_private(path, yaml.safe_dump(kubeconfig))
    return as_user(str(path))


def test_a_tenant_writes_functions_and_modules_but_no_pods(
    api: client.ApiClient, tenant: Tenant, cluster, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """ClusterRole wasmop:tenant, bound in the tenant's namespace: WasmFunctions and
    ConfigMaps yes; Pods, Deployments, Secrets, status and WasmRuntimes no."""
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(
        tenant.namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="alice"))
    )
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "alice", "namespace": tenant.namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "wasmop:tenant",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": tenant.namespace}],
    }
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(tenant.namespace, binding)
    alice = token_kubeconfig(cluster, "alice", tenant.namespace, tmp_path / "alice")
    as_alice = Tenant(alice, tenant.namespace)
    as_alice.create(function("mine"), dry_run=True)
    empty = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="m"))
    as_alice.core.create_namespaced_config_map(tenant.namespace, empty, dry_run="All")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    labels = {"app": "d"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod["spec"]},
        },
    }
    runtime = {"apiVersion": API_VERSION, "kind": RUNTIME_KIND, "metadata": {"name": "mine"}}
    apps = client.AppsV1Api(alice)
    ns = tenant.namespace
    forbidden(lambda: as_alice.core.create_namespaced_pod(ns, pod, dry_run="All"))
    forbidden(lambda: apps.create_namespaced_deployment(ns, deployment, dry_run="All"))
    forbidden(lambda: as_alice.core.list_namespaced_secret(ns))
    forbidden(
        lambda: as_alice.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, FUNCTION_PLURAL, "mine", {"status": {"phase": "Ready"}}
        )
    )
    forbidden(
        lambda: as_alice.custom.create_cluster_custom_object(
            GROUP, VERSION, RUNTIME_PLURAL, runtime, dry_run="All"
        )
    )
    forbidden(lambda: as_alice.core.list_namespaced_config_map("kube-system"))


def test_an_operator_watching_one_namespace_needs_only_the_namespaced_rbac(
    api: client.ApiClient, tenant: Tenant, cluster, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """rbac-namespaced/operator.yaml for this namespace, bound to a ServiceAccount of its
    own: an operator run with --namespace under it makes a function Ready."""
    account = f"ns-operator-{uuid.uuid4().hex[:6]}"
    objects = [o for m in manifests(watch_namespaces=[tenant.namespace]) for o in m.objects]
    rbac = [o for o in objects if "rbac" in o["apiVersion"]]
    rbac_api = client.RbacAuthorizationV1Api(api)
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(
        "wasm-operators", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account))
    )
    created_cluster: list[tuple[str, str]] = []
    for obj in rbac:
        obj["metadata"]["name"] = f"{obj['metadata']['name']}-{account}"
        if "roleRef" in obj:
            obj["roleRef"]["name"] = f"{obj['roleRef']['name']}-{account}"
            obj["subjects"] = [
                {"kind": "ServiceAccount", "name": account, "namespace": "wasm-operators"}
            ]
        kind, ns = obj["kind"], obj["metadata"].get("namespace")
        create = {
            "ClusterRole": lambda o: rbac_api.create_cluster_role(o),
            "ClusterRoleBinding": lambda o: rbac_api.create_cluster_role_binding(o),
            "Role": lambda o, ns=ns: rbac_api.create_namespaced_role(ns, o),
            "RoleBinding": lambda o, ns=ns: rbac_api.create_namespaced_role_binding(ns, o),
        }[kind]
        create(obj)
        if kind.startswith("Cluster"):
            created_cluster.append((kind, obj["metadata"]["name"]))
    kubeconfig = tmp_path / "kubeconfig"
    token_kubeconfig(cluster, account, "wasm-operators", kubeconfig)
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    log_path = tmp_path / "operator.log"
    settings = manager.load_settings(cluster.layout)
    first = operator_pod(core).metadata.name  # the cluster's operator, a Pod
    with log_path.open("wb") as log_file:
        operator = subprocess.Popen(
            [
                sys.executable, "-m", "wasmop", "operator", "run",
                "--kubeconfig", str(kubeconfig), "--namespace", tenant.namespace,
                "--metrics-port", str(ports[0]), "--health-port", str(ports[1]),
                "--gateway-url", f"http://127.0.0.1:{settings.gateway_port}",
                "--service-mode", "headless", "--priority", str(10**7),
            ],
            stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        offset = len(operator_log(first))
        wait_for(
            lambda: "Pausing" in operator_log(first)[offset:] or operator.poll() is not None,
            timeout=30,
            what="the cluster's operator to pause for the namespaced one",
        )
        assert operator.poll() is None, log_path.read_text()[-3000:]
        tenant.create(function("scoped"))
        tenant.wait_phase("scoped", "Ready", timeout=90)
        log = log_path.read_text()
        assert "Forbidden" not in log and "403" not in log, log[-3000:]
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(timeout=30)
        for kind, name in created_cluster:
            delete = (
                rbac_api.delete_cluster_role
                if kind == "ClusterRole"
                else rbac_api.delete_cluster_role_binding
            )
            delete(name)
        core.delete_namespaced_service_account(account, "wasm-operators")
    wait_for(
        lambda: "Resuming" in operator_log(first)[offset:],
        timeout=70,
        what="the cluster's operator to resume",
    )
