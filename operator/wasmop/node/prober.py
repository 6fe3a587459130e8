"""HTTP probes from the agent, in the host namespace, to Pods inside the node's namespace.

A probe's path comes from the Pod spec, so it is tenant input: the URL is built from its
parts (the host is always the Pod's address) and redirects are never followed, so no path
or answer can send a probe anywhere else (such as the host's own loopback services).
"""

from __future__ import annotations

import aiohttp
from yarl import URL


def probe_url(host: str, port: int, path: str) -> URL:
    """``http://host:port`` plus the path and query of ``path``; nothing in ``path`` can
    change the scheme, host, port or user (kubelet likewise prefixes a missing ``/``)."""
    path, _, query = path.partition("?")
    path = path.partition("#")[0]
    if not path.startswith("/"):
        path = "/" + path
    return URL.build(scheme="http", host=host, port=port, path=path, query_string=query)


class HttpProber:
    """Runs httpGet probes the way a kubelet judges them: 200-399 is success."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def probe(self, url: URL, limit_s: float) -> tuple[bool, str]:
        """One probe: (success, the failure as a kubelet words it). A redirect is an
        answer (success, as 3xx is for a kubelet), never followed."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True)
            )
        try:
            async with self._session.get(
                url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=limit_s)
            ) as r:
                await r.read()
                if 200 <= r.status < 400:
                    return True, ""
                return False, f"HTTP probe failed with statuscode: {r.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return False, f"Get {url}: {exc.__class__.__name__} {exc}"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
