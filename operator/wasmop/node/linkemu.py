"""Delay and loss on a wasm node's link, for edge-network experiments.

``tc netem`` is the standard tool, but some kernels (this project's CI machine among
them) are built without ``sch_netem``. Then the agent emulates the link itself: a TUN
device on each side (host namespace and node namespace) takes the node's routes, and
the agent copies every IP packet across with the configured one-way delay, dropping each
with the configured probability. It is a real packet path (TCP sees the delay in its RTT
and retransmits lost segments), just slower per packet than the kernel's veth.

While no delay or loss is set, traffic uses the plain veth pair and this module is idle.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import random
import struct
import subprocess
from dataclasses import dataclass, field

from wasmop.node.netns import NetworkError, NodeNetwork, _ip

log = logging.getLogger(__name__)

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65535


def kernel_has_netem() -> bool:
    """Whether `tc qdisc … netem` works here (tried on a throwaway namespace's loopback)."""
    probe = f"wasmop-netem-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        result = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                probe,
                "tc",
                "qdisc",
                "add",
                "dev",
                "lo",
                "root",
                "netem",
                "delay",
                "1ms",
            ],
            capture_output=True,
        )
        return result.returncode == 0
    except (NetworkError, OSError):
        return False
    finally:
        _ip("netns", "del", probe, check=False)


def _open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


@dataclass
class LinkEmulator:
    """The user-space link of one node: two TUN devices and a packet pump between them."""

    network: NodeNetwork
    delay_s: float = 0.0
    loss: float = 0.0
    forwarded: int = 0
    dropped: int = 0
    _fds: tuple[int, int] | None = None
    _rng: random.Random = field(default_factory=random.Random)

    @property
    def host_tun(self) -> str:
        return self.network.host_veth[:-1] + "t"

    @property
    def node_tun(self) -> str:
        return self.network.host_veth[:-1] + "u"

    @property
    def active(self) -> bool:
        return self._fds is not None

    def configure(self, delay_ms: float, loss_percent: float) -> None:
        self.delay_s = max(0.0, delay_ms) / 2000  # half the round trip each way
        self.loss = min(max(0.0, loss_percent), 100.0) / 200  # about loss_percent per round trip
        if delay_ms <= 0 and loss_percent <= 0:
            self.stop()
        elif not self.active:
            self.start()

    def start(self) -> None:
        n = self.network
        host_fd = _open_tun(self.host_tun)
        with n.entered():
            node_fd = _open_tun(self.node_tun)
        self._fds = (host_fd, node_fd)
        ns = n.namespace
        _ip("link", "set", self.host_tun, "up")
        _ip("link", "set", self.node_tun, "up", namespace=ns)
        # Everything between the host and this node now crosses the emulated link.
        _ip("route", "replace", str(n.pod_cidr), "dev", self.host_tun, "src", n.host_address)
        _ip("route", "replace", f"{n.node_address}/32", "dev", self.host_tun, "src", n.host_address)
        _ip(
            "route",
            "replace",
            f"{n.host_address}/32",
            "dev",
            self.node_tun,
            "src",
            n.node_address,
            namespace=ns,
        )
        loop = asyncio.get_running_loop()
        loop.add_reader(host_fd, self._pump, host_fd, node_fd)
        loop.add_reader(node_fd, self._pump, node_fd, host_fd)
        log.info("link emulation on", extra={"node": n.node_name})

    def stop(self) -> None:
        if self._fds is None:
            return
        n = self.network
        _ip(
            "route",
            "replace",
            str(n.pod_cidr),
            "via",
            n.node_address,
            "dev",
            n.host_veth,
            check=False,
        )
        _ip("route", "del", f"{n.node_address}/32", check=False)
        _ip("route", "del", f"{n.host_address}/32", namespace=n.namespace, check=False)
        loop = asyncio.get_running_loop()
        for fd in self._fds:
            loop.remove_reader(fd)
            os.close(fd)  # closing the only fd removes the TUN device
        self._fds = None
        log.info("link emulation off", extra={"node": n.node_name})

    def _pump(self, source: int, target: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(64):  # drain a burst, then let other work run
            try:
                packet = os.read(source, MAX_PACKET)
            except BlockingIOError:
                return
            except OSError:
                return
            if self.loss and self._rng.random() < self.loss:
                self.dropped += 1
                continue
            self.forwarded += 1
            if self.delay_s:
                loop.call_later(self.delay_s, self._write, target, packet)
            else:
                self._write(target, packet)

    def _write(self, fd: int, packet: bytes) -> None:
        if self._fds is None:
            return
        try:
            os.write(fd, packet)
        except OSError as exc:  # a full queue drops the packet, as a real link would
            self.dropped += 1
            log.debug("packet dropped: %s", exc)
