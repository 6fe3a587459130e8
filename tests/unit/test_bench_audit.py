"""Counting the API server's audited requests: who wrote what, per function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from wasmop.bench import audit

OPERATOR = "system:serviceaccount:wasm-operators:wasmop-operator"


def event(
    verb: str,
    resource: str,
    *,
    user: str = OPERATOR,
    agent: str = "wasmop-operator",
    namespace: str = "ns",
    name: str = "fn",
    subresource: str = "",
    body: dict[str, Any] | None = None,
    stage: str = "ResponseComplete",
    at: str = "2026-11-30T17:56:12.721258Z",
) -> dict[str, Any]:
    ref: dict[str, Any] = {"resource": resource, "namespace": namespace, "name": name}
    if subresource:
        ref["subresource"] = subresource
    if not namespace:
        del ref["namespace"]
    found: dict[str, Any] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "stage": stage,
        "verb": verb, "user": {"username": user}, "userAgent": agent, "objectRef": ref,
        "responseStatus": {"metadata": {}, "code": 200}, "requestReceivedTimestamp": at,
    }  # fmt: skip
    if body is not None:
        found["requestObject"] = body
    return found


CONTROLLER = "system:serviceaccount:kube-system:"
KCM = "kube-controller-manager/v1.36.5 (linux/amd64) kubernetes/$Format/"
EVENTS = [
    event("create", "configmaps"),
    event("patch", "deployments", body={"spec": {"replicas": 1}}),
    event("patch", "wasmfunctions", subresource="status", body={"status": {"phase": "Ready"}}),
    event("patch", "wasmfunctions", agent="kopf/1.45.2",
          body={"metadata": {"annotations": {"x/last-handled-configuration": "{}"}}}),
    event("patch", "wasmfunctions", agent="kopf/1.45.2",
          body={"metadata": {"finalizers": ["x/operator"]}}),
    event("create", "events", name=""),
    event("update", "deployments", subresource="status", user=CONTROLLER + "deployment-controller",
          agent=KCM + "deployment-controller"),
    event("create", "pods", subresource="binding", user="system:kube-scheduler"),
    event("patch", "pods", subresource="status", user="system:node:wasm-node-1"),
    event("delete", "pods", user=CONTROLLER + "generic-garbage-collector"),
    event("create", "wasmfunctions", user="wasmop-admin", agent="wasmop-bench"),
    event("patch", "wasmruntimes", subresource="status", namespace="", name="default"),
    event("patch", "nodes", subresource="status", namespace="", user="system:node:wasm-node-1"),
    event("create", "pods", namespace="elsewhere", user=CONTROLLER + "replicaset-controller"),
    event("get", "configmaps"),  # a read: only with reads=True
    event("watch", "pods", stage="ResponseStarted"),
    event("watch", "pods", stage="ResponseComplete"),  # the same watch ending: not again
    event("patch", "deployments", stage="RequestReceived"),
]  # fmt: skip


def lines() -> list[str]:
    return [json.dumps(e) for e in EVENTS] + ['{"kind": "Event", "torn']


def test_writes_are_put_down_to_actors_and_parts() -> None:
    writes = audit.frame(audit.parse_lines(lines()))
    got = set(zip(writes["actor"], writes["resource"], writes["part"], strict=True))
    assert got == {
        ("operator", "configmaps", "create"),
        ("operator", "deployments", "spec"),
        ("operator", "wasmfunctions/status", "status"),
        ("operator (kopf)", "wasmfunctions", "annotations"),
        ("operator (kopf)", "wasmfunctions", "finalizers"),
        ("operator", "events", "event"),
        ("deployment-controller", "deployments/status", "status"),
        ("scheduler", "pods/binding", "binding"),
        ("node agent", "pods/status", "status"),
        ("garbage-collector", "pods", "delete"),
        ("client", "wasmfunctions", "create"),
        ("operator", "wasmruntimes/status", "status"),
        ("node agent", "nodes/status", "status"),
        ("replicaset-controller", "pods", "create"),
    }


def test_a_measurement_keeps_its_namespace_and_the_operators_cluster_writes() -> None:
    writes = audit.frame(audit.parse_lines(lines()))
    t = writes["t_ms"].iloc[0]
    chosen = audit.select(writes, "ns", t - 1, t + 1)
    assert "elsewhere" not in set(chosen["namespace"])
    assert ("nodes/status" in set(chosen["resource"])) is False  # a node's heartbeat
    assert "wasmruntimes/status" in set(chosen["resource"])
    table = audit.writes_table(chosen, functions=2)
    total = table[table["actor"] == "total"].iloc[0]
    assert total["writes"] == len(chosen) and total["writes_per_function"] == len(chosen) / 2
    assert audit.select(writes, "ns", t + 10, t + 20).empty


def test_the_operators_requests_per_minute_count_reads_once(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("\n".join(lines()[:3]) + "\n")
    tail = audit.AuditTail(log)  # what is there now is not read again
    with log.open("a") as f:
        f.write("\n".join(lines()[3:]) + "\n")
    requests = audit.frame(tail.read(reads=True))
    assert "configmaps" not in set(requests.loc[requests["verb"] == "create", "resource"])
    t = requests["t_ms"].iloc[0]
    rate = audit.requests_per_minute(requests, t - 30_000, t + 30_000)
    assert isinstance(rate, pd.DataFrame)
    counts = dict(zip(zip(rate["verb"], rate["resource"], strict=True), rate["requests"],
                      strict=True))  # fmt: skip
    assert counts[("watch", "pods")] == 1 and counts[("get", "configmaps")] == 1
    assert ("patch", "nodes/status") not in counts  # not the operator's
    assert rate["per_minute"].sum() == rate["requests"].sum()  # a one-minute window


def test_a_rotated_log_is_followed(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text(json.dumps(EVENTS[0]) + "\n")
    tail = audit.AuditTail(log)
    with log.open("a") as f:
        f.write(json.dumps(EVENTS[1]) + "\n")
    log.rename(tmp_path / "audit-2026-11-30T18-00-00.000.log")
    log.write_text(json.dumps(EVENTS[2]) + "\n")
    assert [w.resource for w in tail.read()] == ["deployments", "wasmfunctions/status"]
