"""The embedded control plane is a real Kubernetes: API, controllers, RBAC, audit."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from support import audit_events, kill_operator, wait_for
from wasmop.cluster import manager
from wasmop.cluster.layout import CLUSTER_MARKER_ENV
from wasmop.cluster.settings import ClusterSettings
from wasmop.kube import Kube, KubeConfig
from wasmop.node.netns import NodeNetwork

pytestmark = pytest.mark.integration


def wasmop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wasmop", *args], capture_output=True, text=True, timeout=60
    )


def test_namespace_and_custom_resource_round_trip(api: client.ApiClient, namespace: str) -> None:
    ext = client.ApiextensionsV1Api(api)
    group = f"t{uuid.uuid4().hex[:6]}.example.com"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(crd)
    try:

        def established() -> bool:
            got = ext.read_custom_resource_definition(f"widgets.{group}")
            conditions = got.status.conditions or []
            return any(c.type == "Established" and c.status == "True" for c in conditions)

        wait_for(established, what="CRD Established")
        custom = client.CustomObjectsApi(api)
        body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w1"}}
        body["spec"] = {"size": 3}
        # The CRD's discovery can lag Established by a moment.
        wait_for(
            lambda: _try(
                lambda: custom.create_namespaced_custom_object(
                    group, "v1", namespace, "widgets", body
                )
            ),
            what="custom object created",
        )
        got = custom.get_namespaced_custom_object(group, "v1", namespace, "widgets", "w1")
        assert got["spec"] == {"size": 3}
        with pytest.raises(ApiException) as invalid:
            bad = dict(body, metadata={"name": "w2"}, spec={"size": 0})
            custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", bad)
        assert invalid.value.status == 422
        assert "spec.size" in invalid.value.body
    finally:
        ext.delete_custom_resource_definition(f"widgets.{group}")


def _try(func):  # type: ignore[no-untyped-def]
    try:
        return func() or True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def test_deployment_creates_replicaset_and_pending_pods(
    api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    labels = {"app": "probe"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="probe"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="c", image="example.invalid/none:1")],
                    # Only wasm nodes may run anything; keep this Pod off them.
                    node_selector={"wasmop.test/nowhere": "true"},
                ),
            ),
        ),
    )
    apps.create_namespaced_deployment(namespace, deployment)
    replicasets = wait_for(
        lambda: apps.list_namespaced_replica_set(namespace).items, what="a ReplicaSet"
    )
    assert replicasets[0].metadata.owner_references[0].name == "probe"
    pods = wait_for(
        lambda: (lambda p: p if len(p) == 2 else None)(core.list_namespaced_pod(namespace).items),
        what="two Pods",
    )
    assert {p.status.phase for p in pods} == {"Pending"}
    assert all(p.metadata.owner_references[0].kind == "ReplicaSet" for p in pods)


def test_serviceaccount_without_role_is_denied(
    api: client.ApiClient, namespace: str, cluster
) -> None:  # type: ignore[no-untyped-def]
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    token = core.create_namespaced_service_account_token(
        "nobody",
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
    ).status.token
    conf = client.Configuration()
    conf.host = api.configuration.host
    conf.ssl_ca_cert = api.configuration.ssl_ca_cert
    conf.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(conf) as as_nobody, pytest.raises(ApiException) as denied:
        client.CoreV1Api(as_nobody).list_namespaced_secret(namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in denied.value.body


def test_audit_log_records_a_create(api: client.ApiClient, namespace: str, cluster) -> None:  # type: ignore[no-untyped-def]
    name = f"audited-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"k": "v"})
    )

    def recorded() -> dict | None:
        for event in audit_events(cluster.layout.audit_log):
            ref = event.get("objectRef", {})
            if (
                event["verb"] == "create"
                and ref.get("name") == name
                and event["stage"] == "ResponseComplete"
            ):
                return event
        return None

    event = wait_for(recorded, timeout=15, interval=0.25, what="the audit event")
    assert event["objectRef"]["namespace"] == namespace
    assert event["user"]["username"] == "wasmop-admin"
    assert event["requestObject"]["data"] == {"k": "v"}


def test_kubectl_subcommand_against_the_cluster(cluster) -> None:  # type: ignore[no-untyped-def]
    ready = wasmop("kubectl", "get", "--raw", "/readyz")
    assert ready.returncode == 0 and ready.stdout.strip() == "ok"
    version = wasmop("kubectl", "version", "-o", "json")
    assert version.returncode == 0, version.stderr
    server = json.loads(version.stdout)["serverVersion"]
    assert server["gitVersion"].startswith("v1.36.")
    assert server["major"] == "1" and server["minor"] == "36"
    can_i = wasmop(
        "kubectl",
        "auth",
        "can-i",
        "list",
        "secrets",
        "--as",
        "system:serviceaccount:default:default",
    )
    assert can_i.stdout.strip() == "no"


def test_kubernetes_service_has_no_loopback_endpoints(api: client.ApiClient) -> None:
    slices = (
        client.DiscoveryV1Api(api)
        .list_namespaced_endpoint_slice(
            "default", label_selector="kubernetes.io/service-name=kubernetes"
        )
        .items
    )
    addresses = [a for s in slices for e in s.endpoints or [] for a in e.addresses]
    assert not any(a.startswith("127.") for a in addresses)


def host_networks(settings: ClusterSettings) -> dict[str, list[str]]:
    """This cluster's node namespaces, veths and pod-range routes present on the host."""
    networks = [
        NodeNetwork.for_node(name, settings.node_pod_cidr(i))
        for i, name in enumerate(settings.node_names(), start=1)
    ]
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    return {
        "namespaces": [n.namespace for n in networks if n.namespace in namespaces.split()],
        "veths": [n.host_veth for n in networks if n.host_veth in links],
        "routes": [str(n.pod_cidr) for n in networks if str(n.pod_cidr) in routes],
    }


