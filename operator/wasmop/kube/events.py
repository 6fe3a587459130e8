"""Kubernetes Events, posted in the background so no caller waits on them."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

import aiohttp

from wasmop.kube.client import ApiError, Kube, api_path

log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Posts core/v1 Events about objects, as ``component`` on ``instance``."""

    def __init__(self, kube: Kube, component: str, instance: str) -> None:
        self.kube = kube
        self.component = component
        self.instance = instance
        self._tasks: set[asyncio.Task[None]] = set()

    def record(
        self,
        obj: dict[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        field_path: str | None = None,
    ) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        involved = {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", "Pod"),
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
        }
        if field_path:
            involved["fieldPath"] = field_path
        now = _now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": self.component, "host": self.instance},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        task = asyncio.create_task(self._post(namespace, body, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, namespace: str, body: dict[str, Any], reason: str) -> None:
        try:
            await self.kube.create(api_path("v1", "events", namespace), body)
        except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            if isinstance(exc, ApiError) and exc.status == 403 and "being terminated" in str(exc):
                # The namespace is going away, and its Events with it: nothing is lost.
                log.debug("event %s not recorded: %s", reason, exc)
                return
            # Events are how a user learns why a Pod or function fails: a lost one is
            # worth a warning in the log that holds the same facts.
            log.warning(
                "event %s about %s/%s not recorded: %s",
                reason,
                namespace,
                body["involvedObject"]["name"],
                exc,
            )

    async def drain(self, grace_s: float = 2.0) -> None:
        """Give pending posts a moment at shutdown."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
