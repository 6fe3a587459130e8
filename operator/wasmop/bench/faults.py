"""Fault injection for recovery experiments: thin wrappers over the cluster's own hooks.

* a Pod's container crashes: the node agent's fault API (``POST /faults/crash``);
* a Pod is deleted: the Kubernetes API;
* the operator is killed (kill -9): its Pod's container is killed through its node's
  fault API, and the node agent restarts it as a kubelet restarts a crashed container
  (its restart count goes up);
* a node agent is killed / restarted, the API server is restarted: the cluster
  supervisor (``manager.control``);
* a component crashes (SIGKILL, and its supervisor starts it again: etcd) or freezes
  (SIGSTOP for some seconds, then SIGCONT): the cluster supervisor too;
* a node's link is cut while its agent lives on (a network partition): ``manager``;
* a node's link gets delay or loss: the node agent's link emulation (``/faults/netem``).

Each call returns a :class:`FaultEvent` stamped with the client time of the injection,
which a recorder marker and the recovery analysis use as time zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasmop.bench.clock import now_ms
from wasmop.cluster import manager
from wasmop.cluster.layout import StateLayout
from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.node import fault_client

log = logging.getLogger(__name__)

OPERATOR_NAMESPACE = "wasm-operators"
OPERATOR_SELECTOR = "app.kubernetes.io/name=wasmop,app.kubernetes.io/component=operator"
API_SERVER_COMPONENT = "kube-apiserver"
ETCD_COMPONENT = "etcd"


class FaultError(RuntimeError):
    """The fault could not be injected; the message says why."""


@dataclass(frozen=True)
class FaultEvent:
    kind: str
    target: str
    t_ms: float
    detail: dict[str, Any] = field(default_factory=dict)


def _layout(layout: StateLayout | None) -> StateLayout:
    return layout or StateLayout.default()


def _run_dir(layout: StateLayout | None) -> Path:
    return _layout(layout).run


# --------------------------------------------------------------------------- pods


def crash_container(
    namespace: str, pod: str, node: str, layout: StateLayout | None = None
) -> FaultEvent:
    """Kill the Pod's container as if its process crashed (the agent restarts it)."""
    t = now_ms()
    fault_client.post(_run_dir(layout), node, "/faults/crash", {"namespace": namespace, "pod": pod})
    return FaultEvent("pod-crash", f"{namespace}/{pod}", t, {"node": node})


async def delete_pod(
    kube: Kube, namespace: str, pod: str, grace_seconds: int | None = None
) -> FaultEvent:
    """Delete a Pod through the API (its ReplicaSet replaces it)."""
    t = now_ms()
    params = {} if grace_seconds is None else {"gracePeriodSeconds": grace_seconds}
    try:
        await kube.delete(api_path("v1", "pods", namespace, pod), **params)
    except ApiError as exc:
        raise FaultError(f"cannot delete pod {namespace}/{pod}: {exc}") from exc
    return FaultEvent("pod-delete", f"{namespace}/{pod}", t, {"grace_seconds": grace_seconds})


# --------------------------------------------------------------------------- components


def _control(layout: StateLayout | None, op: str, **fields: Any) -> None:
    try:
        manager.control(_layout(layout), op, **fields)
    except manager.ClusterError as exc:
        raise FaultError(str(exc)) from exc


def kill_component(name: str, layout: StateLayout | None = None) -> FaultEvent:
    """SIGKILL a supervised component and keep it down until :func:`start_component`."""
    t = now_ms()
    _control(layout, "stop", name=name, signal="KILL")
    return FaultEvent("kill", name, t)


def start_component(name: str, layout: StateLayout | None = None) -> FaultEvent:
    t = now_ms()
    _control(layout, "start", name=name)
    return FaultEvent("start", name, t)


def restart_component(name: str, layout: StateLayout | None = None) -> FaultEvent:
    """Restart a component (graceful stop, then start) through the supervisor."""
    t = now_ms()
    _control(layout, "restart", name=name)
    return FaultEvent("restart", name, t)


def crash_component(name: str, layout: StateLayout | None = None) -> FaultEvent:
    """SIGKILL a component as if it crashed; its supervisor starts it again after its
    restart back-off, as a kubelet or systemd would."""
    t = now_ms()
    _control(layout, "kill", name=name)
    return FaultEvent("crash", name, t)


