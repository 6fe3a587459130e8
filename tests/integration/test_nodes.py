"""Wasm node agents run real Pods of the embedded cluster; the gateway routes to them."""

from __future__ import annotations

import collections
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from support import gateway_get, module_configmap, wait_for
from wasmop.bench.deploy import plain_deployment, plain_service
from wasmop.cluster import manager
from wasmop.cluster.layout import repo_root
from wasmop.node import fault_client
from wasmop.node.netns import NodeNetwork
from wasmop.wellknown import HEALTH_PORT, RUNTIME_LABEL

pytestmark = pytest.mark.integration

FUNCTIONS = repo_root() / "functions" / "build"


def ready_pods(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


@pytest.fixture
def hello(api: client.ApiClient, namespace: str) -> tuple[str, str]:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    module_configmap(core, namespace, "hello-module", FUNCTIONS / "hello.wasm")
    apps.create_namespaced_deployment(namespace, plain_deployment("hello", "hello-module", 4))
    core.create_namespaced_service(namespace, plain_service("hello"))
    wait_for(
        lambda: len(ready_pods(core, namespace, "hello")) == 4,
        timeout=120, what="4 ready hello Pods",
    )  # fmt: skip
    return namespace, "hello"


def test_nodes_are_ready(api: client.ApiClient, cluster) -> None:  # type: ignore[no-untyped-def]
    expected = set(manager.load_settings(cluster.layout).node_names())
    nodes = {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}
    assert expected <= set(nodes)
    for name in expected:
        node = nodes[name]
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True", name
        assert node.metadata.labels["kubernetes.io/arch"] == "wasm32-wasi"
        assert node.metadata.labels["topology.kubernetes.io/zone"]
        assert node.spec.taints[0].key == RUNTIME_LABEL
        assert node.status.addresses[0].address.startswith("10.244.0.")


def test_hand_written_deployment_serves_through_gateway(
    api: client.ApiClient, hello: tuple[str, str]
) -> None:
    namespace, name = hello
    core = client.CoreV1Api(api)
    pod_ips = {p.status.pod_ip for p in ready_pods(core, namespace, name)}
    assert all(ip.startswith("10.244.") for ip in pod_ips)

    def slice_addresses() -> set[str]:
        slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={name}"
        )
        return {a for s in slices.items for e in s.endpoints or [] for a in e.addresses}

    wait_for(lambda: slice_addresses() == pod_ips, what="EndpointSlice with the Pod IPs")
    served: collections.Counter[str] = collections.Counter()
    for _ in range(40):
        status, headers, body = gateway_get(f"/{namespace}/{name}/")
        assert status == 200 and body == b"Hello, world!\n"
        assert "upstream;dur=" in headers["Server-Timing"]
        served[headers["X-Wasmop-Pod"]] += 1
    assert len(served) == 4, f"requests not spread over the replicas: {served}"


def test_crashed_container_restarts_and_deleted_pod_is_replaced(
    api: client.ApiClient, hello, cluster
) -> None:  # type: ignore[no-untyped-def]
    namespace, name = hello
    core = client.CoreV1Api(api)
    victim = ready_pods(core, namespace, name)[0]
    fault_client.post(
        cluster.layout.run,
        victim.spec.node_name,
        "/faults/crash",
        {"namespace": namespace, "pod": victim.metadata.name},
    )

    def restarted() -> bool:
        pod = core.read_namespaced_pod(victim.metadata.name, namespace)
        status = pod.status.container_statuses[0]
        return status.restart_count == 1 and status.ready

    wait_for(restarted, what="the crashed container to restart and become ready")
    pod = core.read_namespaced_pod(victim.metadata.name, namespace)
    assert pod.status.container_statuses[0].last_state.terminated.exit_code == 137
    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/", timeout=5) as response:
        assert response.read() == b"Hello, world!\n"

    core.delete_namespaced_pod(victim.metadata.name, namespace)
    wait_for(
        lambda: (
            not [
                p
                for p in core.list_namespaced_pod(namespace).items
                if p.metadata.name == victim.metadata.name
            ]
        ),
        what="the deleted Pod object to disappear",
    )
    wait_for(lambda: len(ready_pods(core, namespace, name)) == 4, what="a replacement Pod")


def test_pod_with_invalid_module_reports_reason_and_others_run(
    api: client.ApiClient, hello
) -> None:  # type: ignore[no-untyped-def]
    namespace, name = hello
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    module_configmap(core, namespace, "broken-module", FUNCTIONS / "notwasm.wasm")
    apps.create_namespaced_deployment(namespace, plain_deployment("broken", "broken-module", 1))

    def waiting_reason() -> str | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=broken").items
        for pod in pods:
            for status in pod.status.container_statuses or []:
                if status.state.waiting and status.state.waiting.reason == "NotWasm":
                    return pod.metadata.name
        return None

    broken = wait_for(waiting_reason, what="the NotWasm reason in the Pod status")
    events = wait_for(
        lambda: [
            e
            for e in core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.name={broken}"
            ).items
            if e.reason == "Failed" and "NotWasm" in e.message
        ],
        what="a Failed event naming NotWasm",
    )
    assert events[0].type == "Warning"
    assert len(ready_pods(core, namespace, name)) == 4
    status, _, body = gateway_get(f"/{namespace}/{name}/")
    assert status == 200 and body == b"Hello, world!\n"


