"""Modules a node pulls from registries, by digest, into its content store.

Every Pod of an image-sourced function names its module's image by digest. The node
pulls each digest once: Pods starting together wait for the same pull, and later Pods
find the module in the node's content store (``<state>/content/<node>``), verified again
on every read. A module a runtime on this node has compiled already is not even read
(:meth:`wasmop.node.function_loader.FunctionLoader.load`).

Pull credentials are the Pod's: the dockerconfigjson Secrets its volumes mount, which the
Node authorizer lets this node read because a Pod bound here mounts them. Connections go
only where the node's registry policy allows (the cluster's own registry, public
addresses), whatever the Pod names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from wasmop.oci import DockerConfig, ImageReference
from wasmop.oci.cache import ContentStore
from wasmop.oci.client import RegistryClients
from wasmop.oci.policy import RegistryPolicy

__all__ = ["NodeImages", "Pull"]

log = logging.getLogger(__name__)

USER_AGENT = "wasmop-node"


@dataclass(frozen=True)
class Pull:
    data: bytes
    layer_digest: str
    from_store: bool  # nothing was fetched: the node had the module
    seconds: float


class NodeImages:
    """One per node agent."""

    def __init__(self, store: ContentStore, policy: RegistryPolicy | None = None) -> None:
        self.store = store
        self.policy = policy or RegistryPolicy()
        self._clients = RegistryClients(self.policy.check, USER_AGENT)
        self._pulls: dict[str, asyncio.Future[Pull]] = {}
        self.fetched = 0  # modules fetched from a registry
        self.reused = 0  # pulls answered by the content store

    async def close(self) -> None:
        await self._clients.close()

    async def pull(
        self, ref: ImageReference, max_bytes: int, credentials: DockerConfig | None = None
    ) -> Pull:
        """The module of ``ref`` (a digest reference: offline from the store once pulled).

        Raises wasmop.oci.RegistryError. Concurrent pulls of one reference share one; a failed pull
        is not remembered, the next Pod tries again.
        """
        key = str(ref)
        running = self._pulls.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Pull] = asyncio.get_running_loop().create_future()
        self._pulls[key] = future
        try:
            result = await self._pull(ref, max_bytes, credentials)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters re-raise it
            raise
        finally:
            self._pulls.pop(key, None)

    async def _pull(
        self, ref: ImageReference, max_bytes: int, credentials: DockerConfig | None
    ) -> Pull:
        started = time.perf_counter()
        async with self._clients.client(credentials) as client:
            pulled = await client.pull(ref, max_bytes, self.store)
        from_store = pulled.from_store
        if from_store:
            self.reused += 1
        else:
            self.fetched += 1
        seconds = time.perf_counter() - started
        log.info(
            "module %s %s in %.0f ms (%d bytes)",
            ref,
            "from the content store" if from_store else "pulled",
            seconds * 1000,
            len(pulled.data),
        )
        return Pull(pulled.data, pulled.image.layer.digest, from_store, seconds)