def freeze_component(name: str, seconds: float, layout: StateLayout | None = None) -> FaultEvent:
    """SIGSTOP a component now and SIGCONT it ``seconds`` later. The supervisor sends the
    SIGCONT, so the component thaws even if the caller goes away; ``detail["thaw_ms"]``
    is when it will."""
    if seconds <= 0:
        raise ValueError("a freeze lasts a positive number of seconds")
    t = now_ms()
    _control(layout, "freeze", name=name, seconds=seconds)
    return FaultEvent("freeze", name, t, {"seconds": seconds, "thaw_ms": t + seconds * 1000})


def kill_node(node: str, layout: StateLayout | None = None) -> FaultEvent:
    """Kill a wasm node agent: its Pods stop answering and the node goes NotReady."""
    event = kill_component(node, layout)
    return FaultEvent("node-kill", node, event.t_ms)


def start_node(node: str, layout: StateLayout | None = None) -> FaultEvent:
    event = start_component(node, layout)
    return FaultEvent("node-start", node, event.t_ms)


async def operator_pod(kube: Kube) -> dict[str, Any]:
    """The operator's running Pod (the embedded cluster runs one replica)."""
    try:
        listed = await kube.get(
            api_path("v1", "pods", OPERATOR_NAMESPACE), labelSelector=OPERATOR_SELECTOR
        )
    except ApiError as exc:
        raise FaultError(f"cannot list the operator's Pods: {exc}") from exc
    running = [
        p
        for p in listed["items"]
        if (p.get("status") or {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
    ]
    if not running:
        raise FaultError(f"no running operator Pod in {OPERATOR_NAMESPACE}")
    return running[0]


async def kill_operator(kube: Kube, layout: StateLayout | None = None) -> FaultEvent:
    """kill -9 of the operator's container; its node agent restarts it, as a kubelet
    restarts a crashed container of a Deployment's Pod (restart count + 1)."""
    pod = await operator_pod(kube)
    name, node = pod["metadata"]["name"], pod["spec"]["nodeName"]
    event = crash_container(OPERATOR_NAMESPACE, name, node, layout)
    return FaultEvent("operator-kill", event.target, event.t_ms, event.detail)


def restart_apiserver(layout: StateLayout | None = None) -> FaultEvent:
    event = restart_component(API_SERVER_COMPONENT, layout)
    return FaultEvent("apiserver-restart", API_SERVER_COMPONENT, event.t_ms)


def kill_etcd(layout: StateLayout | None = None) -> FaultEvent:
    """kill -9 of etcd; the supervisor starts it again from its data directory."""
    event = crash_component(ETCD_COMPONENT, layout)
    return FaultEvent("etcd-kill", ETCD_COMPONENT, event.t_ms)


def freeze_node(node: str, seconds: float, layout: StateLayout | None = None) -> FaultEvent:
    """The node agent stops (SIGSTOP) for ``seconds``: its Pods, heartbeat and probes with
    it, as a hung kubelet and runtime would."""
    event = freeze_component(node, seconds, layout)
    return FaultEvent("node-freeze", node, event.t_ms, event.detail)


# --------------------------------------------------------------------------- network


def _link(node: str, cut: bool, kind: str, layout: StateLayout | None) -> FaultEvent:
    t = now_ms()
    try:
        manager.partition_node(_layout(layout), node, cut=cut)
    except manager.ClusterError as exc:
        raise FaultError(str(exc)) from exc
    return FaultEvent(kind, node, t)


def partition_node(node: str, layout: StateLayout | None = None) -> FaultEvent:
    """Cut the node's link: nothing reaches its Pods or its daemon, while the agent keeps
    running and talking to the API server (it does so from the host's namespace)."""
    return _link(node, True, "node-partition", layout)


def heal_node(node: str, layout: StateLayout | None = None) -> FaultEvent:
    return _link(node, False, "node-heal", layout)


def set_link(
    node: str,
    delay_ms: float = 0.0,
    loss_percent: float = 0.0,
    layout: StateLayout | None = None,
) -> FaultEvent:
    """Delay and loss on the node's link (both 0 clears); the agent does the emulation."""
    if delay_ms < 0 or not 0 <= loss_percent <= 100:
        raise ValueError("delay_ms must be >= 0 and loss_percent within 0..100")
    t = now_ms()
    reply = fault_client.post(
        _run_dir(layout), node, "/faults/netem", {"delayMs": delay_ms, "lossPercent": loss_percent}
    )
    return FaultEvent(
        "link", node, t, {"delay_ms": delay_ms, "loss_percent": loss_percent, **reply}
    )


def clear_link(node: str, layout: StateLayout | None = None) -> FaultEvent:
    return set_link(node, 0.0, 0.0, layout)
