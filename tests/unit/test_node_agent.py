"""The node agent's logic that needs no cluster: what it publishes about itself and its
Pods, in the shapes the operator reads, and how it turns a Pod into a function."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from wasmop.node.agent import NodeAgent, NodeSettings
from wasmop.node.daemon import container_usage
from wasmop.node.function_loader import module_bytes, pod_environment
from wasmop.node.ipam import AddressesExhausted, PodAddressAllocator
from wasmop.node.netns import NetworkError, NodeNetwork
from wasmop.node.pod_worker import PodWorker
from wasmop.node.podspec import ContainerPlan, ModuleSource, PodSpecError
from wasmop.node.stats import resource_metrics
from wasmop.node.wasm_container import FunctionContainer
from wasmop.operator.node_index import NodeIndex, runtime_status
from wasmop.operator.scaling import parse_resource_metrics
from wasmop.operator.spec import RuntimeSpec, WasmRuntime
from wasmop.runtime import Request, Runtime, start_server
from wasmop.runtime.workloads import ensure_built
from wasmop.wellknown import DAEMON_PORT, ENGINE_VERSION_LABEL, RUNTIME_LABEL, ZONE_LABEL


@pytest.fixture
def agent(tmp_path: Path) -> NodeAgent:
    """An agent that has not started: nothing is set up and nothing is contacted."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    settings = NodeSettings(name="wasm-3", pod_cidr="10.244.3.0/24", kubeconfig=kubeconfig)
    return NodeAgent(settings)


def pod(name: str = "fib-abc", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "bench", "uid": f"uid-{name}"},
        "spec": {"containers": [{"name": "function", "image": "img"}]},
        "status": status,
    }


def test_the_operator_reads_the_node_the_agent_registers(agent: NodeAgent) -> None:
    nodes = NodeIndex()
    body = {
        "metadata": {"name": agent.name, "labels": agent.node_labels()},
        "status": agent.node_status(),
    }
    assert nodes.apply("ADDED", body)
    [info] = nodes.nodes.values()
    assert info.ready
    assert info.address == agent.network.node_address
    assert info.daemon_port == DAEMON_PORT
    assert nodes.metrics_endpoints() == [
        (agent.name, f"https://{agent.network.node_address}:{DAEMON_PORT}")
    ]
    default = WasmRuntime(name="default", spec=RuntimeSpec.parse({}))
    assert nodes.serving(default) == [info]  # the runtime selects nodes by RUNTIME_LABEL
    status = runtime_status(default, nodes.serving(default), functions=0)
    assert status["readyText"] == "1/1"
    assert status["engineVersions"] == [agent.node_labels()[ENGINE_VERSION_LABEL]]
    assert status["nodes"][0]["zone"] == "zone-a"
    assert {RUNTIME_LABEL, ZONE_LABEL} <= set(agent.node_labels())


def test_node_index_reports_changes_a_runtime_status_shows(agent: NodeAgent) -> None:
    nodes = NodeIndex()
    body = {"metadata": {"name": "n", "labels": {"a": "1"}}, "status": agent.node_status()}
    assert nodes.apply("ADDED", body)
    assert not nodes.apply("MODIFIED", body)  # a heartbeat changes nothing shown
    not_ready = dict(body, status={"conditions": [{"type": "Ready", "status": "False"}]})
    assert nodes.apply("MODIFIED", not_ready)
    assert nodes.metrics_endpoints() == []  # only Ready nodes are scraped
    assert nodes.apply("DELETED", body)
    assert not nodes.apply("DELETED", body)


def test_the_autoscaler_reads_the_resource_metrics_the_node_serves(agent: NodeAgent) -> None:
    """The daemon's /metrics/resource text, parsed by the operator's scraper, gives each
    Pod's own CPU seconds and working set."""
    hello = ensure_built()["hello"]

    async def scenario(runtime: Runtime) -> None:
        for name in ("fib-a", "fib-b"):
            worker = PodWorker(agent.host, pod(name))
            function = runtime.function(hello.wasm_path, name=name)
            server = await start_server(function)
            worker.running = FunctionContainer(function, server, "id", "127.0.0.1", name)
            agent.workers[worker.uid] = worker
        running = agent.workers["uid-fib-a"].running
        assert isinstance(running, FunctionContainer)
        running.function.invoke_sync(Request())
        idle = PodWorker(agent.host, pod("starting"))  # no container yet: not reported
        agent.workers[idle.uid] = idle
        containers = container_usage(agent)
        parsed = parse_resource_metrics(resource_metrics(agent.node_usage(containers), containers))
        assert set(parsed) == {("bench", "fib-a"), ("bench", "fib-b")}
        for (_, name), (cpu, memory) in parsed.items():
            container = agent.workers[f"uid-{name}"].running
            assert isinstance(container, FunctionContainer)
            assert cpu == pytest.approx(container.figures().cpu_seconds, abs=1e-6)
            assert memory == container.function.memory_bytes()
            await container.stop(0)
        assert parsed[("bench", "fib-a")][0] > 0  # it ran a request

    with Runtime() as runtime:
        asyncio.run(scenario(runtime))