def test_gateway_answers_503_with_reason_when_nothing_is_ready(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service(namespace, plain_service("nobody"))
    wait_for(
        lambda: gateway_get(f"/{namespace}/nobody/")[0] != 404,
        what="the gateway to see the Service",
    )
    status, headers, body = gateway_get(f"/{namespace}/nobody/")
    assert status == 503
    assert headers["X-Wasmop-Reason"] == "NoReadyEndpoints"
    assert b"no ready endpoint" in body
    status, headers, _ = gateway_get(f"/{namespace}/absent/")
    assert status == 404 and headers["X-Wasmop-Reason"] == "ServiceNotFound"


def test_ready_overwritten_by_the_node_controller_is_posted_again(
    api: client.ApiClient, cluster
) -> None:  # type: ignore[no-untyped-def]
    """After an API server outage longer than the grace period the node controller marks a
    node Unknown; its agent, back in touch, must say Ready at once (a kubelet compares
    with the server's Node), not at its next periodic status report (30 s)."""
    core = client.CoreV1Api(api)
    node = manager.load_settings(cluster.layout).node_names()[0]
    unknown = {
        "type": "Ready",
        "status": "Unknown",
        "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
    }
    core.patch_node_status(node, {"status": {"conditions": [unknown]}})

    def ready() -> bool:
        conditions = core.read_node(node).status.conditions
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    wait_for(ready, timeout=10, interval=0.2, what=f"{node} Ready posted again")


def test_killed_node_is_marked_not_ready_and_pods_move(
    api: client.ApiClient, hello, cluster
) -> None:  # type: ignore[no-untyped-def]
    namespace, name = hello
    core = client.CoreV1Api(api)
    settings = manager.load_settings(cluster.layout)
    nodes = settings.node_names()
    victim = next(p.spec.node_name for p in ready_pods(core, namespace, name))
    survivor = next(n for n in nodes if n != victim)

    def node_ready(node: str) -> bool:
        conditions = core.read_node(node).status.conditions
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    manager.control(cluster.layout, "stop", name=victim, signal="KILL")
    try:
        killed = time.monotonic()
        wait_for(
            lambda: not node_ready(victim),
            timeout=settings.node_monitor_grace_seconds + 10,
            what=f"{victim} NotReady",
        )
        assert time.monotonic() - killed <= settings.node_monitor_grace_seconds + 10

        def all_on_survivor() -> bool:
            pods = ready_pods(core, namespace, name)
            return len(pods) == 4 and {p.spec.node_name for p in pods} == {survivor}

        wait_for(all_on_survivor, timeout=60, what=f"4 ready Pods on {survivor}")
        for _ in range(10):
            status, _, _ = gateway_get(f"/{namespace}/{name}/")
            assert status == 200
    finally:
        manager.control(cluster.layout, "start", name=victim)
    wait_for(lambda: node_ready(victim), what=f"{victim} Ready again")
    # The returning agent finishes the deletions the eviction started.
    wait_for(
        lambda: all(
            p.metadata.deletion_timestamp is None for p in core.list_namespaced_pod(namespace).items
        ),
        what="no Pod left Terminating",
    )


def test_link_delay_and_loss_on_one_node(api: client.ApiClient, hello, cluster) -> None:  # type: ignore[no-untyped-def]
    """Edge emulation: a delayed node's Pods answer no faster than the delay; clearing it
    restores the plain link; other nodes are untouched."""
    namespace, name = hello
    core = client.CoreV1Api(api)
    pod = ready_pods(core, namespace, name)[0]
    node = pod.spec.node_name

    def set_link(delay_ms: float, loss: float = 0.0) -> dict[str, Any]:
        body = {"delayMs": delay_ms, "lossPercent": loss}
        return fault_client.post(cluster.layout.run, node, "/faults/netem", body)

    def request_seconds() -> float:
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/", timeout=10) as response:
            assert response.read() == b"Hello, world!\n"
        return time.perf_counter() - started

    assert set_link(60)["method"] in ("tc-netem", "user-space")
    try:
        # A fresh connection costs two round trips (handshake, request): at least 120 ms.
        assert min(request_seconds() for _ in range(3)) >= 0.12
    finally:
        set_link(0)
    assert min(request_seconds() for _ in range(3)) < 0.12


def test_agent_restart_readopts_its_pods(api: client.ApiClient, hello, cluster) -> None:  # type: ignore[no-untyped-def]
    """A restarted agent neither loses nor duplicates Pods: the same Pods (UIDs) serve
    again on the same addresses, each counting one container restart."""
    namespace, name = hello
    core = client.CoreV1Api(api)
    node = ready_pods(core, namespace, name)[0].spec.node_name
    before = {
        p.metadata.uid: (p.status.pod_ip, p.status.container_statuses[0].restart_count)
        for p in ready_pods(core, namespace, name)
        if p.spec.node_name == node
    }
    manager.control(cluster.layout, "restart", name=node)

    def readopted() -> dict[str, tuple[str, int]] | None:
        pods = [p for p in ready_pods(core, namespace, name) if p.spec.node_name == node]
        current = {
            p.metadata.uid: (p.status.pod_ip, p.status.container_statuses[0].restart_count - 1)
            for p in pods
        }
        return current if current == before else None

    wait_for(readopted, what=f"the Pods on {node} Ready again, same UIDs and addresses")
    assert len(core.list_namespaced_pod(namespace, label_selector=f"app={name}").items) == 4
    for ip, _ in before.values():
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as response:
            assert response.read() == b"Hello, world!\n"


def test_pods_ready_again_after_an_api_server_outage(api: client.ApiClient, hello, cluster) -> None:  # type: ignore[no-untyped-def]
    """A long API server outage makes the node lifecycle controller mark nodes and their
    Pods not ready once it is back; the agents must report their Pods Ready again."""
    namespace, name = hello
    core = client.CoreV1Api(api)
    grace = manager.load_settings(cluster.layout).node_monitor_grace_seconds
    manager.control(cluster.layout, "stop", name="kube-apiserver")
    try:
        time.sleep(grace + 4)
    finally:
        manager.control(cluster.layout, "start", name="kube-apiserver")
    wait_for(
        lambda: len(ready_pods(core, namespace, name)) == 4, timeout=60, what="4 ready Pods again"
    )
    status, _, body = gateway_get(f"/{namespace}/{name}/")
    assert status == 200 and body == b"Hello, world!\n"

    # The controllers come back too, not only the agents: a Service made after the outage
    # gets its endpoints. Their watches back off while the API server is down (client-go
    # waits up to 30 s between tries), so this is where the outage's tail is absorbed;
    # without it the next test's new function was Ready but had no endpoints for ~30 s.
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(namespace, plain_deployment("after", "hello-module", 1))
    core.create_namespaced_service(namespace, plain_service("after"))
    wait_for(lambda: _answers(f"/{namespace}/after/"), timeout=120, what="a new Service served")


def _answers(path: str) -> bool:
    """Whether the gateway serves ``path`` now (a timeout or refusal is a no)."""
    try:
        status, _, body = gateway_get(path, timeout=5)
    except OSError:
        return False
    return status == 200 and body == b"Hello, world!\n"


def test_a_node_whose_network_namespace_was_removed_serves_again(
    api: client.ApiClient, hello: tuple[str, str], cluster
) -> None:  # type: ignore[no-untyped-def]
    """Someone deletes a node's network namespace: the agent makes it again, listens
    again there for its health port and its kubelet API (which the API server reaches),
    and restarts its Pods, which answer again directly and then through the gateway."""
    namespace, app = hello
    core = client.CoreV1Api(api)
    settings = manager.load_settings(cluster.layout)
    name = ready_pods(core, namespace, app)[0].spec.node_name
    network = NodeNetwork.for_node(
        name, settings.node_pod_cidr(settings.node_names().index(name) + 1)
    )
    before = {
        p.metadata.name: p.status.container_statuses[0].restart_count
        for p in ready_pods(core, namespace, app)
        if p.spec.node_name == name
    }
    subprocess.run(["ip", "netns", "delete", network.namespace], check=True, timeout=30)

    def answers(url: str) -> bytes | None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read() if response.status == 200 else None
        except OSError:
            return None

    # exists(): the agent's new namespace (the old one answers until the agent replaces it).
    wait_for(
        lambda: network.exists() and answers(f"http://{network.node_address}:{HEALTH_PORT}/healthz"),
        timeout=60, interval=0.5, what=f"{name}'s health port answering again",
    )  # fmt: skip

    def proxied() -> str | None:  # the kubelet API (HTTPS on 10250), through the API server
        try:
            return core.connect_get_node_proxy_with_path(name, "healthz")
        except ApiException:
            return None

    assert wait_for(proxied, timeout=30, interval=0.5, what=f"{name}'s kubelet API") == "ok"

    def restarted_and_answering() -> bool:
        """Each of the node's Pods restarted (its socket went with the old namespace) and
        answers at its own address, before anything goes through the gateway."""
        pods = {p.metadata.name: p for p in core.list_namespaced_pod(namespace).items}
        return all(
            (pod := pods.get(pod_name)) is not None
            and pod.status.container_statuses[0].restart_count > restarts
            and answers(f"http://{pod.status.pod_ip}:8080/") == b"Hello, world!\n"
            for pod_name, restarts in before.items()
        )

    wait_for(restarted_and_answering, timeout=90, interval=0.5, what=f"{name}'s Pods answering")
    wait_for(
        lambda: (
            len(ready_pods(core, namespace, app)) == 4
            and all(gateway_get(f"/{namespace}/{app}/")[0] == 200 for _ in range(8))
        ),
        timeout=120, interval=0.5, what="every Pod ready and serving through the gateway",
    )  # fmt: skip
