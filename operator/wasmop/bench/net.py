"""The network rule, in one place: load and probe traffic goes only to loopback or to
addresses inside the network namespaces the project creates (10.244.0.0/16).

Pure and dependency-free, so the Locust scenarios (a separate gevent process) can import
it cheaply.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

OWN_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.244.0.0/16"))


class TargetNotAllowed(ValueError):
    """Load and probe traffic may only go to loopback or the project's own namespaces."""


def check_target(url: str) -> str:
    """Refuse any URL whose host is not ``localhost``, a literal loopback address or a
    10.244.0.0/16 address. Returns the URL unchanged."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return url
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise TargetNotAllowed(
            f"{url}: traffic may only go to a literal loopback or 10.244.x.x address"
        ) from None
    if address.is_loopback or any(address in net for net in OWN_NETWORKS):
        return url
    raise TargetNotAllowed(f"{url}: {address} is neither loopback nor a wasmop node address")
