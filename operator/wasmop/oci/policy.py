"""Where a registry client may connect: the registries an administrator trusts, and an
address policy for every other host.

A WasmFunction's author chooses the image, so its registry is tenant input, exactly like a
module URL: without a check, ``10.0.0.1:2379/x:1`` or ``169.254.169.254/x:1`` would have
the operator (or a node agent) send requests into the platform. So every connection a
registry client makes (registry, token realm, redirect target) is judged first:

* a registry the administrator named (``--registry-allow HOST[:PORT]``, the embedded
  cluster's ``127.0.0.1:5000``) is reached whatever its address;
* anything else must pass the address policy (by default: globally routable unicast
  addresses only; loopback, private, link-local, shared and reserved ranges are refused).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["AddressPolicy", "PublicOnly", "RegistryPolicy"]


class AddressPolicy(Protocol):
    def refusal(self, address: str) -> str | None:
        """Why a connection to ``address`` is refused, or None."""


class PublicOnly:
    """Globally routable unicast addresses only (an IPv4 address inside an IPv6 one is
    judged as the IPv4 address it reaches)."""

    def refusal(self, address: str) -> str | None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not ip.is_global or ip.is_multicast:
            return f"{ip} is not a public unicast address"
        return None


def _normalise(entry: str) -> str:
    return entry.strip().lower()


@dataclass(frozen=True)
class RegistryPolicy:
    """``trusted``: ``host:port`` (or a bare host, any port) reached whatever its address."""

    trusted: frozenset[str] = frozenset()
    addresses: AddressPolicy = field(default_factory=PublicOnly)

    @classmethod
    def of(
        cls, trusted: Iterable[str] = (), addresses: AddressPolicy | None = None
    ) -> RegistryPolicy:
        return cls(
            frozenset(_normalise(t) for t in trusted if t.strip()), addresses or PublicOnly()
        )

    def check(self, host: str, port: int, address: str) -> str | None:
        """The :data:`wasmop.oci.client.AddressCheck` of this policy."""
        name = _normalise(host)
        if name in self.trusted or f"{name}:{port}" in self.trusted:
            return None
        return self.addresses.refusal(address)
