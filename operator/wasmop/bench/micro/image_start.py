"""Benchmark (``make bench-images``): what taking a module from a registry costs a Pod.

Each repetition makes two fresh variants of the workload (its bytes plus a custom
section with a new id, so no node has either), pushes one to the registry and puts the
other in a ConfigMap, and starts bare Pods of each on one wasm node: first one Pod, then,
once it is Ready, ``--later`` more at once. A Pod's start is from the client's create
request to the first watch event that shows it Ready (client clock, ms), as in
``make bench-nodes``:

* image, first Pod: the node pulls the module (manifest and blob, verified) and compiles it;
* image, later Pods: the module is on the node (content store) and compiled (memory);
* ConfigMap, first Pod: the node reads the ConfigMap and compiles the module;
* ConfigMap, later Pods: the ConfigMap is cached (immutable) and the module compiled.

The two kinds alternate which goes first. Reported: n, p50 and its 95 % bootstrap
interval for each, and the ratios cached image / later ConfigMap and first image / first
ConfigMap with their intervals; the target is a cached start within 1.2 x a ConfigMap
start.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import uuid
from typing import Any

from wasmop.bench.clock import now_ms
from wasmop.bench.deploy import (
    RUNTIME_IMAGE,
    TOLERATION,
    create_namespace,
    delete_namespace,
    ensure_image,
    first_ready_ms,
    module_variant,
)
from wasmop.bench.micro.checks import Check, measure_and_report, print_checks
from wasmop.bench.stats import describe, ratio_of
from wasmop.bench.watch import Recorder
from wasmop.cluster import manager
from wasmop.cluster.layout import StateLayout
from wasmop.kube import Kube, KubeConfig
from wasmop.kube.client import api_path
from wasmop.oci import ImageReference
from wasmop.runtime.workloads import ensure_built, load_manifest

CACHED_RATIO_TARGET = 1.2
KINDS = ("image", "configmap")


def pod_manifest(name: str, node: str, kind: str, where: str, digest: str) -> dict[str, Any]:
    """A bare function Pod on ``node`` whose module is the image ``where`` (by digest) or
    the ConfigMap ``where``; ``digest`` is the module's sha256, as the operator pins it."""
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 10}
    env = [{"name": "WASMOP_MODULE_SHA256", "value": digest}]
    container: dict[str, Any] = {
        "name": "function",
        "image": RUNTIME_IMAGE,
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": probe,
        "env": env,
    }
    spec: dict[str, Any] = {
        "tolerations": [TOLERATION],
        "terminationGracePeriodSeconds": 1,
        "nodeSelector": {"kubernetes.io/hostname": node},
        "containers": [container],
    }
    if kind == "image":
        env.append({"name": "WASMOP_MODULE_IMAGE", "value": where})
    else:
        container["volumeMounts"] = [{"name": "module", "mountPath": "/module"}]
        spec["volumes"] = [{"name": "module", "configMap": {"name": where}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench-images", "kind": kind}},
        "spec": spec,
    }


async def start_pods(
    kube: Kube, recorder: Recorder, namespace: str, manifests: list[dict[str, Any]]
) -> list[float]:
    """Create the Pods at once; each one's create-to-Ready in ms."""
    path = api_path("v1", "pods", namespace)

    async def one(body: dict[str, Any]) -> tuple[str, float]:
        t = now_ms()
        await kube.create(path, body)
        return body["metadata"]["name"], t

    created = dict(await asyncio.gather(*(one(m) for m in manifests)))

    def ready(rec: Recorder) -> bool:
        return all(
            any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in ((rec.get("Pod", n) or {}).get("status") or {}).get("conditions") or []
            )
            for n in created
        )

    await recorder.wait_for(ready, 120)
    return [first_ready_ms(recorder.rows, "Pod", n, t) - t for n, t in created.items()]


