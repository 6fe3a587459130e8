"""Where a registry client may connect: the registries an administrator trusts, and the
cluster's address policy for every other host.

A WasmFunction's author chooses the image, so its registry is tenant input, exactly like a
module URL: without a check, ``10.0.0.1:2379/x:1`` or ``169.254.169.254/x:1`` would have
the operator (or a node agent) send requests into the platform. So every connection a
registry client makes (registry, token realm, redirect target) is judged first:

* a registry the administrator named (``--registry-allow HOST[:PORT]``, the embedded
  cluster's ``127.0.0.1:5000``) is reached whatever its address;
* anything else must pass the address policy module URLs pass too
  (:class:`wasmop.netguard.AddressPolicy`: public unicast addresses only, plus or minus
  the ranges an administrator names with ``--module-url-allow``/``--module-url-deny``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from wasmop.netguard import AddressPolicy

__all__ = ["RegistryPolicy"]


def _normalise(entry: str) -> str:
    return entry.strip().lower()


@dataclass(frozen=True)
class RegistryPolicy:
    """``trusted``: ``host:port`` (or a bare host, any port) reached whatever its address."""

    trusted: frozenset[str] = frozenset()
    addresses: AddressPolicy = field(default_factory=AddressPolicy)

    @classmethod
    def of(
        cls, trusted: Iterable[str] = (), addresses: AddressPolicy | None = None
    ) -> RegistryPolicy:
        return cls(
            frozenset(_normalise(t) for t in trusted if t.strip()), addresses or AddressPolicy()
        )

    def check(self, host: str, port: int, address: str) -> str | None:
        """The :data:`wasmop.netguard.AddressCheck` of this policy."""
        name = _normalise(host)
        if name in self.trusted or f"{name}:{port}" in self.trusted:
            return None
        return self.addresses.refusal(address)
