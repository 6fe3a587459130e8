"""Pod addresses of one node: stable per Pod UID, reused after a Pod goes away."""

from __future__ import annotations


class AddressesExhausted(Exception):
    pass


class PodAddressAllocator:
    """Hands out the node's pod addresses, lowest free first.

    A re-adopted Pod asks for the address it already has in its status, so an agent
    restart does not move a Pod (its EndpointSlice entry stays valid).
    """

    def __init__(self, addresses: list[str]) -> None:
        self._order = {ip: i for i, ip in enumerate(addresses)}
        self._free = set(addresses)
        self._by_uid: dict[str, str] = {}

    def allocate(self, uid: str, preferred: str | None = None) -> str:
        if uid in self._by_uid:
            return self._by_uid[uid]
        if preferred in self._free:
            ip = preferred
        elif self._free:
            ip = min(self._free, key=self._order.__getitem__)
        else:
            raise AddressesExhausted(f"all {len(self._order)} pod addresses are in use")
        assert ip is not None
        self._free.discard(ip)
        self._by_uid[uid] = ip
        return ip

    def release(self, uid: str) -> None:
        ip = self._by_uid.pop(uid, None)
        if ip is not None:
            self._free.add(ip)