def test_an_adopted_running_pod_counts_the_restart_it_went_through(agent: NodeAgent) -> None:
    """After an agent restart the function it hosted did restart: say so, as a kubelet
    would, rather than report a container that never stopped."""
    running = {
        "containerStatuses": [
            {"restartCount": 2, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}
        ],
        "startTime": "2026-01-01T00:00:00Z",
    }
    worker = PodWorker(agent.host, pod(**running))
    assert worker.container.restart_count == 3
    assert worker.container.last_terminated is not None
    assert worker.container.last_terminated["reason"] == "NodeAgentRestarted"
    assert worker.start_time == "2026-01-01T00:00:00Z"
    fresh = PodWorker(agent.host, pod())
    assert (fresh.container.restart_count, fresh.container.last_terminated) == (0, None)


def test_grace_period_comes_from_the_deletion_then_the_spec(agent: NodeAgent) -> None:
    worker = PodWorker(agent.host, pod())
    assert worker.grace_seconds == 30.0  # the Kubernetes default
    worker.pod["spec"]["terminationGracePeriodSeconds"] = 5
    assert worker.grace_seconds == 5.0
    worker.pod["metadata"]["deletionGracePeriodSeconds"] = 1
    assert worker.grace_seconds == 1.0


def test_a_pod_marked_for_deletion_is_deleting_from_the_start(agent: NodeAgent) -> None:
    deleted = pod()
    deleted["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert PodWorker(agent.host, deleted).deleting.is_set()


def configmap(binary: dict[str, bytes] | None = None, text: dict[str, str] | None = None) -> dict:
    return {
        "binaryData": {k: base64.b64encode(v).decode() for k, v in (binary or {}).items()},
        "data": text or {},
    }


def test_module_bytes_from_the_key_the_pod_names_or_a_default() -> None:
    both = configmap({"module.wasm": b"plain", "other": b"x"}, {"module.wasm.gz": "text"})
    assert module_bytes(both, "ns", ModuleSource("cm", "other")) == b"x"
    assert module_bytes(both, "ns", ModuleSource("cm", None)) == b"plain"
    assert module_bytes(configmap(text={"only": "wat"}), "ns", ModuleSource("cm", None)) == b"wat"
    with pytest.raises(PodSpecError) as caught:
        module_bytes(configmap({"a": b"1", "b": b"2"}), "ns", ModuleSource("cm", None))
    assert caught.value.reason == "ModuleNotFound"
    assert caught.value.message == "ConfigMap ns/cm has no key module.wasm or module.wasm.gz"


def test_bad_pod_settings_are_a_reason_in_the_pods_status() -> None:
    plan = ContainerPlan(
        "function", "img", 8080, ModuleSource("cm", None), env={"WASMOP_TIMEOUT_MS": "soon"}
    )
    with pytest.raises(PodSpecError) as caught:
        pod_environment("p", plan)
    assert caught.value.reason == "InvalidSettings"
    assert "WASMOP_TIMEOUT_MS" in caught.value.message


def test_pod_addresses_are_stable_per_pod_and_reused() -> None:
    ipam = PodAddressAllocator(["10.244.3.10", "10.244.3.11"])
    assert ipam.allocate("a") == "10.244.3.10"
    assert ipam.allocate("a") == "10.244.3.10"  # asking again changes nothing
    assert ipam.allocate("b", preferred="10.244.3.10") == "10.244.3.11"  # taken: next free
    with pytest.raises(AddressesExhausted):
        ipam.allocate("c")
    ipam.release("a")
    assert ipam.allocate("c", preferred="10.244.3.10") == "10.244.3.10"
    ipam.release("unknown")  # releasing twice or never allocated is harmless


def test_a_released_address_is_the_last_to_be_handed_out_again() -> None:
    """The gateway may still route to a deleted Pod's address for a moment: a new Pod
    there, perhaps of another function, must not answer in its place."""
    addresses = [f"10.244.3.{i}" for i in range(10, 14)]
    ipam = PodAddressAllocator(addresses)
    assert [ipam.allocate(uid) for uid in "ab"] == addresses[:2]
    ipam.release("a")
    assert [ipam.allocate(uid) for uid in "cd"] == addresses[2:]
    ipam.release("c")
    assert ipam.allocate("e") == addresses[0]  # the oldest free one, not c's


def test_a_node_network_is_derived_from_its_pod_range() -> None:
    network = NodeNetwork.for_node("wasm-3", "10.244.3.0/24")
    assert network.index == 3
    assert network.namespace == "wasmop-wasm-3"
    assert (network.host_address, network.node_address) == ("10.244.0.13", "10.244.0.14")
    addresses = network.pod_addresses()
    assert (addresses[0], addresses[-1], len(addresses)) == ("10.244.3.10", "10.244.3.254", 245)
    assert len(network.host_veth) <= 15 and network.host_veth != network.node_veth  # IFNAMSIZ


@pytest.mark.parametrize(
    "cidr", ["not-a-network", "10.244.3.0/25", "10.245.3.0/24", "10.244.0.0/24", "10.244.64.0/24"]
)
def test_a_pod_range_outside_the_plan_is_refused(cidr: str) -> None:
    with pytest.raises(NetworkError):
        NodeNetwork.for_node("n", cidr)


def test_heartbeats_keep_their_interval_from_start_to_start() -> None:
    """A renewal that took 0.3 s leaves 0.2 s to the next (not another 0.5 s), and one
    slower than the interval is followed at once: the grace period budgets for the
    interval alone."""
    from wasmop.node.agent import beat_wait

    assert beat_wait(10.0, 10.3, 0.5) == pytest.approx(0.2)
    assert beat_wait(10.0, 10.0, 0.5) == pytest.approx(0.5)
    assert beat_wait(10.0, 11.2, 0.5) == 0.0
