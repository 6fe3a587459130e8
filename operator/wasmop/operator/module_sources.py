"""The ConfigMaps that functions name as their module source, kept by watches.

A reconcile needs its module's bytes before it can build the Deployment (the digest
names the revision). Reading the source ConfigMap on every reconcile put a round trip,
shared only while in flight, in front of each apply of a burst, and the applies went
out in clumps. Instead, one list-and-watch per function namespace keeps that
namespace's ConfigMaps (but not the operator's own module ConfigMaps) with their
resourceVersion, as an informer does: a reconcile looks its source up without a
request, and a source that changes, appears or goes away sends the functions that name
it back to the work queue (``on_change``).

A namespace is watched from the first function that names a ConfigMap there until a
minute after the last such function is forgotten (functions deleted and created again
soon, as a benchmark's bursts are, keep one watch instead of a new listing each time).
Until its watch has listed, or when it cannot list (the operator is not enabled in the
namespace: 403), a lookup says so and the caller reads the ConfigMap itself; a watch
that could not start is tried again at the next lookup.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wasmop.kube import ApiError, Kube
from wasmop.kube.client import WatchEvent, api_path
from wasmop.operator.owned_objects import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger(__name__)

# The operator's own module ConfigMaps (large, immutable, never a source) stay out.
NOT_OURS = f"{LABEL_MANAGED_BY}!={MANAGED_BY}"
WATCH_TIMEOUT_S = 600
# How long a namespace's watch outlives the last function that took a ConfigMap there.
LINGER_S = 60.0


@dataclass
class WatchedNamespace:
    """One namespace's ConfigMaps as its watch last reported them."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> ConfigMap
    # Resolves True once the watch has listed, False if it could not.
    synced: asyncio.Future[bool] | None = None
    task: asyncio.Task[None] | None = None
    # function name -> the ConfigMap it names (its last reconcile's lookup)
    users: dict[str, str] = field(default_factory=dict)
    # The watch's end, due once the last user has gone (LINGER_S).
    ending: asyncio.TimerHandle | None = None

    def apply(self, event: WatchEvent) -> str | None:
        """Take in one watch event; the name of a ConfigMap whose contents changed for
        a function that names it (None when nothing anyone uses changed)."""
        obj = event.object
        name = obj["metadata"]["name"]
        if event.type == "DELETED":
            changed = self.objects.pop(name, None) is not None
        else:
            before = self.objects.get(name)
            self.objects[name] = obj
            changed = before is None or before["metadata"].get("resourceVersion") != obj[
                "metadata"
            ].get("resourceVersion")
        if not changed or self.synced is None or not self.synced.done():
            return None  # the first listing: nothing was reconciled from it yet
        return name if name in self.users.values() else None

    def named_by(self, configmap: str) -> list[str]:
        return sorted(f for f, name in self.users.items() if name == configmap)


@dataclass
class ModuleSources:
    """Source ConfigMaps by namespace, one watch each (see the module's docstring)."""

    kube: Kube
    # Called with (namespace, function names) when a ConfigMap they name changed.
    on_change: Callable[[str, list[str]], None] = lambda namespace, names: None
    namespaces: dict[str, WatchedNamespace] = field(default_factory=dict)
    linger_s: float = LINGER_S

    async def lookup(
        self, namespace: str, name: str, function: str
    ) -> tuple[bool, dict[str, Any] | None]:
        """(True, the ConfigMap or None if there is none) from the namespace's watch, or
        (False, None) when the watch cannot tell (the caller reads it itself).
        ``function`` names it from now on: it is reconciled again when it changes."""
        watched = self.namespaces.get(namespace)
        if watched is None:
            watched = self.namespaces[namespace] = WatchedNamespace()
        watched.users[function] = name
        if watched.ending is not None:
            watched.ending.cancel()
            watched.ending = None
        if watched.task is None or watched.task.done():
            self._start(namespace, watched)
        assert watched.synced is not None
        if not await asyncio.shield(watched.synced):
            return False, None
        return True, watched.objects.get(name)

    def forget(self, namespace: str, function: str) -> None:
        """The function is gone: a namespace no function takes a ConfigMap from any
        more is watched no longer, after :data:`LINGER_S`."""
        watched = self.namespaces.get(namespace)
        if watched is None or watched.users.pop(function, None) is None or watched.users:
            return
        if watched.ending is None:
            loop = asyncio.get_running_loop()
            watched.ending = loop.call_later(self.linger_s, self._end, namespace, watched)

    def _end(self, namespace: str, watched: WatchedNamespace) -> None:
        watched.ending = None
        if watched.users or self.namespaces.get(namespace) is not watched:
            return
        del self.namespaces[namespace]
        if watched.task is not None:
            watched.task.cancel()

    def _start(self, namespace: str, watched: WatchedNamespace) -> None:
        watched.objects.clear()
        synced: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        watched.synced = synced
        watched.task = asyncio.create_task(
            self._watch(namespace, watched, synced), name=f"module sources in {namespace}"
        )

    async def _watch(
        self, namespace: str, watched: WatchedNamespace, synced: asyncio.Future[bool]
    ) -> None:
        path = api_path("v1", "configmaps", namespace)

        def give_up(exc: BaseException) -> bool:
            # Before the first listing the lookups wait for it: they read for themselves
            # instead. Later, only a namespace the operator may no longer read ends it.
            return not synced.done() or (isinstance(exc, ApiError) and exc.status == 403)

        try:
            async for event in self.kube.list_and_watch(
                path,
                labelSelector=NOT_OURS,
                watch_timeout_s=WATCH_TIMEOUT_S,
                give_up=give_up,
            ):
                if event.type == "SYNCED":
                    if not synced.done():
                        synced.set_result(True)
                    continue
                changed = watched.apply(event)
                if changed is not None:
                    self.on_change(namespace, watched.named_by(changed))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure: the lookups read for themselves
            log.warning("ConfigMaps of %s not watched: %s", namespace, exc)
        finally:
            if not synced.done():
                synced.set_result(False)
            watched.objects.clear()

    async def close(self) -> None:
        for watched in self.namespaces.values():
            if watched.ending is not None:
                watched.ending.cancel()
        tasks = [w.task for w in self.namespaces.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.namespaces.clear()
