"""Where a node kill's recovery time goes: the last Lease renewal, NotReady, the
unreachable taint, the eviction, the replacement Pod created, scheduled and Ready, its
endpoint, the Deployment whole again, and what the client saw.

Run against a running embedded cluster, under the lock::

    wasmop-cluster-lock sh -c 'wasmop cluster up && python scripts/node_kill_phases.py'

One function ``victim`` (hello, 2 replicas on two nodes, the recovery experiment's 2 s
toleration) is probed at 20 Hz through the gateway while the node of one of its Pods is
killed; the node is started again once a replacement is Ready, and the replicas are
spread over both nodes again before the next trial. Every Lease, Node, Pod,
EndpointSlice and Deployment event is stamped with the client's clock on arrival. Prints
one line per trial, each phase in ms from the kill, and writes them to a CSV.
docs/architecture.md ("A node that dies") has the figures.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from typing import Any

from wasmop.bench import deploy, faults, probe, watch
from wasmop.bench.clock import now_ms
from wasmop.bench.experiments.recovery import client_recovery
from wasmop.bench.experiments.steps import Workspace, deploy_one, wait_serving
from wasmop.bench.session import BenchSession
from wasmop.kube.client import api_path

UNREACHABLE = "node.kubernetes.io/unreachable"
VICTIM = "victim"
Row = dict[str, Any]


class EventLog:
    """Client-stamped events of several watches."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    async def follow(self, session: BenchSession, kind: str, path: str) -> None:
        async for event in session.kube.list_and_watch(path):
            if event.type != "SYNCED":
                self.rows.append(
                    {"t": now_ms(), "kind": kind, "type": event.type, "obj": event.object}
                )


def name_of(row: Row) -> str:
    return row["obj"]["metadata"]["name"]


def node_ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def tainted(obj: dict[str, Any]) -> bool:
    taints = (obj.get("spec") or {}).get("taints") or []
    return any(t.get("key") == UNREACHABLE and t.get("effect") == "NoExecute" for t in taints)


def first(rows: list[Row], after: float, kind: str, test: Callable[[Row], Any]) -> float | None:
    return next((r["t"] for r in rows if r["t"] >= after and r["kind"] == kind and test(r)), None)


def phases(log: EventLog, kill: float, node: str, old: set[str], probes: Any) -> Row:
    """Each phase's time from the kill (ms); None for one that did not happen."""
    rows = sorted(log.rows, key=lambda r: r["t"])
    renewals = [
        r["t"] for r in rows if r["kind"] == "Lease" and name_of(r) == node and r["t"] < kill
    ]
    new_pod = lambda r: name_of(r) not in old  # noqa: E731
    marks = {
        "not_ready": first(
            rows, kill, "Node", lambda r: name_of(r) == node and not node_ready(r["obj"])
        ),
        "tainted": first(rows, kill, "Node", lambda r: name_of(r) == node and tainted(r["obj"])),
        "evicted": first(
            rows, kill, "Pod",
            lambda r: name_of(r) in old and r["obj"]["metadata"].get("deletionTimestamp"),
        ),
        "created": first(rows, kill, "Pod", new_pod),
        "scheduled": first(
            rows, kill, "Pod", lambda r: new_pod(r) and (r["obj"].get("spec") or {}).get("nodeName")
        ),
        "ready": first(rows, kill, "Pod", lambda r: new_pod(r) and watch.pod_ready(r["obj"])),
    }  # fmt: skip
    ready = marks["ready"]
    if ready is not None:
        marks["endpoint"] = first(rows, ready, "EndpointSlice", lambda r: True)
        marks["deployment_ready"] = first(
            rows, ready, "Deployment",
            lambda r: ((r["obj"].get("status") or {}).get("readyReplicas") or 0) >= 2,
        )  # fmt: skip
    out: Row = {"node": node, "last_renew": (renewals[-1] - kill) if renewals else None}
    out.update({k: None if t is None else t - kill for k, t in marks.items()})
    client = client_recovery(probes, kill)
    out["client_failed"] = client.failed_requests
    out["client_recovered"] = client.fault_to_recovered_ms
    return out


def ready_pods(rec: watch.Recorder) -> list[dict[str, Any]]:
    return [p for p in rec.objects("Pod") if watch.pod_ready(p)]


def wait_until(test: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not test():
        if time.monotonic() > deadline:
            raise TimeoutError("the cluster did not get there in time")
        time.sleep(0.2)


def trial(session: BenchSession, ns: str, rec: watch.Recorder, log: EventLog) -> Row:
    """Kill the node of one replica; the node back and the replicas spread afterwards."""
    old = {p["metadata"]["name"] for p in rec.objects("Pod")}
    node = ready_pods(rec)[0]["spec"]["nodeName"]
    prober = probe.Prober(deploy.gateway_url(ns, VICTIM), 20.0)
    session.run(prober.start())
    time.sleep(2.0)
    kill = faults.kill_node(node).t_ms
    try:
        wait_until(
            lambda: (
                len(ready_pods(rec)) >= 2
                and any(p["metadata"]["name"] not in old for p in ready_pods(rec))
            )
        )
        time.sleep(2.0)
    finally:
        session.run(prober.stop())
        faults.start_node(node)
    row = phases(log, kill, node, old, prober.table())

    def node_back() -> bool:
        obj = next(
            (r["obj"] for r in reversed(log.rows) if r["kind"] == "Node" and name_of(r) == node),
            None,
        )
        return obj is not None and node_ready(obj) and not tainted(obj)

    wait_until(node_back)
    if len({p["spec"]["nodeName"] for p in ready_pods(rec)}) == 1:
        session.run(faults.delete_pod(session.kube, ns, ready_pods(rec)[0]["metadata"]["name"]))
        wait_until(lambda: len({p["spec"]["nodeName"] for p in ready_pods(rec)}) == 2)
    time.sleep(3.0)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--toleration", type=int, default=2, help="tolerationSeconds (s)")
    parser.add_argument("--csv", default="node_kill_phases.csv")
    args = parser.parse_args()
    rows = []
    with (
        BenchSession() as session,
        Workspace(session, "node-kill-phases") as ws,
        session.recorder(ws.namespace) as rec,
    ):
        ns, log = ws.namespace, EventLog()
        paths = {
            "Lease": api_path("coordination.k8s.io/v1", "leases", "kube-node-lease"),
            "Node": api_path("v1", "nodes"),
            "Pod": api_path("v1", "pods", ns),
            "EndpointSlice": api_path("discovery.k8s.io/v1", "endpointslices", ns),
            "Deployment": api_path("apps/v1", "deployments", ns),
        }
        follows = [session.submit(log.follow(session, k, p)) for k, p in paths.items()]
        spec = {"placement": {"tolerationSeconds": args.toleration}}
        deploy_one(session, ns, VICTIM, "hello", rec, mode="operator", replicas=2,
                   timeout_s=120, spec=spec)  # fmt: skip
        wait_serving(session, ns, [VICTIM], 120)
        try:
            for index in range(args.trials):
                row = {"trial": index, **trial(session, ns, rec, log)}
                rows.append(row)
                print(" ".join(f"{k}={v:.0f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items()), flush=True)  # fmt: skip
        finally:
            for follow in follows:
                follow.cancel()
    with open(args.csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
