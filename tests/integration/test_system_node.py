"""The operator and gateway as Pods of the system node (host processes of the project's
own image, under cgroup limits), installed from the real cluster's manifests."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from support import kill_operator, operator_pod, wait_for
from wasmop.cluster import manager
from wasmop.cluster.layout import repo_root

pytestmark = pytest.mark.integration

NAMESPACE = "wasm-operators"
OPERATOR = "app.kubernetes.io/component=operator"
GATEWAY = "app.kubernetes.io/component=gateway"
KUBECTL = [sys.executable, "-m", "wasmop", "kubectl"]


def kubectl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KUBECTL, *args], capture_output=True, text=True, timeout=timeout)


def running_pod(core: client.CoreV1Api, selector: str) -> client.V1Pod | None:
    for pod in core.list_namespaced_pod(NAMESPACE, label_selector=selector).items:
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready and pod.metadata.deletion_timestamp is None:
            return pod
    return None


def wait_available(apps: client.AppsV1Api, name: str, timeout: float = 150) -> None:
    def available() -> bool:
        d = apps.read_namespaced_deployment(name, NAMESPACE)
        return (
            d.status.observed_generation == d.metadata.generation
            and (d.status.available_replicas or 0) >= 1
            and (d.status.updated_replicas or 0) >= 1
            and (d.status.replicas or 0) == (d.status.updated_replicas or 0)
        )

    wait_for(available, timeout=timeout, interval=0.5, what=f"{name} available")


def test_setup_script_lists_the_operator_and_gateway_running_and_the_crds(cluster) -> None:  # type: ignore[no-untyped-def]
    """The report's Appendix A on the embedded cluster: the same script as on any
    cluster, whose checks show both Pods Running and both CRDs."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    done = subprocess.run(
        [str(repo_root() / "scripts" / "setup_operators.sh")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pods = [line.split() for line in done.stdout.splitlines() if line.startswith("wasmop-")]
    assert {p[0].rsplit("-", 2)[0] for p in pods} == {"wasmop-operator", "wasmop-gateway"}
    assert all(p[1] == "1/1" and p[2] == "Running" for p in pods), pods
    checks = done.stdout.split("kubectl get crds | grep wasm", 1)[1].splitlines()[1:]
    crds = {line.split()[0] for line in checks if line.strip()}
    assert crds == {
        "wasmfunctions.operators.bits-dissertation.io",
        "wasmruntimes.operators.bits-dissertation.io",
    }


def test_operator_and_gateway_are_host_processes_of_the_system_node(
    api: client.ApiClient, cluster
) -> None:  # type: ignore[no-untyped-def]
    core = client.CoreV1Api(api)
    system = manager.load_settings(cluster.layout).system_node_name
    for selector in (OPERATOR, GATEWAY):
        pod = running_pod(core, selector)
        assert pod is not None, selector
        assert pod.spec.node_name == system
        [status] = pod.status.container_statuses
        assert status.container_id.startswith("hostprocess://")
        assert status.image.startswith("wasmop/operator:")
    node = core.read_node(system)
    assert node.spec.taints[0].key == "wasm.bits-dissertation.io/host-process"
    # The gateway is where the harness expects it, on loopback only.
    with urllib.request.urlopen("http://127.0.0.1:8000/healthz", timeout=5) as response:
        assert response.status == 200
    logs = kubectl("logs", "-n", NAMESPACE, "deploy/wasmop-operator")
    assert logs.returncode == 0, logs.stderr
    assert "Started host process wasmop/operator" in logs.stdout  # the node's line
    assert "kopf" in logs.stdout  # and the operator's own


def test_the_system_node_runs_only_the_projects_own_images(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="stranger", namespace=NAMESPACE),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="web", image="nginx:1.27")],
            restart_policy="Never",
        ),
    )
    core.create_namespaced_pod(NAMESPACE, pod)
    try:

        def refused() -> Any:
            status = core.read_namespaced_pod("stranger", NAMESPACE).status
            waiting = (status.container_statuses or [None])[0]
            state = waiting.state.waiting if waiting else None
            return state if state is not None and state.reason == "ErrImageNeverPull" else None

        state = wait_for(refused, timeout=30, what="the stranger refused")
        assert "not allowed on host-process nodes" in state.message
    finally:
        core.delete_namespaced_pod("stranger", NAMESPACE, grace_period_seconds=0)


