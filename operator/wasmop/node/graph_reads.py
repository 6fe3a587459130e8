"""API calls a node may make for its Pods only, once the Node authorizer knows of them.

The Node authorizer lets a node read a ConfigMap, or ask for a ServiceAccount's token,
only for Pods bound to it, and learns of a binding from its own graph, which can trail
the Pod's arrival at the agent by a moment: "no relationship found" is retried briefly,
as a kubelet would, before it counts as an answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from wasmop.kube import ApiError

GRAPH_RETRIES = 60  # about 20 s of "no relationship found" before a Pod reports it

T = TypeVar("T")


def _graph_lag(exc: ApiError) -> bool:
    return exc.status == 403 and "no relationship" in exc.message


async def for_pod(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, retried while the Node authorizer has not yet seen the Pod's binding."""
    for attempt in range(GRAPH_RETRIES):
        try:
            return await call()
        except ApiError as exc:
            if not _graph_lag(exc) or attempt == GRAPH_RETRIES - 1:
                raise
            await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
    raise AssertionError("unreachable")
