#!/usr/bin/env python3
"""End-to-end demo on the embedded cluster: every sample workload as a WasmFunction.

Deploys each benchmark workload from ``operator/config/samples/`` (each module pushed to
the embedded registry under the image its sample names), invokes it through the
gateway with the sample request from ``functions/manifest.yaml`` (fault workloads must
fail the documented way), scales one function up and down, rolls another to a new
version, and prints one row per function. Times are client-side watch timestamps (ms).

    make demo                       # cluster up, then this script
    python scripts/demo.py --keep   # leave the functions running afterwards
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import sys
import time
from typing import Any

import aiohttp
import yaml
from wasmop.bench.clock import now_ms
from wasmop.bench.deploy import (
    create_namespace,
    delete_namespace,
    deploy_functions,
    gateway_url,
    push_module,
    scale_function,
)
from wasmop.bench.watch import Recorder
from wasmop.cluster.layout import repo_root
from wasmop.kube import ApiError, Kube, KubeConfig
from wasmop.kube.client import api_path
from wasmop.runtime.workloads import Workload, ensure_built, load_manifest
from wasmop.wellknown import API_VERSION, FUNCTION_PLURAL

SAMPLES = repo_root() / "operator" / "config" / "samples"
NAMESPACE = "wasmop-demo"
ROW = "{:<10}{:<8}{:>16}{:>14}{:>6}  {:<9}{}"


async def provide_module(
    kube: Kube, namespace: str, sample: dict[str, Any], workload: Workload
) -> None:
    """Put the built module where the sample names it: pushed to its image's tag, or in
    the ConfigMap it references (under the key it expects)."""
    module = sample["spec"]["module"]
    data = workload.wasm_path.read_bytes()
    if "image" in module:
        await push_module(module["image"], data)
        return
    ref = module["configMapRef"]
    key = ref.get("key", "module.wasm")
    if key.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": ref["name"]},
        "binaryData": {key: base64.b64encode(data).decode()},
    }
    try:
        await kube.create(api_path("v1", "configmaps", namespace), body)
    except ApiError as exc:
        if not exc.conflict:
            raise


async def invoke(
    session: aiohttp.ClientSession, name: str, workload: Workload
) -> tuple[float, int, str]:
    """First request through the gateway: latency (ms), status, and the check's verdict."""
    sample = workload.sample()
    request = sample.request
    url = gateway_url(NAMESPACE, name, request.target)
    started = time.perf_counter()
    async with session.request(
        request.method, url, data=request.body, headers=dict(request.headers)
    ) as r:
        body = await r.read()
        elapsed = (time.perf_counter() - started) * 1000
        problems = sample.expect.problems(r.status, dict(r.headers), body)
    return elapsed, r.status, "ok" if not problems else "; ".join(problems)[:60]


async def wait_replicas(recorder: Recorder, name: str, replicas: int, since_ms: float) -> float:
    def done(rec: Recorder) -> bool:
        status = (rec.get("WasmFunction", name) or {}).get("status") or {}
        return (
            status.get("readyReplicas") == replicas
            and status.get("replicas") == replicas
            and (status.get("phase") == "Ready")
        )

    await recorder.wait_for(done, 120)
    return now_ms() - since_ms


async def demo(keep: bool) -> int:
    manifest = ensure_built(load_manifest())
    workloads = [w for w in manifest.benchmarks() if (SAMPLES / f"{w.name}.yaml").exists()]
    samples = {w.name: yaml.safe_load((SAMPLES / f"{w.name}.yaml").read_text()) for w in workloads}
    async with Kube(KubeConfig.load(), max_connections=100) as kube:
        await delete_namespace(kube, NAMESPACE, wait_s=60)
        await create_namespace(kube, NAMESPACE)
        recorder = Recorder(kube, NAMESPACE, kinds=("WasmFunction", "Pod"))
        await recorder.start()
        try:
            for w in workloads:
                await provide_module(kube, NAMESPACE, samples[w.name], w)
            print(
                f"deploying {len(workloads)} functions into namespace {NAMESPACE} ...",
                file=sys.stderr,
            )
            outcomes = {
                o.name: o
                for o in await deploy_functions(kube, NAMESPACE, list(samples.values()), recorder)
            }
            rows = []
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                for w in workloads:
                    name = samples[w.name]["metadata"]["name"]
                    outcome = outcomes[name]
                    latency, status, check = (
                        await invoke(session, name, w)
                        if outcome.ok
                        else (float("nan"), 0, outcome.error)
                    )
                    phase = ((recorder.get("WasmFunction", name) or {}).get("status") or {}).get(
                        "phase", "?"
                    )
                    rows.append((name, w.kind, outcome.latency_ms, latency, status, phase, check))
            header = (
                "function",
                "kind",
                "create→Ready ms",
                "first req ms",
                "HTTP",
                "phase",
                "check",
            )
            print("\n" + ROW.format(*header))
            for name, kind, ready, first, status, phase, check in rows:
                ready_text = f"{ready:.0f}" if ready is not None else "-"
                print(ROW.format(name, kind, ready_text, f"{first:.1f}", status, phase, check))

            print("\nscaling hello 1 -> 3 -> 1, updating echo to version 1.0.1", file=sys.stderr)
            t = await scale_function(kube, NAMESPACE, "hello", 3)
            up = await wait_replicas(recorder, "hello", 3, t)
            t = await scale_function(kube, NAMESPACE, "hello", 1)
            down = await wait_replicas(recorder, "hello", 1, t)
            t = now_ms()
            await kube.patch(
                api_path(API_VERSION, FUNCTION_PLURAL, NAMESPACE, "echo"),
                {"spec": {"version": "1.0.1"}},
            )

            def rolled(rec: Recorder) -> bool:
                status = (rec.get("WasmFunction", "echo") or {}).get("status") or {}
                return (
                    status.get("currentRevision") == 2
                    and status.get("phase") == "Ready"
                    and (status.get("updatedReplicas") == status.get("desiredReplicas"))
                )

            await recorder.wait_for(rolled, 120)
            rollout = now_ms() - t
            print(
                f"\nscale hello 1 -> 3 Ready: {up:.0f} ms; 3 -> 1: {down:.0f} ms;"
                f" echo rollout to 1.0.1: {rollout:.0f} ms"
            )
            failed = [r for r in rows if r[6] != "ok"]
        finally:
            await recorder.stop()
            if not keep:
                await delete_namespace(kube, NAMESPACE)
    if failed:
        print(f"\n{len(failed)} function(s) did not answer as expected", file=sys.stderr)
        return 1
    print(
        "\nall functions answered as expected"
        + ("" if not keep else f"; they keep running in {NAMESPACE}")
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the demo namespace running")
    args = parser.parse_args()
    return asyncio.run(demo(args.keep))


if __name__ == "__main__":
    sys.exit(main())
