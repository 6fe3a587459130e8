"""An event loop on a background thread, shared by notebooks, scripts and tests.

The measurement code is asyncio (watches and API calls wait on the network), but a
Jupyter kernel already runs its own loop, where ``asyncio.run`` refuses to start. A
:class:`BenchSession` owns a private loop on a daemon thread plus one API connection
pool; synchronous callers hand it coroutines with :meth:`BenchSession.run`, and
background tasks (watch recorders, probes) keep running between notebook cells.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from wasmop.kube import Kube, KubeConfig

if TYPE_CHECKING:
    from wasmop.bench.watch import Recorder

log = logging.getLogger(__name__)

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run one coroutine to completion from synchronous code, inside a kernel or not."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop is running on this thread (a Jupyter kernel): use a fresh one elsewhere.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout)


class BenchSession:
    """A private event loop thread with one Kubernetes API connection pool.

    Use as a context manager, or call :meth:`close` when done.
    """

    def __init__(self, kubeconfig: Path | str | None = None, max_connections: int = 200) -> None:
        self.config = KubeConfig.load(kubeconfig)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="wasmop-bench-loop", daemon=True
        )
        self._thread.start()
        # Watches of 100 functions plus 100 concurrent creates need more than the
        # default pool, or requests queue in the client and inflate the latencies.
        self.kube: Kube = self.run(self._open(max_connections))
        self._closed = False

    async def _open(self, max_connections: int) -> Kube:
        kube = Kube(self.config, user_agent="wasmop-bench", max_connections=max_connections)
        await kube.__aenter__()
        return kube

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start a coroutine on the session's loop; returns at once."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the session's loop and wait for its result."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("BenchSession.run called from its own loop; await instead")
        return self.submit(coro).result(timeout)

    @contextmanager
    def recorder(
        self,
        namespace: str | None,
        kinds: tuple[str, ...] | None = None,
        sync_timeout: float = 30.0,
    ) -> Iterator[Recorder]:
        """Record watch events of ``namespace`` (and Nodes) for the ``with`` block."""
        from wasmop.bench.watch import DEFAULT_KINDS, Recorder

        rec = Recorder(self.kube, namespace, kinds or DEFAULT_KINDS)
        self.run(rec.start(sync_timeout))
        try:
            yield rec
        finally:
            self.run(rec.stop())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.run(self.kube.close(), timeout=10)
        except Exception as exc:  # closing must not mask the caller's error
            log.debug("closing the API session failed: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> BenchSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
