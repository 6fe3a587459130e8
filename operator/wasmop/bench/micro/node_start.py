"""Benchmark (``make bench-nodes``): how fast wasm nodes start Pods, and what an idle Pod
costs them.

Bare Pods (no Deployment, no operator) of the hello workload are created in a scratch
namespace; a watch stamps each Pod's first Ready event with the client's clock in
milliseconds. One Pod at a time, then 100 at once; resident memory of the node agents
with no Pods and with 100 idle Pods gives the cost per Pod.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

import psutil

from wasmop.bench.clock import now_ms
from wasmop.bench.deploy import (
    RUNTIME_IMAGE,
    TOLERATION,
    create_namespace,
    delete_namespace,
    ensure_module,
    first_ready_ms,
)
from wasmop.bench.micro.checks import Check, measure_and_report, print_checks, print_quantiles
from wasmop.bench.process_sampler import component_pid
from wasmop.bench.stats import describe
from wasmop.bench.watch import Recorder
from wasmop.cluster import manager
from wasmop.cluster.layout import StateLayout
from wasmop.kube import ApiError, Kube, KubeConfig
from wasmop.kube.client import api_path

ONE_POD_P50_TARGET_MS = 300.0
BATCH_P99_TARGET_MS = 3000.0
IDLE_POD_TARGET_MIB = 2.0


def pod_manifest(name: str, configmap: str) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 10}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench-nodes"}},
        "spec": {
            "tolerations": [TOLERATION],
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "function",
                    "image": RUNTIME_IMAGE,
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": probe,
                    "volumeMounts": [{"name": "module", "mountPath": "/module"}],
                }
            ],
            "volumes": [{"name": "module", "configMap": {"name": configmap}}],
        },
    }


def agents_rss_mib(nodes: list[str]) -> dict[str, float]:
    result = {}
    for node in nodes:
        pid = component_pid(node)
        if pid:
            result[node] = psutil.Process(pid).memory_info().rss / 2**20
    return result


async def create_pods(
    kube: Kube, namespace: str, names: list[str], configmap: str
) -> dict[str, float]:
    path = api_path("v1", "pods", namespace)

    async def one(name: str) -> tuple[str, float]:
        t = now_ms()
        await kube.create(path, pod_manifest(name, configmap))
        return name, t

    return dict(await asyncio.gather(*(one(n) for n in names)))


async def wait_ready(recorder: Recorder, names: list[str], timeout_s: float) -> None:
    def all_ready(rec: Recorder) -> bool:
        for name in names:
            pod = rec.get("Pod", name)
            if pod is None or not any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in (pod.get("status") or {}).get("conditions") or []
            ):
                return False
        return True

    await recorder.wait_for(all_ready, timeout_s)


async def delete_pods(kube: Kube, recorder: Recorder, namespace: str, names: list[str]) -> None:
    for name in names:
        try:
            await kube.delete(api_path("v1", "pods", namespace, name))
        except ApiError as exc:
            if not exc.not_found:
                raise
    await recorder.wait_for(lambda rec: all(rec.get("Pod", n) is None for n in names), 60)


async def run(single: int, batch: int, idle_s: float) -> dict[str, Any]:
    layout = StateLayout.default()
    nodes = manager.load_settings(layout).node_names()
    namespace = f"bench-nodes-{uuid.uuid4().hex[:6]}"
    async with Kube(KubeConfig.load(), max_connections=200) as kube:
        await create_namespace(kube, namespace)
        recorder = Recorder(kube, namespace, kinds=("Pod",))
        await recorder.start()
        try:
            configmap = await ensure_module(kube, namespace, "hello")
            singles = []
            for i in range(single):
                name = f"single-{i}"
                created = await create_pods(kube, namespace, [name], configmap)
                await wait_ready(recorder, [name], 60)
                ready = first_ready_ms(recorder.rows, "Pod", name, created[name])
                singles.append(ready - created[name])
                await delete_pods(kube, recorder, namespace, [name])
            await asyncio.sleep(idle_s)
            rss_before = agents_rss_mib(nodes)
            names = [f"batch-{i:03d}" for i in range(batch)]
            created = await create_pods(kube, namespace, names, configmap)
            await wait_ready(recorder, names, 120)
            ready = {n: first_ready_ms(recorder.rows, "Pod", n, created[n]) for n in names}
            batch_latency = [ready[n] - created[n] for n in names]
            placement = {
                n: (recorder.get("Pod", n) or {}).get("spec", {}).get("nodeName") for n in names
            }
            first_create = min(created.values())
            per_node = {}
            for node in nodes:
                on_node = [ready[n] for n in names if placement[n] == node]
                if on_node:
                    per_node[node] = len(on_node) / ((max(on_node) - first_create) / 1000)
            await asyncio.sleep(idle_s)
            rss_after = agents_rss_mib(nodes)
        finally:
            await recorder.stop()
            await delete_namespace(kube, namespace)
    added = sum(rss_after.values()) - sum(rss_before.values())
    return {
        "single_ms": singles,
        "batch_ms": batch_latency,
        "pods_per_second_per_node": per_node,
        "rss_before_mib": rss_before,
        "rss_after_mib": rss_after,
        "mib_per_idle_pod": added / batch if batch else float("nan"),
        "batch": batch,
    }


def report(result: dict[str, Any]) -> bool:
    batch = result["batch"]
    print_quantiles(
        "Pod create-to-Ready on wasm nodes (client-side watch timestamps)",
        {"1 Pod at a time": result["single_ms"], f"{batch} Pods at once": result["batch_ms"]},
    )
    print("\nPods started per second per node (batch)")
    for node, rate in result["pods_per_second_per_node"].items():
        print(f"  {node:<24}{rate:>8.1f}")
    print("\nnode agent resident memory [MiB]      idle    with pods")
    for node, before in result["rss_before_mib"].items():
        after = result["rss_after_mib"].get(node, float("nan"))
        print(f"  {node:<32}{before:>8.1f}{after:>10.1f}")
    per_pod = result["mib_per_idle_pod"]
    print(f"  per idle Pod{per_pod:>38.2f}")
    one, many = describe(result["single_ms"]), describe(result["batch_ms"])
    return print_checks(
        [
            Check("1 Pod create-to-Ready p50", one["p50"], ONE_POD_P50_TARGET_MS, "ms"),
            Check(
                f"{batch} Pods at once, all Ready, p99",
                many["p99"],
                BATCH_P99_TARGET_MS,
                "ms",
                holds_also=many["n"] == batch,
            ),
            Check("memory per idle Pod", per_pod, IDLE_POD_TARGET_MIB, "MiB"),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--single", type=int, default=20, help="single-Pod repetitions (default 20)"
    )
    parser.add_argument("--batch", type=int, default=100, help="Pods created at once (default 100)")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="settle time before RSS")
    args = parser.parse_args(argv)
    return measure_and_report(run(args.single, args.batch, args.idle_seconds), report)


if __name__ == "__main__":
    sys.exit(main())
