"""HTTP probes from the agent, in the host namespace, to Pods inside the node's namespace."""

from __future__ import annotations

import aiohttp


class HttpProber:
    """Runs httpGet probes the way a kubelet judges them: 200-399 is success."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def probe(self, url: str, limit_s: float) -> tuple[bool, str]:
        """One probe: (success, the failure as a kubelet words it)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True)
            )
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=limit_s)) as r:
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
