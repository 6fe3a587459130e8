"""The gateway's and a node agent's watches under fire (issue 12): a garbled line, a
watch task killed or failing inside, a stale watch. Each runs the component's own watch
code against recorded API server exchanges replayed over real HTTP (kube_replay), and
ends with the component recovered or saying it is unhealthy, never silently stuck."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kube_replay import (
    Exchange,
    ReplayServer,
    items_of,
    kubeconfig,
    lines_of,
    list_version,
    recording,
    version_of,
    watch,
)
from prometheus_client import generate_latest
from wasmop.gateway.endpoints import EndpointTable
from wasmop.gateway.server import Gateway, GatewaySettings
from wasmop.kube import Kube, KubeConfig

SERVICES = "/api/v1/services"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
PODS = "/api/v1/pods"
QUICK = (0.01,)


def listed_uids(name: str) -> set[str]:
    return {item["metadata"]["uid"] for item in items_of(name)}


def quiet(path: str, version: str) -> Exchange:
    return watch(path, version, [], hold=True)


async def until(predicate: Callable[[], Any], what: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# --- the gateway ------------------------------------------------------------------------

# The recorded EndpointSlice of Service replay/hello: added not ready, then made ready.
SLICE_EVENTS = lines_of("endpointslices_watch")
SLICE = json.loads(SLICE_EVENTS[1])["object"]
SERVICE = (
    SLICE["metadata"]["namespace"],
    SLICE["metadata"]["labels"]["kubernetes.io/service-name"],
)
ENDPOINT = SLICE["endpoints"][0]["addresses"][0]


def services_synced() -> list[Exchange]:
    return [
        Exchange.recorded("services_list"),
        quiet(SERVICES, list_version("services_list")),
    ]


def slices_listed() -> Exchange:
    return Exchange.recorded("endpointslices_list")


def slice_listing_with_the_endpoint() -> Exchange:
    """A relist after the recorded watch: the slice as it ended up."""
    listing = copy.deepcopy(recording()["endpointslices_list"]["response"]["body"])
    listing["items"] = [SLICE]
    listing["metadata"]["resourceVersion"] = SLICE["metadata"]["resourceVersion"]
    return Exchange(SLICES, body=listing)


@contextlib.asynccontextmanager
async def gateway(
    script: list[Exchange], backoff_s: tuple[float, ...] = QUICK
) -> AsyncIterator[tuple[Gateway, ReplayServer]]:
    async with (
        ReplayServer(script) as server,
        Kube(KubeConfig(server=server.url)) as kube,
    ):
        gw = Gateway(kube, GatewaySettings())
        gw.tasks.backoff_s = backoff_s
        await gw.start()
        try:
            yield gw, server
        finally:
            await gw.close()
        assert server.mismatches == []


def routable(gw: Gateway) -> bool:
    entry = gw.table.lookup(*SERVICE)
    return entry is not None and [e.address for e in entry.ready()] == [ENDPOINT]


async def healthz(gw: Gateway) -> tuple[int, str]:
    response = await gw.healthz(None)  # type: ignore[arg-type]
    return response.status, response.text or ""


async def test_gateway_keeps_routing_after_a_garbled_watch_line() -> None:
    """The issue-12 reproduction for the gateway: one garbled line in the EndpointSlice
    watch used to end it, leaving /healthz at 200 with routes that never changed again."""
    version = list_version("endpointslices_list")
    script = [
        *services_synced(),
        slices_listed(),
        watch(SLICES, version, ['{"type":"ADDED","object":{"kind":"EndpointSl', *SLICE_EVENTS]),
        watch(SLICES, version, SLICE_EVENTS),
        quiet(SLICES, SLICE["metadata"]["resourceVersion"]),
    ]
    async with gateway(script) as (gw, server):
        await until(lambda: routable(gw), "the endpoint to become routable")
        assert await healthz(gw) == (200, "ok")
        await server.wait_for_requests(len(script))


@pytest.mark.parametrize("kill", ["cancel", "raise"])
async def test_gateway_restarts_a_killed_endpoint_watch_and_is_unhealthy_meanwhile(
    kill: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch task cancelled from outside, or failing inside while it applies an
    event: /healthz fails while it is down, it is restarted, relists and routes again."""
    version = list_version("endpointslices_list")
    events = SLICE_EVENTS[:1] if kill == "cancel" else SLICE_EVENTS
    script = [
        *services_synced(),
        slices_listed(),
        watch(SLICES, version, events, hold=True),
        slice_listing_with_the_endpoint(),
        quiet(SLICES, SLICE["metadata"]["resourceVersion"]),
    ]
    if kill == "raise":  # the second event (the slice turning ready) fails to apply
        apply = EndpointTable.apply_slice
        calls = 0

        def apply_once_then_fail(table: EndpointTable, *args: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise KeyError("metadata")
            return apply(table, *args)

        monkeypatch.setattr(EndpointTable, "apply_slice", apply_once_then_fail)
    async with gateway(script, backoff_s=(0.3,)) as (gw, _):
        state = gw.tasks.tasks["EndpointSlice watch"]
        await until(lambda: gw.table.lookup(*SERVICE) is not None, "the slice to be added")
        if kill == "cancel":
            assert state.attempt is not None
            state.attempt.cancel()
        await until(lambda: state.restarts == 1, "the watch to be restarted")
        status, text = await healthz(gw)
        assert status == 503 and "EndpointSlice watch is down (restarts: 1)" in text
        await until(lambda: routable(gw), "the relisted endpoint to be routable")
        assert await healthz(gw) == (200, "ok")
        metrics = generate_latest(gw.metrics.registry).decode()
        assert 'wasmop_supervised_task_restarts_total{task="EndpointSlice watch"} 1.0' in metrics
        assert 'wasmop_supervised_tasks_working{task="EndpointSlice watch"} 1.0' in metrics


async def test_gateway_healthz_fails_when_its_endpoint_watch_is_stale() -> None:
    version = list_version("endpointslices_list")
    script = [*services_synced(), slices_listed(), quiet(SLICES, version)]
    async with gateway(script) as (gw, _):
        await until(lambda: gw.tasks.problems() == [], "the watches to list")
        gw.tasks.tasks["EndpointSlice watch"].stale_after_s = 0.1
        await asyncio.sleep(0.2)
        status, text = await healthz(gw)
        assert status == 503 and "EndpointSlice watch has made no progress" in text


# --- a node agent -----------------------------------------------------------------------

NODE_PODS = recording()["pods_list"]["request"]["query"]
NODE = NODE_PODS["fieldSelector"].split("=", 1)[1]
POD_EVENTS = lines_of("pods_watch")


def pods_watch(version: str, lines: list[str], **kw: Any) -> Exchange:
    return watch(PODS, version, lines, NODE_PODS, **kw)


def pod_names(events: list[str]) -> dict[str, str]:
    """uid -> name of the Pods in these watch lines."""
    objects = [json.loads(line)["object"] for line in events]
    return {o["metadata"]["uid"]: o["metadata"]["name"] for o in objects if "uid" in o["metadata"]}


@contextlib.asynccontextmanager
async def node_agent(
    script: list[Exchange], tmp_path: Path, name: str = NODE
) -> AsyncIterator[tuple[Any, ReplayServer]]:
    from wasmop.node.agent import NodeAgent, NodeSettings

    async with ReplayServer(script) as server:
        config = kubeconfig(tmp_path / "kubeconfig", server.url, {"token": "node"}, {})
        agent = NodeAgent(NodeSettings(name=name, pod_cidr="10.244.63.0/24", kubeconfig=config))
        agent.tasks.backoff_s = QUICK
        try:
            yield agent, server
        finally:
            await agent.tasks.stop()
            await agent.shutdown_pods()
            await agent.kube.close()
            # The heartbeat builds the node's network namespace when it is missing. Left
            # behind, its route to the pod range makes the next agent here fail to build
            # its own (the Unknown-Node test did, whenever it ran after the outage test).
            await asyncio.to_thread(agent.network.teardown)
        assert server.mismatches == []


def ready_condition(agent: Any) -> dict[str, Any]:
    return next(c for c in agent.node_status()["conditions"] if c["type"] == "Ready")


async def test_node_agent_keeps_managing_pods_after_a_garbled_watch_line(tmp_path: Path) -> None:
    """The issue-12 reproduction for a node agent: a garbled line used to end its Pod
    watch while the Node stayed Ready. Now the Pods after the bad line are adopted or let
    go as usual, and the Node is Ready because its watch works."""
    version = list_version("pods_list")
    script = [
        Exchange.recorded("pods_list"),
        pods_watch(version, ["\x1b[garbled", *POD_EVENTS]),
        pods_watch(version, POD_EVENTS),
        pods_watch(version_of(POD_EVENTS[-1]), [], hold=True),
    ]
    listed = listed_uids("pods_list")
    names = pod_names(POD_EVENTS)
    deleted = {json.loads(e)["object"]["metadata"]["uid"] for e in POD_EVENTS if '"DELETED"' in e}
    added = set(names) - listed
    async with node_agent(script, tmp_path) as (agent, server):
        agent.start_pod_watch()
        await until(lambda: added <= set(agent.workers), "the Pod added after the bad line")
        await until(
            lambda: all(w.deleting.is_set() for u, w in agent.workers.items() if u in deleted),
            "the deleted Pod to be let go",
        )
        await server.wait_for_requests(len(script))
        assert agent.tasks.problems() == []
        assert ready_condition(agent)["status"] == "True"


async def test_node_is_not_ready_while_its_pod_watch_is_down(tmp_path: Path) -> None:
    """A killed Pod watch: the Node's Ready condition turns False and says why, the watch
    is restarted, relists, and the Node is Ready again."""
    version = list_version("pods_list")
    script = [
        Exchange.recorded("pods_list"),
        pods_watch(version, [], hold=True),
        Exchange.recorded("pods_relist"),
        pods_watch(list_version("pods_relist"), [], hold=True),
    ]
    async with node_agent(script, tmp_path) as (agent, server):
        state = agent.start_pod_watch()
        await server.wait_for_requests(2)
        await until(lambda: agent.tasks.problems() == [], "the Pod watch to list")
        agent.tasks.backoff_s = (0.3,)
        assert state.attempt is not None
        state.attempt.cancel()
        await until(lambda: state.restarts == 1, "the watch to be restarted")
        condition = ready_condition(agent)
        assert condition["status"] == "False"
        assert condition["reason"] == "KubeletNotReady"
        assert condition["message"].startswith("Pod watch is down (restarts: 1)")
        not_ready_since = condition["lastTransitionTime"]
        await until(lambda: agent.tasks.problems() == [], "the Pod watch to relist")
        condition = ready_condition(agent)
        assert condition["status"] == "True"
        assert condition["lastTransitionTime"] >= not_ready_since
        # The relist told the agent what went away while its watch was down.
        gone = listed_uids("pods_list") - listed_uids("pods_relist")
        assert gone and all(agent.workers[u].deleting.is_set() for u in gone if u in agent.workers)


async def test_a_pod_status_lost_to_an_api_outage_is_written_again(tmp_path: Path) -> None:
    """A status write while the API server is away used to raise out of the probe loop
    (which then died) and was never retried. Now it is kept and the heartbeat writes it
    once the server answers again."""
    from wasmop.node.pod_worker import PodWorker

    [pod] = [p for p in items_of("pods_list") if p["metadata"]["name"] == "pod-a"]
    meta = pod["metadata"]
    status_path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
    lease = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"
    script = [
        Exchange(lease, method="PATCH", body={}),
        Exchange(f"/api/v1/nodes/{NODE}/status", method="PATCH", body={}),
        Exchange(status_path, method="PATCH", body=pod),
    ]
    async with node_agent(script, tmp_path) as (agent, server):
        worker = PodWorker(agent.host, pod)
        agent.workers[worker.uid] = worker
        worker.container.state = "running"
        await server.go_away()
        await worker.publish()
        assert worker.publish_failed
        await server.come_back()
        agent.tasks.start("heartbeat", agent._heartbeat)
        await until(lambda: not worker.publish_failed, "the status to be written again")
        [write] = [s for s in server.seen if s.path == status_path]
        assert write.method == "PATCH"


async def test_a_node_the_controller_marked_unknown_is_reported_ready_at_once(
    tmp_path: Path,
) -> None:
    """After an API server outage longer than the node monitor grace period, the node
    lifecycle controller marks the Node Unknown (and taints it unreachable, which evicts
    its Pods within seconds). The heartbeat compares the Node on the server with what the
    agent last said and posts its own Ready condition at once, not at the next periodic
    report, 30 s later. The Node is the one the controller really marked (recorded)."""
    [node] = items_of("node_unknown_list")
    name = node["metadata"]["name"]
    [ready] = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("Unknown", "NodeStatusUnknown")
    lease = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
    status = f"/api/v1/nodes/{name}/status"
    script = [
        Exchange(lease, method="PATCH", body={}),
        Exchange(f"/api/v1/nodes/{name}", body=node),
        Exchange(status, method="PATCH", body={}),
    ]
    async with node_agent(script, tmp_path, name=name) as (agent, server):
        agent.node_status()  # as after the agent's last report: Ready
        agent.tasks.start("heartbeat", agent._heartbeat)
        await until(lambda: any(s.path == status for s in server.seen), "a status report")
        [report] = [s for s in server.seen if s.path == status]
        conditions = json.loads(report.body)["status"]["conditions"]
        [posted] = [c for c in conditions if c["type"] == "Ready"]
        assert (posted["status"], posted["reason"]) == ("True", "KubeletReady")
