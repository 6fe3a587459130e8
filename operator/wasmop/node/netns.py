"""A wasm node's private network: a network namespace, a veth pair, and its pod range.

EndpointSlices cannot carry loopback addresses, so Pods need real addresses; to keep
every packet on this machine, those addresses exist only inside a namespace we create.
Layout for the node with pod range 10.244.N.0/24 (N from 1 to 63):

    host namespace                         namespace wasmop-<node>
    veth wo<hash>h 10.244.0.(4N+1)/30 <--> veth wo<hash>n 10.244.0.(4N+2)/30  (node InternalIP)
    route 10.244.N.0/24 via 10.244.0.(4N+2)   local route 10.244.N.0/24 on lo (any pod IP)

The local route makes every address of the pod range bindable inside the namespace
without adding one address per Pod. The agent process stays in the host namespace and
creates each listening socket inside the node's namespace with setns(2) on one thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import ipaddress
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

POD_SUPERNET = ipaddress.ip_network("10.244.0.0/16")
LINK_NET = ipaddress.ip_network("10.244.0.0/24")
MAX_NODE_INDEX = 63
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")

_libc = ctypes.CDLL(None, use_errno=True)
_setns_lock = threading.Lock()


class NetworkError(Exception):
    """The node network cannot be set up; the message says why in one line."""


def _ip(
    *args: str, namespace: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["-n", namespace] if namespace else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetworkError(f"'{' '.join(argv)}' failed: {result.stderr.strip()}")
    return result


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetworkError(f"setns failed: {os.strerror(err)}")


def remove_namespace(name: str) -> None:
    """Delete a network namespace (its veth pair and routes go with it)."""
    if (NETNS_DIR / name).exists():
        _ip("netns", "del", name, check=False)


@dataclass(frozen=True)
class NodeNetwork:
    """Addresses and names derived from a node's name and pod range."""

    node_name: str
    pod_cidr: ipaddress.IPv4Network

    @classmethod
    def for_node(cls, node_name: str, pod_cidr: str) -> NodeNetwork:
        try:
            network = ipaddress.ip_network(pod_cidr)
        except ValueError as exc:
            raise NetworkError(f"--pod-cidr {pod_cidr!r} is not a network: {exc}") from exc
        if not isinstance(network, ipaddress.IPv4Network) or network.prefixlen != 24:
            raise NetworkError(f"--pod-cidr must be an IPv4 /24, got {pod_cidr}")
        if not network.subnet_of(POD_SUPERNET):  # type: ignore[arg-type]
            raise NetworkError(f"--pod-cidr must lie in {POD_SUPERNET}, got {pod_cidr}")
        index = int(network.network_address.packed[2])
        if not 1 <= index <= MAX_NODE_INDEX:
            raise NetworkError(
                f"--pod-cidr third octet must be 1..{MAX_NODE_INDEX} "
                f"(10.244.0.0/24 holds the node links), got {pod_cidr}"
            )
        return cls(node_name, network)

    @property
    def index(self) -> int:
        return int(self.pod_cidr.network_address.packed[2])

    @property
    def namespace(self) -> str:
        return f"wasmop-{self.node_name}"

    @property
    def _tag(self) -> str:
        return hashlib.sha256(self.namespace.encode()).hexdigest()[:8]

    @property
    def host_veth(self) -> str:
        return f"wo{self._tag}h"

    @property
    def node_veth(self) -> str:
        return f"wo{self._tag}n"

    @property
    def host_address(self) -> str:
        return str(LINK_NET.network_address + 4 * self.index + 1)

    @property
    def node_address(self) -> str:
        """The node's InternalIP: its end of the link, inside its namespace."""
        return str(LINK_NET.network_address + 4 * self.index + 2)

    def pod_addresses(self) -> list[str]:
        """Addresses Pods may get: the range minus network, broadcast and .1-.9."""
        return [str(ip) for ip in self.pod_cidr.hosts() if int(ip.packed[3]) >= 10]

    # --- lifecycle ------------------------------------------------------------------

    def exists(self) -> bool:
        return (NETNS_DIR / self.namespace).exists()

    def setup(self) -> None:
        """Create (or re-create) the namespace, link and routes. Needs root."""
        if os.geteuid() != 0:
            raise NetworkError("wasm nodes need root to create their network namespace")
        self._check_route_free()
        self.teardown()
        ns = self.namespace
        _ip("netns", "add", ns)
        try:
            _ip("link", "add", self.host_veth, "type", "veth", "peer", "name", self.node_veth)
            _ip("link", "set", self.node_veth, "netns", ns)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_veth)
            _ip("link", "set", self.host_veth, "up")
            _ip("link", "set", "lo", "up", namespace=ns)
            _ip("addr", "add", f"{self.node_address}/30", "dev", self.node_veth, namespace=ns)
            _ip("link", "set", self.node_veth, "up", namespace=ns)
            _ip("route", "add", "local", str(self.pod_cidr), "dev", "lo", namespace=ns)
            _ip("route", "add", "default", "via", self.host_address, namespace=ns)
            _ip("route", "add", str(self.pod_cidr), "via", self.node_address, "dev", self.host_veth)
        except NetworkError:
            self.teardown()
            raise
        log.info(
            "network ready",
            extra={"namespace": ns, "pod_cidr": str(self.pod_cidr), "node_ip": self.node_address},
        )

    def _check_route_free(self) -> None:
        """Refuse to take a pod range another node (of this or another cluster) routes."""
        out = _ip("route", "show", str(self.pod_cidr), check=False).stdout.strip()
        if out and f"dev {self.host_veth}" not in out:
            raise NetworkError(
                f"pod range {self.pod_cidr} is already routed on this machine ({out});"
                " another wasm node uses it: pick another --pod-cidr"
            )

    def teardown(self) -> None:
        """Remove the namespace; the veth pair and the host route go with it."""
        if self.exists():
            _ip("netns", "del", self.namespace, check=False)
        _ip("link", "del", self.host_veth, check=False)

    # --- sockets --------------------------------------------------------------------

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the body with this thread inside the node's namespace."""
        with _setns_lock, open(f"/proc/self/task/{threading.get_native_id()}/ns/net") as home:
            with open(NETNS_DIR / self.namespace) as target:
                _setns(target.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def listen(self, address: str, port: int, backlog: int = 1024) -> socket.socket:
        """A listening TCP socket on address:port inside the node's namespace."""
        with self.entered():
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, port))
                sock.listen(backlog)
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        return sock

    # --- partition -------------------------------------------------------------------

    def _ignores_linkdown_routes(self) -> bool:
        conf = Path("/proc/sys/net/ipv4/conf")
        values = []
        for device in ("all", self.host_veth):
            with contextlib.suppress(OSError, ValueError):
                values.append(int((conf / device / "ignore_routes_with_linkdown").read_text()))
        return any(values)

    def cut_link(self) -> None:
        """A network partition: the node's end of the link goes down inside its namespace.

        The host end loses its carrier but keeps its route to the pod range, so whatever
        is sent there is dropped at the link and nothing falls through to another route
        (checked before and after: the pod range must stay routed to this link)."""
        if self._ignores_linkdown_routes():
            raise NetworkError(
                "this host ignores routes whose link is down (ignore_routes_with_linkdown):"
                " a cut link would let pod traffic take another route; refusing"
            )
        _ip("link", "set", self.node_veth, "down", namespace=self.namespace)
        probe = str(next(iter(self.pod_cidr.hosts())))
        route = _ip("route", "get", probe, check=False).stdout
        if f"dev {self.host_veth}" not in route:
            self.restore_link()
            raise NetworkError(f"with the link cut, {probe} routes elsewhere ({route.strip()})")
        log.info("link cut", extra={"namespace": self.namespace})

    def restore_link(self) -> None:
        """Undo :meth:`cut_link`: the link comes up and the namespace's default route,
        which went with it, is put back."""
        _ip("link", "set", self.node_veth, "up", namespace=self.namespace)
        _ip("route", "replace", "default", "via", self.host_address, namespace=self.namespace)
        log.info("link restored", extra={"namespace": self.namespace})

    # --- edge-network emulation -----------------------------------------------------

    def set_netem(self, delay_ms: float = 0.0, loss_percent: float = 0.0) -> None:
        """Delay and loss on both directions of the node's link (tc netem)."""
        for device, ns in ((self.host_veth, None), (self.node_veth, self.namespace)):
            prefix = ["ip", "netns", "exec", ns] if ns else []
            if delay_ms <= 0 and loss_percent <= 0:
                subprocess.run(
                    [*prefix, "tc", "qdisc", "del", "dev", device, "root"], capture_output=True
                )
                continue
            # Half the delay each way, so a round trip sees the full figure.
            args = ["netem", "delay", f"{delay_ms / 2:.3f}ms"]
            if loss_percent > 0:
                args += ["loss", f"{loss_percent / 2:.4f}%"]
            result = subprocess.run(
                [*prefix, "tc", "qdisc", "replace", "dev", device, "root", *args],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise NetworkError(f"tc netem on {device} failed: {result.stderr.strip()}")
