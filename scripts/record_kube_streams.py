"""Record real list and watch exchanges with the embedded API server, for the unit tests.

    wasmop-cluster-lock .venv/bin/python scripts/record_kube_streams.py

starts the embedded cluster if it is not up, makes a few objects in a scratch namespace
and records, byte for byte, what kube-apiserver answers to the requests the node agent's
and the gateway's watches make: lists, watch streams with ADDED, MODIFIED, DELETED and
BOOKMARK events, a watch from a version older than a restarted API server's watch cache
(an ERROR event with 410 Expired), a forbidden watch, and a node agent's Node as the node
lifecycle controller marked it Unknown (the agent stopped for a while). It
writes ``tests/unit/data/kube_streams.json``, which ``tests/unit/kube_replay.py`` serves
back to the client under test. The scratch objects are deleted again; Pods bound to a
node name that does not exist never run anywhere.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from wasmop.cluster import manager
from wasmop.cluster.layout import StateLayout
from wasmop.kube import ApiError, Kube, KubeConfig
from wasmop.kube.client import api_path
from wasmop.wellknown import RUNTIME_LABEL

OUT = Path(__file__).resolve().parent.parent / "tests" / "unit" / "data" / "kube_streams.json"
NAMESPACE = "replay"
NODE = "replay-node"  # no such node: the Pods bound to it are only data
NODE_PODS = {"fieldSelector": f"spec.nodeName={NODE}"}
SERVICE = "hello"
WATCH_S = 4  # the API server ends each recorded watch after this, with a bookmark first


def pod(name: str) -> dict[str, Any]:
    """A function Pod as the operator's Deployments make them, bound to NODE."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": SERVICE}},
        "spec": {
            "nodeName": NODE,
            "containers": [
                {
                    "name": "function",
                    "image": "wasmop/runtime:0.1.0",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "volumeMounts": [{"name": "module", "mountPath": "/module"}],
                }
            ],
            "volumes": [{"name": "module", "configMap": {"name": "wasm-hello"}}],
            "tolerations": [{"key": RUNTIME_LABEL, "operator": "Exists"}],
        },
    }


def endpoint_slice(ready: bool) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{SERVICE}-replay",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": SERVICE},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": ["10.244.1.10"],
                "conditions": {"ready": ready, "serving": ready, "terminating": False},
                "nodeName": NODE,
                "targetRef": {"kind": "Pod", "namespace": NAMESPACE, "name": "pod-a"},
            }
        ],
    }


class Recorder:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.exchanges: dict[str, Any] = {}

    async def get(
        self, name: str, path: str, query: dict[str, str], headers: dict[str, str] | None = None
    ) -> Any:
        """One plain request, recorded with its JSON answer."""
        url = f"{self.kube.config.server}{path}?{urlencode(query)}"
        async with self.kube.session.get(
            url, headers={**self.kube._headers(), **(headers or {})}
        ) as response:
            body = await response.json(content_type=None)
            self.exchanges[name] = {
                "request": {"method": "GET", "path": path, "query": query},
                "response": {"status": response.status, "body": body},
            }
            return body

    async def watch(self, name: str, path: str, query: dict[str, str], during: Any = None) -> None:
        """One watch request, recorded line by line until the server ends it; ``during``
        runs once the stream is open."""
        query = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_S),
            **query,
        }
        url = f"{self.kube.config.server}{path}?{urlencode(query)}"
        lines: list[str] = []
        async with self.kube.session.get(url, headers=self.kube._headers()) as response:
            task = asyncio.create_task(during()) if during is not None else None
            async for raw in response.content:
                if raw.strip():
                    lines.append(raw.decode().rstrip("\n"))
            if task is not None:
                await task
            self.exchanges[name] = {
                "request": {"method": "GET", "path": path, "query": query},
                "response": {"status": response.status, "lines": lines},
            }


