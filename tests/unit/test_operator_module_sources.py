"""What a namespace's watch of module sources makes of its events: which changes send
functions back to the work queue, and which are the listing or an echo of a relist."""

from __future__ import annotations

import asyncio
from typing import Any

from wasmop.kube import WatchEvent
from wasmop.operator.module_sources import ModuleSources, WatchedNamespace


def configmap(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": version}}


async def synced_namespace(*objects: dict[str, Any]) -> WatchedNamespace:
    """A namespace whose watch listed ``objects`` and then synced."""
    watched = WatchedNamespace()
    watched.synced = asyncio.get_running_loop().create_future()
    for obj in objects:
        assert watched.apply(WatchEvent("ADDED", obj)) is None
    watched.synced.set_result(True)
    return watched


async def test_the_listing_reconciles_nothing() -> None:
    watched = WatchedNamespace()
    watched.synced = asyncio.get_running_loop().create_future()
    watched.users["fn"] = "wasm-hello"
    assert watched.apply(WatchEvent("ADDED", configmap("wasm-hello", "1"))) is None
    assert watched.objects["wasm-hello"]["metadata"]["resourceVersion"] == "1"


async def test_a_change_of_a_named_source_names_its_functions() -> None:
    watched = await synced_namespace(configmap("wasm-hello", "1"), configmap("other", "2"))
    watched.users.update({"a": "wasm-hello", "b": "wasm-hello", "c": "other-source"})
    assert watched.apply(WatchEvent("MODIFIED", configmap("wasm-hello", "3"))) == "wasm-hello"
    assert watched.named_by("wasm-hello") == ["a", "b"]
    assert watched.objects["wasm-hello"]["metadata"]["resourceVersion"] == "3"


async def test_a_source_that_appears_or_goes_away_is_a_change() -> None:
    watched = await synced_namespace()
    watched.users["a"] = "wasm-hello"
    assert watched.apply(WatchEvent("ADDED", configmap("wasm-hello", "4"))) == "wasm-hello"
    assert watched.apply(WatchEvent("DELETED", configmap("wasm-hello", "5"))) == "wasm-hello"
    assert "wasm-hello" not in watched.objects


async def test_a_relist_of_the_same_version_and_unnamed_configmaps_change_nothing() -> None:
    watched = await synced_namespace(configmap("wasm-hello", "1"))
    watched.users["a"] = "wasm-hello"
    assert watched.apply(WatchEvent("MODIFIED", configmap("wasm-hello", "1"))) is None
    assert watched.apply(WatchEvent("MODIFIED", configmap("leader-lock", "9"))) is None
    assert watched.apply(WatchEvent("DELETED", configmap("never-seen", "9"))) is None


async def test_the_last_function_forgotten_ends_the_namespaces_watch_after_a_while() -> None:
    sources = ModuleSources(kube=None, linger_s=0.05)  # type: ignore[arg-type]
    watched = sources.namespaces["ns"] = WatchedNamespace()
    watched.task = asyncio.create_task(asyncio.sleep(60))
    watched.users.update({"a": "wasm-hello", "b": "wasm-hello"})
    sources.forget("ns", "a")
    sources.forget("ns", "b")
    await asyncio.sleep(0.01)
    assert "ns" in sources.namespaces and not watched.task.cancelled()  # it lingers
    await asyncio.sleep(0.1)
    assert "ns" not in sources.namespaces and watched.task.cancelled()
    sources.forget("elsewhere", "x")  # nothing watched there: nothing to do


async def test_a_function_back_within_the_while_keeps_the_watch() -> None:
    """Functions deleted and created again soon (a benchmark's bursts) keep one watch
    instead of listing the namespace's ConfigMaps anew each time."""
    sources = ModuleSources(kube=None, linger_s=0.05)  # type: ignore[arg-type]
    watched = sources.namespaces["ns"] = WatchedNamespace()
    watched.task = asyncio.create_task(asyncio.sleep(60))
    watched.synced = asyncio.get_running_loop().create_future()
    watched.synced.set_result(True)
    watched.objects["wasm-hello"] = configmap("wasm-hello", "1")
    watched.users["a"] = "wasm-hello"
    sources.forget("ns", "a")
    assert await sources.lookup("ns", "wasm-hello", "b") == (True, watched.objects["wasm-hello"])
    await asyncio.sleep(0.1)
    assert sources.namespaces["ns"] is watched and not watched.task.done()
    watched.task.cancel()
