"""Kubernetes Events, posted in the background so no caller waits on them.

The same occurrence recorded again (a readiness probe failing every period, say) does
not make a new Event each time: like Kubernetes' own recorders, the Event of that series
gets its ``count`` raised and ``lastTimestamp`` moved, so ``kubectl describe`` shows
"x12 over 2m" instead of a page of copies and the API server stores one object. Records
that arrive while a post is in flight are folded into the next write.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from wasmop.kube.client import ApiError, Kube, api_path

log = logging.getLogger(__name__)

# Series remembered at once (least recently recorded forgotten first): a forgotten one
# starts a new Event, as client-go's event cache does.
MAX_SERIES = 4096
MAX_MESSAGE = 1024


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


SeriesKey = tuple[str, str, str, str, str, str, str]


@dataclass
class EventSeries:
    """One kind of occurrence about one object: how often it happened, how often the
    API object says it did."""

    recorded: int = 0
    posted: int = 0
    name: str | None = None  # the Event object, once created
    last: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class EventRecorder:
    """Posts core/v1 Events about objects, as ``component`` on ``instance``."""

    def __init__(self, kube: Kube, component: str, instance: str) -> None:
        self.kube = kube
        self.component = component
        self.instance = instance
        self._tasks: set[asyncio.Task[None]] = set()
        self._series: OrderedDict[SeriesKey, EventSeries] = OrderedDict()

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
        kind = "Warning" if warning else "Normal"
        message = message[:MAX_MESSAGE]
        key: SeriesKey = (
            namespace,
            involved["uid"] or f"{involved['kind']}/{involved['name']}",
            field_path or "",
            kind,
            reason,
            message,
            self.instance,
        )
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = EventSeries()
            if len(self._series) > MAX_SERIES:
                self._series.popitem(last=False)
        else:
            self._series.move_to_end(key)
        series.recorded += 1
        series.last = _now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": self.component, "host": self.instance},
            "reportingComponent": self.component,
            "reportingInstance": self.instance,
            "firstTimestamp": series.last,
        }
        task = asyncio.create_task(self._post(namespace, series, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, namespace: str, series: EventSeries, body: dict[str, Any]) -> None:
        async with series.lock:
            if series.posted >= series.recorded:
                return  # an earlier task of this series wrote this occurrence already
            count, last = series.recorded, series.last
            try:
                if series.name is not None:
                    try:
                        path = api_path("v1", "events", namespace, series.name)
                        await self.kube.patch(path, {"count": count, "lastTimestamp": last})
                    except ApiError as exc:
                        if not exc.not_found:
                            raise
                        series.name = None  # expired (Events live an hour): start anew
                if series.name is None:
                    created = await self.kube.create(
                        api_path("v1", "events", namespace),
                        {**body, "count": count, "lastTimestamp": last},
                    )
                    series.name = created["metadata"]["name"]
                series.posted = count
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                if (
                    isinstance(exc, ApiError)
                    and exc.status == 403
                    and "being terminated" in str(exc)
                ):
                    # The namespace is going away, and its Events with it: nothing is lost.
                    log.debug("event %s not recorded: %s", body["reason"], exc)
                    return
                # Events are how a user learns why a Pod or function fails: a lost one is
                # worth a warning in the log that holds the same facts.
                log.warning(
                    "event %s about %s/%s not recorded: %s",
                    body["reason"],
                    namespace,
                    body["involvedObject"]["name"],
                    exc,
                )

    async def drain(self, grace_s: float = 2.0) -> None:
        """Give pending posts a moment at shutdown."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