async def clean_up(kube: Kube) -> None:
    """Remove what an earlier recording left. Pods bound to a node that does not exist
    would wait for a kubelet to confirm their deletion: they go with grace 0."""
    listing = await kube.list(api_path("v1", "pods"), **NODE_PODS)
    for item in listing["items"]:
        meta = item["metadata"]
        path = api_path("v1", "pods", meta["namespace"], meta["name"])
        try:
            await kube.delete(path, {"gracePeriodSeconds": 0})
        except ApiError as exc:
            if not exc.not_found:
                raise
    namespace = api_path("v1", "namespaces", name=NAMESPACE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            await kube.delete(namespace)
        except ApiError as exc:
            if exc.not_found:
                return
            if not exc.conflict:
                raise
        await asyncio.sleep(1.0)
    raise RuntimeError(f"namespace {NAMESPACE} is still being deleted after 120 s")


async def record(kube: Kube, layout: StateLayout) -> dict[str, Any]:
    rec = Recorder(kube)
    pods = api_path("v1", "pods", NAMESPACE)
    await clean_up(kube)
    await kube.create(
        api_path("v1", "namespaces"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    )
    for name in ("pod-a", "pod-b"):
        await kube.create(pods, pod(name))
    await kube.create(
        api_path("v1", "services", NAMESPACE),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 8080}]},
        },
    )

    # The node agent's Pod watch: list, then a watch that sees one of each change.
    node_pods = api_path("v1", "pods")
    listing = await rec.get("pods_list", node_pods, NODE_PODS)
    version = listing["metadata"]["resourceVersion"]

    async def change_pods() -> None:
        await kube.create(pods, pod("pod-c"))
        await kube.patch(f"{pods}/pod-a", {"metadata": {"labels": {"revision": "2"}}})
        await kube.delete(f"{pods}/pod-b", {"gracePeriodSeconds": 0})

    await rec.watch("pods_watch", node_pods, {**NODE_PODS, "resourceVersion": version}, change_pods)
    await rec.get("pods_relist", node_pods, NODE_PODS)
    # A restarted API server's watch cache starts at the current version: a watch from the
    # first list's version now answers 200 and then an ERROR event with 410 Expired.
    await asyncio.to_thread(manager.control, layout, "restart", name="kube-apiserver")
    await rec.watch("pods_watch_expired", node_pods, {**NODE_PODS, "resourceVersion": version})
    await rec.get(
        "pods_watch_forbidden",
        node_pods,
        {"watch": "1"},
        headers={"Impersonate-User": "system:anonymous"},
    )

    # A node agent's own Node as the node lifecycle controller marks it once the agent
    # has stopped renewing its Lease for longer than the grace period.
    node = manager.load_settings(layout).node_names()[-1]
    nodes, own = api_path("v1", "nodes"), {"fieldSelector": f"metadata.name={node}"}
    await asyncio.to_thread(manager.control, layout, "stop", name=node, signal="KILL")
    try:
        grace = manager.load_settings(layout).node_monitor_grace_seconds
        deadline = time.monotonic() + grace + 30
        while time.monotonic() < deadline:
            listing = await rec.get("node_unknown_list", nodes, own)
            conditions = listing["items"][0]["status"]["conditions"]
            if any(c["type"] == "Ready" and c["status"] == "Unknown" for c in conditions):
                break
            await asyncio.sleep(1.0)
        else:
            raise RuntimeError(f"{node} was not marked Unknown within {grace + 30} s")
    finally:
        await asyncio.to_thread(manager.control, layout, "start", name=node)

    # The gateway's watches: Services and EndpointSlices everywhere.
    services = await rec.get("services_list", api_path("v1", "services"), {})
    await rec.watch(
        "services_watch",
        api_path("v1", "services"),
        {"resourceVersion": services["metadata"]["resourceVersion"]},
    )
    slices_path = api_path("discovery.k8s.io/v1", "endpointslices")
    slices = await rec.get("endpointslices_list", slices_path, {})
    own_slices = api_path("discovery.k8s.io/v1", "endpointslices", NAMESPACE)

    async def change_slices() -> None:
        await kube.create(own_slices, endpoint_slice(ready=False))
        await kube.patch(
            f"{own_slices}/{SERVICE}-replay", {"endpoints": endpoint_slice(True)["endpoints"]}
        )

    await rec.watch(
        "endpointslices_watch",
        slices_path,
        {"resourceVersion": slices["metadata"]["resourceVersion"]},
        change_slices,
    )
    return rec.exchanges


async def main() -> int:
    layout = StateLayout.default()
    started = not manager.is_running(layout)
    manager.up(layout, timeout=180)
    try:
        async with Kube(KubeConfig.from_file(layout.admin_kubeconfig)) as kube:
            try:
                exchanges = await record(kube, layout)
            finally:
                await clean_up(kube)
            version = await kube.get("/version")
    finally:
        if started:
            manager.down(layout)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "recorded": {
                    "by": "scripts/record_kube_streams.py",
                    "server": f"kube-apiserver {version.get('gitVersion')}",
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                "exchanges": exchanges,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {len(exchanges)} exchanges to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
