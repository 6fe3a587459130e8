"""Settings of one embedded cluster, persisted in ``cluster.json`` so restarts keep them."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class SettingsError(Exception):
    """``cluster.json`` exists but cannot be understood."""


# Node N (from 1) has pod range 10.244.N.0/24; the last index is the system node's.
SYSTEM_NODE = "wasmop-system"
SYSTEM_NODE_INDEX = 62  # 63 is the unit tests' replay node (tests/unit/test_watch_recovery.py)
MAX_WASM_NODES = SYSTEM_NODE_INDEX - 1
MAX_PODS_PER_NODE = 245  # addresses .10 to .254 of a node's /24 (NodeNetwork.pod_addresses)


@dataclass
class ClusterSettings:
    """Ports, timings and sizes of the embedded cluster.

    The node-lifecycle timings default far below upstream's (50 s grace, 300 s
    tolerations) because recovery experiments measure how fast a node failure is noticed
    and its Pods are moved; upstream's values would dominate every measurement.
    """

    api_port: int = 6443
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    controller_manager_port: int = 10257
    scheduler_port: int = 10259
    service_cidr: str = "10.96.0.0/16"
    # Node failure detection (docs/architecture.md, "A node that dies"). A node is
    # NotReady once the node lifecycle controller, looking every `period`, has seen no new
    # Lease renewal for `grace`; agents renew every `lease_renew`. A dead node is noticed
    # after grace to grace + renew + period (4 to 4.75 s), and a live agent whose renewals
    # stall is wrongly declared dead only after a stall of grace - renew - period
    # (3.25 s; an API server restart keeps them away for about 2 s). Upstream's 50 s,
    # 10 s and 5 s give the same shape at ten times the scale.
    node_monitor_grace_seconds: int = 4
    node_monitor_period_seconds: float = 0.25
    lease_renew_seconds: float = 0.5
    not_ready_toleration_seconds: int = 2
    unreachable_toleration_seconds: int = 2
    # Client QPS of controllers and scheduler: upstream's 20/50 throttle a 100-function
    # deployment storm (about 500 controller writes, events included) to tens of seconds,
    # which would measure the throttle, not the system.
    client_qps: int = 1000
    client_burst: int = 2000
    etcd_fsync: bool = True
    # Wasm node agents (at least two, so a node failure can evict to a healthy node),
    # started with the control plane, and how many Pods each takes (the kubelet's
    # default 110; a wasm Pod costs about 0.3 MiB, so a node can take far more).
    nodes: int = 2
    zones: tuple[str, ...] = ("zone-a", "zone-b")
    max_pods: int = 110
    # The system node: runs the operator and gateway Pods (the project's own images) as
    # host processes, installed from the same manifests as on a real cluster.
    system_node: bool = True
    gateway_port: int = 8000
    operator_metrics_port: int = 8080
    operator_health_port: int = 8081
    # Cluster services beside the control plane: the OCI registry for wasm modules
    # (plain HTTP on loopback) and metrics-server (the aggregated metrics.k8s.io API).
    registry_port: int = 5000
    metrics_server_port: int = 4443
    # Address ranges (CIDRs) the operator may fetch spec.module.url from beyond public
    # addresses: none by default; 127.0.0.1/32 for the loopback sample (hello-url.yaml).
    module_url_allow: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.zones = tuple(self.zones)
        stall = (
            self.node_monitor_grace_seconds
            - self.lease_renew_seconds
            - self.node_monitor_period_seconds
        )
        if min(self.lease_renew_seconds, self.node_monitor_period_seconds) <= 0 or stall < 1:
            raise SettingsError(
                "node_monitor_grace_seconds must exceed lease_renew_seconds +"
                " node_monitor_period_seconds by at least 1 s (both positive), or a live"
                f" node would be declared dead (got {self.node_monitor_grace_seconds},"
                f" {self.lease_renew_seconds}, {self.node_monitor_period_seconds})"
            )
        self.module_url_allow = tuple(self.module_url_allow)
        for cidr in self.module_url_allow:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise SettingsError(f"module_url_allow: {exc}") from exc
        if not 0 <= self.nodes <= MAX_WASM_NODES:
            raise SettingsError(f"nodes must be between 0 and {MAX_WASM_NODES}, got {self.nodes}")
        if not 1 <= self.max_pods <= MAX_PODS_PER_NODE:
            raise SettingsError(
                f"max_pods must be between 1 and {MAX_PODS_PER_NODE} (a node's pod range"
                f" holds {MAX_PODS_PER_NODE} addresses), got {self.max_pods}"
            )

    def node_names(self) -> list[str]:
        return [f"wasm-node-{i}" for i in range(1, self.nodes + 1)]

    @property
    def system_node_name(self) -> str:
        return SYSTEM_NODE

    @property
    def system_node_pod_cidr(self) -> str:
        """The system node's range: its Pods share its address, so none is handed out,
        but the node and its kubelet API need an address of their own."""
        return self.node_pod_cidr(SYSTEM_NODE_INDEX)

    def node_pod_cidr(self, index: int) -> str:
        """Node i (from 1) serves 10.244.i.0/24."""
        return f"10.244.{index}.0/24"

    def node_zone(self, index: int) -> str:
        return self.zones[(index - 1) % len(self.zones)]

    @property
    def service_ip(self) -> str:
        """The first address of the service range, as the API server assigns it."""
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def etcd_url(self) -> str:
        return f"https://127.0.0.1:{self.etcd_client_port}"

    @property
    def etcd_peer_url(self) -> str:
        return f"https://127.0.0.1:{self.etcd_peer_port}"

    @property
    def registry_address(self) -> str:
        """host:port of the registry, as image references name it."""
        return f"127.0.0.1:{self.registry_port}"

    def ports(self) -> dict[str, int]:
        """Every loopback port the cluster listens on, by the component that owns it."""
        return {
            "etcd (client)": self.etcd_client_port,
            "etcd (peer)": self.etcd_peer_port,
            "kube-apiserver": self.api_port,
            "kube-controller-manager": self.controller_manager_port,
            "kube-scheduler": self.scheduler_port,
            "gateway": self.gateway_port,
            "operator (metrics)": self.operator_metrics_port,
            "operator (health)": self.operator_health_port,
            "registry": self.registry_port,
            "metrics-server": self.metrics_server_port,
        }

    def with_port_offset(self, offset: int) -> ClusterSettings:
        """A copy with every port shifted by ``offset``: a second cluster beside the first."""
        names = [f.name for f in dataclasses.fields(self) if f.name.endswith("_port")]
        return dataclasses.replace(self, **{n: getattr(self, n) + offset for n in names})

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ClusterSettings:
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SettingsError(f"unknown settings {', '.join(unknown)}")
        for name in ("zones", "module_url_allow"):
            if name in data:
                data = {**data, name: tuple(data[name])}
        return cls(**data)

    @classmethod
    def load(cls, path: Path) -> ClusterSettings | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise SettingsError("not a JSON object")
            return cls.from_mapping(data)
        except (ValueError, TypeError, SettingsError) as exc:
            raise SettingsError(f"{path} is corrupt ({exc})") from exc

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    def updated(self, **overrides: Any) -> ClusterSettings:
        """A copy with the given fields changed; ``None`` values mean "keep"."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})
