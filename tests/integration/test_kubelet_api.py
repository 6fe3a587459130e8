"""The node agents' kubelet API as Kubernetes uses it: TLS the API server verifies,
authentication and authorization as a kubelet does them, ``kubectl logs`` (follow, tail,
timestamps, previous), ``kubectl top`` through metrics-server, and the Summary API."""

from __future__ import annotations

import json
import select
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from kubernetes import client
from support import module_configmap, wait_for
from wasmop.bench.deploy import plain_deployment
from wasmop.cluster import manager
from wasmop.cluster.pki import PKI
from wasmop.node import fault_client
from wasmop.wellknown import DAEMON_PORT

pytestmark = pytest.mark.integration

KUBECTL = [sys.executable, "-m", "wasmop", "kubectl"]


def kubectl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KUBECTL, *args], capture_output=True, text=True, timeout=timeout)


def ready_pod(core: client.CoreV1Api, namespace: str, app: str) -> client.V1Pod | None:
    for pod in core.list_namespaced_pod(namespace, label_selector=f"app={app}").items:
        conditions = pod.status.conditions or []
        if pod.metadata.deletion_timestamp is None and any(
            c.type == "Ready" and c.status == "True" for c in conditions
        ):
            return pod
    return None


@pytest.fixture
def alloc(api: client.ApiClient, namespace: str) -> client.V1Pod:
    """One Pod of the alloc workload, with a memory cap its big requests run into (so it
    writes to stderr)."""
    from wasmop.cluster.layout import repo_root

    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    module_configmap(core, namespace, "alloc-module", repo_root() / "functions/build/alloc.wasm")
    deployment = plain_deployment("alloc", "alloc-module", 1)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "WASMOP_MEMORY_BYTES", "value": str(8 * 2**20)}]
    apps.create_namespaced_deployment(namespace, deployment)
    return wait_for(lambda: ready_pod(core, namespace, "alloc"), what="a ready alloc Pod")


def invoke(pod: client.V1Pod, query: str = "") -> int:
    try:
        with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/{query}", timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def kubelet_url(api: client.ApiClient, node: str, path: str) -> str:
    body = client.CoreV1Api(api).read_node(node)
    address = next(a.address for a in body.status.addresses if a.type == "InternalIP")
    return f"https://{address}:{body.status.daemon_endpoints.kubelet_endpoint.port}{path}"


def kubelet_get(url: str, context: ssl.SSLContext, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_kubelet_api_is_tls_with_the_cluster_ca_and_refuses_strangers(
    api: client.ApiClient, cluster, namespace: str
) -> None:  # type: ignore[no-untyped-def]
    node = manager.load_settings(cluster.layout).node_names()[0]
    pki = PKI(cluster.layout.pki)
    url = kubelet_url(api, node, "/metrics/resource")
    assert f":{DAEMON_PORT}/" in url
    # The serving certificate verifies against the cluster CA, for the node's IP.
    verified = ssl.create_default_context(cafile=str(pki.ca_cert))
    assert kubelet_get(url, verified) == (401, "Unauthorized")
    # A ServiceAccount token: authenticated by TokenReview, then refused by RBAC.
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="nobody"))
    )
    token = core.create_namespaced_service_account_token(
        "nobody", namespace, client.AuthenticationV1TokenRequest(spec={"audiences": []})
    ).status.token
    status, text = kubelet_get(url, verified, token)
    assert status == 403
    assert text.startswith(f"Forbidden (user=system:serviceaccount:{namespace}:nobody")
    # metrics-server's client certificate (no groups): allowed get nodes/metrics.
    with_cert = ssl.create_default_context(cafile=str(pki.ca_cert))
    with_cert.load_cert_chain(*map(str, pki.pair("metrics-server")))
    status, text = kubelet_get(url, with_cert)
    assert status == 200 and "node_cpu_usage_seconds_total" in text
    # ... but not the logs (nodes/proxy).
    logs = kubelet_get(kubelet_url(api, node, "/containerLogs/a/b/c"), with_cert)
    assert logs[0] == 403
    # A client that does not trust the cluster CA cannot complete the handshake.
    stranger = ssl.create_default_context()
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(url, timeout=10, context=stranger)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    # The fault API still wants the agent's own token, not a Kubernetes identity.
    status, _ = kubelet_get(kubelet_url(api, node, "/faults/crash"), with_cert)
    assert status == 401