def test_objects_survive_restart_and_down_stops_everything(api: client.ApiClient, cluster) -> None:  # type: ignore[no-untyped-def]
    """`cluster down` in the middle of faults (an agent frozen, a link cut, a crashed
    operator restarting) leaves no process, network namespace, veth or route behind."""
    core = client.CoreV1Api(api)
    name = f"survivor-{uuid.uuid4().hex[:8]}"
    core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"a": "1"})
    )
    settings = manager.load_settings(cluster.layout)
    first, second = settings.node_names()[:2]
    try:
        assert all(host_networks(settings).values()), "the nodes' networks exist while up"
        manager.control(cluster.layout, "freeze", name=first, seconds=120)
        manager.partition_node(cluster.layout, second, cut=True)
        kill_operator(core, cluster.layout)
        assert manager.down(cluster.layout)
        assert manager._processes_of(cluster.layout) == [], (
            f"processes left with {CLUSTER_MARKER_ENV}"
        )
        assert host_networks(settings) == {"namespaces": [], "veths": [], "routes": []}
        result = manager.up(cluster.layout, timeout=180)
        assert not result.already_running
        assert core.read_namespaced_config_map(name, "default").data == {"a": "1"}
        assert manager.up(cluster.layout).already_running
    finally:
        core.delete_namespaced_config_map(name, "default")


def test_an_apply_carries_characters_outside_the_basic_multilingual_plane(
    cluster,  # type: ignore[no-untyped-def]
    namespace: str,
) -> None:
    """A tenant's env value may hold any character. Sent as a JSON surrogate pair
    (``\\ud800\\udc00``), an apply's YAML decoder on the server refuses it with 400, and a
    function's Deployment is never written (found by the spec properties, seed 20261130)."""
    value = "\U00010000 é"
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "plane", "namespace": namespace},
        "data": {"value": value},
    }

    async def apply() -> dict:  # type: ignore[type-arg]
        async with Kube(KubeConfig.load(cluster.kubeconfig)) as kube:
            path = f"/api/v1/namespaces/{namespace}/configmaps/plane"
            return await kube.apply(path, body, "wasmop-test")

    assert asyncio.run(apply())["data"]["value"] == value
