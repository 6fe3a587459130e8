"""Fetching a tenant's ``spec.module.url`` without letting the tenant aim the operator at
the platform.

The operator runs with cluster credentials beside the API server, etcd, the node daemons,
the registry and, on a cloud, the instance metadata service. Whoever writes a
WasmFunction chooses the URL, so a fetch must not become a way to reach those
(server-side request forgery):

* the host's addresses are resolved once and every one is checked: only globally routable
  addresses pass, unless an administrator allows a range (``--module-url-allow``, say
  127.0.0.1/32 for the loopback sample server); loopback, link-local (metadata
  169.254.169.254 included), private, shared (100.64/10) and reserved ranges, and any
  range the administrator denies (``--module-url-deny``: the cluster's own ranges if they
  are public), are refused;
* the connection goes to the address that was checked, through a resolver of our own, so
  no second lookup can return another address (no DNS-rebinding window);
* no redirects (a redirect could point anywhere, and would dodge the rule that plain http
  must pin its digest), no proxy from the environment;
* the caller learns only *that* a fetch failed or was refused, never the HTTP status,
  connection error or bytes it saw: this module raises typed errors whose details are for
  the operator's log, not for status.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver

from wasmop.netguard import AddressPolicy, AddressRefused, CheckedResolver, refusal_in

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FetchFailed",
    "FetchTooLarge",
    "ModuleUrlFetcher",
]

DEFAULT_MAX_BYTES = 64 * 2**20
DEFAULT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
READ_CHUNK = 256 * 1024


class FetchFailed(Exception):
    """The module could not be fetched; ``detail`` is for the operator's log only."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class FetchTooLarge(FetchFailed):
    """The response is larger than the fetcher's byte limit."""


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class ModuleUrlFetcher:
    """GETs module bytes under an :class:`AddressPolicy`; no redirects, no proxy."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: AbstractResolver | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.policy = policy
        self.max_bytes = max_bytes
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=CONNECT_TIMEOUT_S)
        self._resolver = CheckedResolver(policy.check, resolver)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=self._resolver, use_dns_cache=False, force_close=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, auto_decompress=False
            )
        return self._session

    def check_url(self, url: str) -> None:
        """Refuse what can be judged without a lookup: the scheme and an address literal."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AddressRefused(f"{url!r} is not an absolute http or https URL")
        literal = _literal_address(parts.hostname)
        if literal is not None:
            why = self.policy.refusal(literal)
            if why is not None:
                raise AddressRefused(why)

    async def fetch(self, url: str) -> bytes:
        """The body of a 200 answer to GET ``url``.

        Raises AddressRefused (the policy refuses the host), FetchTooLarge, or FetchFailed
        (anything else: lookup, connection, TLS, timeout, a status other than 200).
        """
        self.check_url(url)
        request: dict[str, Any] = {"allow_redirects": False, "timeout": self.timeout}
        try:
            async with self._client().get(url, **request) as response:
                if response.status != 200:
                    raise FetchFailed(f"GET {url} answered {response.status}")
                if (response.content_length or 0) > self.max_bytes:
                    raise FetchTooLarge(f"{url} is larger than {self.max_bytes} bytes")
                # The whole body, chunk by chunk (read(n) returns as soon as *some* bytes
                # are there), and no further than the limit.
                chunks, size = [], 0
                async for chunk in response.content.iter_chunked(READ_CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FetchTooLarge(f"{url} is larger than {self.max_bytes} bytes")
                    chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            refused = refusal_in(exc)
            if refused is not None:
                raise refused from None
            raise FetchFailed(f"GET {url} failed: {type(exc).__name__}: {exc}") from exc
        return b"".join(chunks)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self._resolver.close()
        await asyncio.sleep(0)