def test_kubectl_logs_tail_timestamps_stderr_and_previous(
    api: client.ApiClient, alloc: client.V1Pod, cluster
) -> None:  # type: ignore[no-untyped-def]
    namespace, name = alloc.metadata.namespace, alloc.metadata.name
    assert invoke(alloc, "?mib=1") == 200
    assert invoke(alloc, "?mib=64") >= 500  # over the cap: the module says so on stderr

    def logged() -> str:
        out = kubectl("logs", "-n", namespace, name)
        return out.stdout if "out of memory" in out.stdout else ""

    text = wait_for(logged, timeout=10, what="the Pod's log through kubectl")
    lines = text.splitlines()
    assert lines[0].startswith("Serving module sha256:")
    assert any(ln.startswith("method=GET path=/?mib=1 status=200 ") for ln in lines)
    assert any(ln.startswith("alloc: out of memory after ") for ln in lines)
    tail = kubectl("logs", "-n", namespace, name, "--tail=1", "--timestamps").stdout
    assert len(tail.splitlines()) == 1
    stamp, _, rest = tail.partition(" ")
    assert stamp.endswith("Z") and "T" in stamp and rest.strip() == lines[-1]
    assert kubectl("logs", "-n", namespace, "deploy/alloc", "--since=1h").stdout == text
    # A crash starts a second instance; --previous shows the first one's log.
    fault_client.post(
        cluster.layout.run, alloc.spec.node_name, "/faults/crash",
        {"namespace": namespace, "pod": name},
    )  # fmt: skip
    core = client.CoreV1Api(api)

    def restarted() -> bool:
        status = core.read_namespaced_pod(name, namespace).status.container_statuses[0]
        return status.restart_count == 1 and status.ready

    wait_for(restarted, timeout=30, what="the crashed container to restart")
    previous = kubectl("logs", "-n", namespace, name, "--previous").stdout
    assert previous.startswith(text) and "container crashed (fault injected)" in previous
    current = kubectl("logs", "-n", namespace, name).stdout
    assert current.startswith("Serving module") and "mib=64" not in current
    missing = kubectl("logs", "-n", namespace, name, "-c", "other")
    assert missing.returncode != 0 and "other" in missing.stderr


def test_kubectl_logs_follow_streams_new_lines(api: client.ApiClient, alloc: client.V1Pod) -> None:
    namespace, name = alloc.metadata.namespace, alloc.metadata.name
    follower = subprocess.Popen(
        [*KUBECTL, "logs", "-f", "-n", namespace, name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()
        assert first.startswith(b"Serving module")
        seen: list[bytes] = []
        for i in range(3):
            assert invoke(alloc, f"?mib=1&n={i}") == 200
            line = _readline(follower, timeout=10)
            seen.append(line)
        assert [ln.split(b" ")[1] for ln in seen] == [
            f"path=/?mib=1&n={i}".encode() for i in range(3)
        ]
        assert follower.poll() is None  # still following
    finally:
        follower.terminate()
        follower.wait(timeout=10)


def _readline(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """One line from a child's stdout within ``timeout`` seconds."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            return process.stdout.readline()
    raise AssertionError(f"no line from kubectl logs -f within {timeout} s")


def test_stats_summary_through_the_api_server(api: client.ApiClient, alloc: client.V1Pod) -> None:
    node, namespace = alloc.spec.node_name, alloc.metadata.namespace
    raw = client.CoreV1Api(api).connect_get_node_proxy_with_path(
        node, "stats/summary", _preload_content=False
    )
    summary = json.loads(raw.data)
    assert summary["node"]["nodeName"] == node
    assert summary["node"]["cpu"]["usageCoreNanoSeconds"] > 0
    assert summary["node"]["memory"]["workingSetBytes"] > 0
    [pod] = [p for p in summary["pods"] if p["podRef"]["namespace"] == namespace]
    assert pod["podRef"]["name"] == alloc.metadata.name
    assert pod["containers"][0]["name"] == "function"
    assert pod["containers"][0]["memory"]["workingSetBytes"] > 0


def test_kubectl_top_nodes_and_pods_print_figures(
    api: client.ApiClient, alloc: client.V1Pod, cluster
) -> None:  # type: ignore[no-untyped-def]
    nodes = manager.load_settings(cluster.layout).node_names()

    def top_nodes() -> dict[str, list[str]]:
        out = kubectl("top", "nodes", "--no-headers")
        rows = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines() if line}
        return rows if set(nodes) <= set(rows) else {}

    rows = wait_for(top_nodes, timeout=90, interval=2, what="kubectl top nodes")
    for node in nodes:
        cpu, cpu_percent, memory, memory_percent = rows[node]
        assert cpu.endswith("m") and memory.endswith("Mi"), rows[node]
        assert cpu_percent.endswith("%") and memory_percent.endswith("%")
        assert int(memory[:-2]) > 0
    namespace = alloc.metadata.namespace

    def top_pods() -> list[str]:
        out = kubectl("top", "pods", "-A", "--no-headers")
        return [line for line in out.stdout.splitlines() if line.startswith(namespace + " ")]

    [row] = wait_for(top_pods, timeout=90, interval=2, what="kubectl top pods -A")
    _, pod, cpu, memory = row.split()
    assert pod == alloc.metadata.name and cpu.endswith("m") and memory.endswith("Mi")
