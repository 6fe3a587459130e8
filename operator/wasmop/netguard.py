"""Outbound HTTP that connects only where an address check allows.

Whatever fetches from an address a tenant chose (a module URL, an OCI registry) runs
beside the platform's own services, so it must not become a way to reach them. The
pieces here make a check hold at connection time:

* :class:`CheckedResolver` resolves a host, judges every address of the answer and
  refuses the whole answer if one is refused; aiohttp connects to exactly the addresses
  the resolver returns, so the address checked is the address reached (no second lookup,
  no DNS-rebinding window). Use it with the connector's DNS cache off.
* :class:`AddressRefused` is what it raises (an ``OSError``, which aiohttp wraps), and
  :func:`refusal_in` digs it out of aiohttp's error again.
* :class:`AddressPolicy` is the usual check: globally routable unicast addresses only,
  plus or minus ranges an administrator names.

Address literals never reach a resolver: callers check those themselves
(:meth:`AddressPolicy.refusal`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

__all__ = [
    "AddressCheck",
    "AddressPolicy",
    "AddressRefused",
    "CheckedResolver",
    "refusal_in",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# (host, port, address) -> why a connection there is refused, or None.
AddressCheck = Callable[[str, int, str], str | None]

# IPv6 prefixes that carry an IPv4 address inside: the embedded address is what gets
# reached, so it is what is judged (NAT64 well-known prefix, 6to4).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(OSError):
    """A host is, or resolves to, an address the check refuses."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses may be connected to.

    ``deny`` wins over ``allow``, which wins over the default: globally routable unicast
    only (no loopback, link-local, private, shared, unique-local, reserved or multicast
    address, nor one of those inside an IPv6 address).
    """

    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> AddressPolicy:
        """From CIDR strings such as ``127.0.0.1/32``; a bad one raises ValueError."""
        return cls(
            allow=tuple(ipaddress.ip_network(n, strict=False) for n in allow),
            deny=tuple(ipaddress.ip_network(n, strict=False) for n in deny),
        )

    def refusal(self, address: str | IPAddress) -> str | None:
        """Why ``address`` is refused (for a log), or None when it may be reached."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(ip)
            if embedded is not None:
                candidates.append(embedded)
        for candidate in candidates:
            if any(candidate in net for net in self.deny if net.version == candidate.version):
                return f"{candidate} is in a denied range"
        if any(ip in net for net in self.allow if net.version == ip.version):
            return None
        for candidate in candidates:
            if not candidate.is_global or candidate.is_multicast:
                return f"{candidate} is not a public unicast address"
        return None

    def check(self, host: str, port: int, address: str) -> str | None:
        """The policy as an :data:`AddressCheck`."""
        return self.refusal(address)


class CheckedResolver(AbstractResolver):
    """Resolves with ``inner`` (the system's resolver by default) and refuses the whole
    answer if ``check`` refuses any address in it."""

    def __init__(self, check: AddressCheck, inner: AbstractResolver | None = None) -> None:
        self._check = check
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = ThreadedResolver()
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            why = self._check(host, port, answer["host"])
            if why is not None:
                raise AddressRefused(f"{host} resolves to {answer['host']}: {why}")
        return answers

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def refusal_in(exc: BaseException) -> AddressRefused | None:
    """The AddressRefused behind an aiohttp connector error, if that is what it was."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AddressRefused):
            return current
        inner = getattr(current, "os_error", None)
        if isinstance(inner, AddressRefused):
            return inner
        current = current.__cause__ or current.__context__
    return None
