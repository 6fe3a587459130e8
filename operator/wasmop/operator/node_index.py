"""Which wasm nodes exist, which are Ready, and which WasmRuntime each one serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wasmop.operator.spec import WasmRuntime
from wasmop.wellknown import ENGINE_VERSION_LABEL, ZONE_LABEL


@dataclass(frozen=True)
class NodeInfo:
    name: str
    ready: bool
    labels: dict[str, str]
    address: str | None
    daemon_port: int | None
    schedulable: bool = True

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> NodeInfo:
        status = body.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        address = next(
            (a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"),
            None,
        )
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
        return cls(
            name=body["metadata"]["name"],
            ready=ready,
            labels=dict(body["metadata"].get("labels") or {}),
            address=address,
            daemon_port=int(port) if port else None,
            schedulable=not (body.get("spec") or {}).get("unschedulable", False),
        )

    def matches(self, selector: dict[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in selector.items())


class NodeIndex:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}

    def apply(self, event_type: str, body: dict[str, Any]) -> bool:
        """Record a Node event; True when something a runtime's status shows changed."""
        name = body["metadata"]["name"]
        if event_type == "DELETED":
            return self.nodes.pop(name, None) is not None
        info = NodeInfo.from_body(body)
        before = self.nodes.get(name)
        self.nodes[name] = info
        return before is None or (before.ready, before.labels) != (info.ready, info.labels)

    def serving(self, runtime: WasmRuntime) -> list[NodeInfo]:
        return sorted(
            (n for n in self.nodes.values() if n.matches(dict(runtime.spec.node_selector))),
            key=lambda n: n.name,
        )

    def metrics_endpoints(self) -> list[tuple[str, str]]:
        """(node, base URL) of every Ready node's kubelet API (HTTPS, as a kubelet's)."""
        return [
            (n.name, f"https://{n.address}:{n.daemon_port}")
            for n in self.nodes.values()
            if n.ready and n.address and n.daemon_port
        ]


def runtime_status(runtime: WasmRuntime, nodes: list[NodeInfo], functions: int) -> dict[str, Any]:
    """A WasmRuntime's observed state: the nodes that serve it and their engines."""
    ready = [n for n in nodes if n.ready]
    versions = sorted({n.labels.get(ENGINE_VERSION_LABEL, "") for n in nodes} - {""})
    return {
        "phase": "Ready" if ready else "NotReady",
        "nodeCount": len(nodes),
        "readyNodes": len(ready),
        "readyText": f"{len(ready)}/{len(nodes)}",
        "nodes": [
            {
                "name": n.name,
                "ready": n.ready,
                "zone": n.labels.get(ZONE_LABEL, ""),
                "engineVersion": n.labels.get(ENGINE_VERSION_LABEL, ""),
            }
            for n in nodes
        ],
        "engineVersions": versions,
        "engineVersionsText": ",".join(versions),
        "functions": functions,
        "observedGeneration": runtime.generation,
    }
