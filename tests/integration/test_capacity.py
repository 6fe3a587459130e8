"""A function the cluster cannot place says why: on a full cluster (nodes with few Pod
slots, ``cluster up --max-pods``), the scheduler's message is the function's reason, in
its conditions, its printer columns and a Warning Event; a crashed replica says how it
last ended."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from support import module_configmap, wait_for
from wasmop.cluster import manager
from wasmop.cluster.layout import repo_root
from wasmop.node import fault_client
from wasmop.wellknown import API_VERSION, FUNCTION_KIND, FUNCTION_LABEL, GROUP, VERSION
from wasmop.wellknown import FUNCTION_PLURAL as PLURAL

pytestmark = pytest.mark.integration

SLOTS = 4  # Pods per node while the cluster is small


@pytest.fixture
def small_cluster(cluster) -> Iterator[int]:  # type: ignore[no-untyped-def]
    """The session's cluster restarted with SLOTS Pods per node (state kept), and
    restarted with its own setting afterwards."""
    before = manager.load_settings(cluster.layout).max_pods
    manager.down(cluster.layout)
    try:
        manager.up(cluster.layout, timeout=180, max_pods=SLOTS)
        yield SLOTS
    finally:
        manager.down(cluster.layout)
        manager.up(cluster.layout, timeout=180, max_pods=before)


def function(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": FUNCTION_KIND,
        "metadata": {"name": name},
        "spec": {"module": {"configMapRef": {"name": "wasm-hello"}}, "replicas": replicas},
    }


def placed_pods(core: client.CoreV1Api, nodes: list[str]) -> tuple[int] | None:
    """How many live Pods are bound to ``nodes``, once none is terminating (else None)."""
    pods = core.list_pod_for_all_namespaces().items
    if any(p.metadata.deletion_timestamp is not None for p in pods):
        return None
    return (
        sum(
            1
            for p in pods
            if p.spec.node_name in nodes and p.status.phase in ("Pending", "Running")
        ),
    )


def kubectl(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "wasmop", "kubectl", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_function_the_full_cluster_cannot_place_says_why(
    api: client.ApiClient, namespace: str, cluster, small_cluster: int
) -> None:  # type: ignore[no-untyped-def]
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    wasm_nodes = manager.load_settings(cluster.layout).node_names()
    module_configmap(
        core, namespace, "wasm-hello", repo_root() / "functions" / "build" / "hello.wasm"
    )
    for node in core.list_node().items:
        assert node.status.allocatable["pods"] == str(small_cluster)

    def status(name: str) -> dict[str, Any]:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return body.get("status") or {}

    # Pods other tests left behind take slots too: wait until none is being deleted, then
    # fill exactly what is left.
    slots = (
        small_cluster * len(wasm_nodes)
        - wait_for(
            lambda: placed_pods(core, wasm_nodes),
            timeout=90,
            what="other tests' Pods to finish deleting",
        )[0]
    )
    assert slots > 1
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, function("filler", slots)
    )
    wait_for(lambda: status("filler").get("phase") == "Ready", timeout=120, what="the filler Ready")
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, function("extra", 1))

    def unschedulable() -> dict[str, Any] | None:
        conditions = {c["type"]: c for c in status("extra").get("conditions") or []}
        available = conditions.get("Available") or {}
        return conditions if available.get("reason") == "Unschedulable" else None

    conditions = wait_for(unschedulable, timeout=60, what="extra's reason Unschedulable")
    assert status("extra")["phase"] == "Deploying"
    message = conditions["Available"]["message"]
    assert message.startswith("0/1 replicas ready; Pod extra-")
    # Every node counts, the system node too (its taint keeps function Pods off it).
    assert f"0/{len(core.list_node().items)} nodes are available" in message
    assert f"{len(wasm_nodes)} Too many pods" in message
    assert conditions["Progressing"]["reason"] == "Unschedulable"

    def warning() -> list[client.CoreV1Event]:
        return [
            e
            for e in core.list_namespaced_event(
                namespace,
                field_selector="involvedObject.kind=WasmFunction,involvedObject.name=extra",
            ).items
            if e.type == "Warning" and e.reason == "Unschedulable"
        ]

    [event] = wait_for(warning, timeout=10, what="a Warning Event on the function")
    assert "Too many pods" in event.message
    row = kubectl("get", "wf", "-n", namespace, "extra", "--no-headers").split()
    assert row[1:4] == ["Deploying", "0/1", "Unschedulable"]
    assert "Too many pods" in kubectl("describe", "wf", "-n", namespace, "extra")
    # A slot frees: the function is placed and its reason is gone.
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "filler", {"spec": {"replicas": slots - 1}}
    )
    wait_for(lambda: status("extra").get("phase") == "Ready", timeout=90, what="extra Ready")
    available = next(c for c in status("extra")["conditions"] if c["type"] == "Available")
    assert available["reason"] == "AllReplicasReady"


def test_a_crashed_replica_is_the_functions_reason_until_it_serves_again(
    api: client.ApiClient, namespace: str, cluster
) -> None:  # type: ignore[no-untyped-def]
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    module_configmap(
        core, namespace, "wasm-hello", repo_root() / "functions" / "build" / "hello.wasm"
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, function("f", 1))

    def phase() -> str:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "f")
        return (body.get("status") or {}).get("phase", "")

    wait_for(lambda: phase() == "Ready", timeout=60, what="f Ready")
    [pod] = core.list_namespaced_pod(namespace, label_selector=f"{FUNCTION_LABEL}=f").items
    fault_client.post(
        cluster.layout.run, pod.spec.node_name, "/faults/crash",
        {"namespace": namespace, "pod": pod.metadata.name},
    )  # fmt: skip

    def warning() -> list[client.CoreV1Event]:
        return [
            e
            for e in core.list_namespaced_event(
                namespace, field_selector="involvedObject.kind=WasmFunction,involvedObject.name=f"
            ).items
            if e.type == "Warning" and e.reason == "CrashLoopBackOff"
        ]

    [event] = wait_for(warning, timeout=30, what="a CrashLoopBackOff Warning on the function")
    assert event.message == (
        f"Pod {pod.metadata.name}: last exit: Error (exit code 137):"
        " container crashed (fault injected)"
    )
    wait_for(lambda: phase() == "Ready", timeout=60, what="f Ready again")