async def configmap_of(kube: Kube, namespace: str, name: str, data: bytes) -> str:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "immutable": True,
        "binaryData": {"module.wasm": base64.b64encode(data).decode()},
    }
    await kube.create(api_path("v1", "configmaps", namespace), body)
    return name


async def run(workload: str, repetitions: int, later: int) -> dict[str, list[float]]:
    import hashlib

    layout = StateLayout.default()
    node = manager.load_settings(layout).node_names()[0]
    module = ensure_built(load_manifest())[workload].wasm_path.read_bytes()
    namespace = f"bench-images-{uuid.uuid4().hex[:6]}"
    results: dict[str, list[float]] = {
        f"{kind} {when}": [] for kind in KINDS for when in ("first", "later")
    }
    async with Kube(KubeConfig.load(), max_connections=100) as kube:
        await create_namespace(kube, namespace)
        recorder = Recorder(kube, namespace, kinds=("Pod",))
        await recorder.start()
        try:
            for rep in range(repetitions):
                order = KINDS if rep % 2 == 0 else KINDS[::-1]
                for kind in order:
                    data = module_variant(module, f"bench-images-{namespace}-{rep}-{kind}")
                    digest = hashlib.sha256(data).hexdigest()
                    if kind == "image":
                        tagged = await ensure_image(workload, data)
                        where = await pinned(tagged)
                    else:
                        where = await configmap_of(kube, namespace, f"m-{rep}", data)
                    stem = f"{kind[:2]}-{rep}"
                    first = [pod_manifest(f"{stem}-0", node, kind, where, digest)]
                    results[f"{kind} first"] += await start_pods(kube, recorder, namespace, first)
                    more = [
                        pod_manifest(f"{stem}-{i}", node, kind, where, digest)
                        for i in range(1, later + 1)
                    ]
                    results[f"{kind} later"] += await start_pods(kube, recorder, namespace, more)
        finally:
            await recorder.stop()
            await delete_namespace(kube, namespace)
    return results


async def pinned(tagged: str) -> str:
    """The tag resolved to its digest, as the operator gives it to Pods."""
    from wasmop.oci import RegistryClient

    ref = ImageReference.parse(tagged)
    async with RegistryClient(user_agent="wasmop-bench") as client:
        return str((await client.resolve(ref)).pinned)


def report(results: dict[str, list[float]]) -> bool:
    print("\nPod create-to-Ready on one wasm node by module source [ms] (p50 with 95 % CI)")
    print(f"{'':<20}{'n':>5}{'p50':>10}{'CI low':>10}{'CI high':>10}{'p95':>10}{'max':>10}")
    for label, values in results.items():
        d = describe(values, ci=True)
        print(
            f"{label:<20}{d['n']:>5}{d['p50']:>10.1f}{d['p50_ci_low']:>10.1f}"
            f"{d['p50_ci_high']:>10.1f}{d['p95']:>10.1f}{d['max']:>10.1f}"
        )
    cached = ratio_of(results["image later"], results["configmap later"])
    first = ratio_of(results["image first"], results["configmap first"])
    print("\nratios of p50 (95 % CI)")
    for label, r in (
        ("image cached / ConfigMap later", cached),
        ("image first (pull + compile) / ConfigMap first", first),
    ):
        print(f"  {label:<48}{r['value']:>6.2f}  [{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
    check = Check(
        "cached image start / ConfigMap start (p50)", cached["value"], CACHED_RATIO_TARGET, "x"
    )
    ok = print_checks([check])
    if cached["ci_high"] > CACHED_RATIO_TARGET:
        print("  (the 95 % interval of the ratio crosses the bound)")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="hello", help="built workload (default hello)")
    parser.add_argument("--repetitions", type=int, default=10, help="per source (default 10)")
    parser.add_argument("--later", type=int, default=3, help="Pods after the first (default 3)")
    args = parser.parse_args(argv)
    return measure_and_report(run(args.workload, args.repetitions, args.later), report)


if __name__ == "__main__":
    sys.exit(main())
