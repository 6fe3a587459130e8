"""Pod addresses of one node: stable per Pod UID, reused only long after a Pod went away."""

from __future__ import annotations


class AddressesExhausted(Exception):
    pass


class PodAddressAllocator:
    """Hands out the node's pod addresses in turn, the next free one after the last given
    (as the host-local CNI plugin does).

    An address is not handed out again right after its Pod went away: the gateway may
    still route to it from an EndpointSlice the controller has not yet updated, and a new
    Pod there (of another function, perhaps) would answer for the old one. A re-adopted
    Pod asks for the address it already has in its status, so an agent restart does not
    move a Pod (its EndpointSlice entry stays valid).
    """

    def __init__(self, addresses: list[str]) -> None:
        self._order = {ip: i for i, ip in enumerate(addresses)}
        self._addresses = list(addresses)
        self._free = set(addresses)
        self._by_uid: dict[str, str] = {}
        self._last = -1  # index of the address handed out last

    def allocate(self, uid: str, preferred: str | None = None) -> str:
        if uid in self._by_uid:
            return self._by_uid[uid]
        if preferred in self._free:
            ip = preferred
        elif self._free:
            count = len(self._addresses)
            ip = next(
                self._addresses[(self._last + step) % count]
                for step in range(1, count + 1)
                if self._addresses[(self._last + step) % count] in self._free
            )
            self._last = self._order[ip]
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