def test_operator_kill_is_a_container_restart_of_its_pod(api: client.ApiClient, cluster) -> None:  # type: ignore[no-untyped-def]
    core = client.CoreV1Api(api)
    pod = kill_operator(core, cluster.layout)
    before = pod.status.container_statuses[0].restart_count

    def restarted() -> client.V1ContainerStatus | None:
        status = core.read_namespaced_pod(pod.metadata.name, NAMESPACE).status
        [container] = status.container_statuses
        return container if container.restart_count == before + 1 and container.ready else None

    container = wait_for(restarted, timeout=60, what="the operator container restarted, ready")
    assert container.last_state.terminated.exit_code == 137
    previous = kubectl("logs", "-n", NAMESPACE, pod.metadata.name, "--previous")
    assert previous.returncode == 0 and previous.stdout


def test_a_deleted_operator_pod_is_replaced_by_its_replicaset(api: client.ApiClient) -> None:
    """``kubectl delete pod`` on the operator: its ReplicaSet makes another, which the
    system node starts and which serves again on loopback."""
    core = client.CoreV1Api(api)
    old = operator_pod(core)
    deleted = kubectl("delete", "pod", "-n", NAMESPACE, old.metadata.name, "--wait=false")
    assert deleted.returncode == 0, deleted.stderr

    def replaced() -> client.V1Pod | None:
        pod = running_pod(core, OPERATOR)
        return pod if pod is not None and pod.metadata.name != old.metadata.name else None

    new = wait_for(replaced, timeout=120, interval=0.5, what="a new operator Pod, ready")
    assert new.metadata.owner_references[0].name == old.metadata.owner_references[0].name
    assert new.status.container_statuses[0].restart_count == 0
    with urllib.request.urlopen("http://127.0.0.1:8081/readyz", timeout=5) as response:
        assert response.status == 200


def cadvisor(api: client.ApiClient, node: str) -> dict[str, float]:
    raw = client.CoreV1Api(api).connect_get_node_proxy_with_path(
        node, "metrics/cadvisor", _preload_content=False
    )
    values = {}
    for line in raw.data.decode().splitlines():
        if line.startswith("#") or 'namespace="wasm-operators"' not in line:
            continue
        name_labels, value, _ = line.rsplit(" ", 2)
        values[name_labels] = float(value)
    return values


def test_operator_cpu_limit_is_a_cfs_quota_and_throttles(api: client.ApiClient, cluster) -> None:  # type: ignore[no-untyped-def]
    pod = operator_pod(client.CoreV1Api(api))
    figures = cadvisor(api, pod.spec.node_name)
    mine = {k: v for k, v in figures.items() if f'pod="{pod.metadata.name}"' in k}

    def value(metric: str) -> float:
        return next(v for k, v in mine.items() if k.startswith(metric + "{"))

    # 500m: 50 ms of every 100 ms period. Python's start alone runs past it.
    assert value("container_cpu_cfs_periods_total") > 0
    assert (
        0
        < value("container_cpu_cfs_throttled_periods_total")
        <= value("container_cpu_cfs_periods_total")
    )
    assert value("container_cpu_cfs_throttled_seconds_total") > 0
    assert value("container_spec_memory_limit_bytes") == 256 * 2**20
    quota = next(Path("/sys/fs/cgroup/cpu").rglob(f"{pod.metadata.uid}-operator/cpu.cfs_quota_us"))
    assert quota.read_text().strip() == "50000"


def test_operator_memory_limit_is_enforced_oom_killed_and_restarted(api: client.ApiClient) -> None:
    """Its limit lowered below what the operator needs: the kernel kills it at the limit,
    the Pod says OOMKilled and restarts it; the limit restored, it serves again."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    lowered = kubectl(
        "set", "resources", "-n", NAMESPACE, "deploy/wasmop-operator",
        "--limits=memory=24Mi", "--requests=memory=24Mi",
    )  # fmt: skip
    assert lowered.returncode == 0, lowered.stderr
    try:

        def oom_killed() -> client.V1ContainerStatus | None:
            for pod in core.list_namespaced_pod(NAMESPACE, label_selector=OPERATOR).items:
                limits = pod.spec.containers[0].resources.limits or {}
                if limits.get("memory") != "24Mi" or not pod.status.container_statuses:
                    continue
                [status] = pod.status.container_statuses
                last = status.last_state.terminated if status.last_state else None
                if last is not None and last.reason == "OOMKilled" and status.restart_count >= 1:
                    return status
            return None

        status = wait_for(oom_killed, timeout=120, interval=0.5, what="OOMKilled and restarted")
        assert status.last_state.terminated.exit_code == 137
    finally:
        restored = kubectl(
            "set", "resources", "-n", NAMESPACE, "deploy/wasmop-operator",
            "--limits=memory=256Mi", "--requests=memory=128Mi",
        )  # fmt: skip
        assert restored.returncode == 0, restored.stderr
        wait_available(apps, "wasmop-operator")
