"""Sample the metrics API's figures of the operator and gateway Pods while something else
runs (e.g. ``make experiments``), one CSV row per distinct metrics window.

    python scripts/sample_operator_pods.py OUT.csv [--interval 2] [--seconds 1200]

Reads ``metrics.k8s.io/v1beta1`` PodMetrics in ``wasm-operators`` through the embedded
cluster's admin kubeconfig (or ``$KUBECONFIG``); waits while the cluster is not up, and
stops after ``--seconds`` or when the file ``OUT.csv.stop`` appears. Columns: the
window's timestamp, the Pod, the container, CPU in millicores, memory in MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import time
from pathlib import Path

import aiohttp
from wasmop.kube import ApiError, Kube, KubeConfig
from wasmop.operator.quantity import cpu_millis, memory_bytes

PATH = "/apis/metrics.k8s.io/v1beta1/namespaces/wasm-operators/pods"
COLUMNS = ["timestamp", "pod", "container", "cpu_millicores", "memory_mib"]


async def sample(out: Path, interval_s: float, seconds: float) -> int:
    seen: set[tuple[str, str]] = set()
    rows = 0
    stop = out.with_name(out.name + ".stop")
    deadline = time.monotonic() + seconds
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        while time.monotonic() < deadline and not stop.exists():
            try:
                async with Kube(KubeConfig.load(), user_agent="wasmop-sampler") as kube:
                    while time.monotonic() < deadline and not stop.exists():
                        body = await kube.get(PATH)
                        for item in body.get("items") or []:
                            key = (item["metadata"]["name"], item["timestamp"])
                            if key in seen:
                                continue
                            seen.add(key)
                            for c in item.get("containers") or []:
                                writer.writerow([
                                    item["timestamp"], item["metadata"]["name"], c["name"],
                                    cpu_millis(c["usage"]["cpu"]),
                                    round(memory_bytes(c["usage"]["memory"]) / 2**20, 1),
                                ])  # fmt: skip
                                rows += 1
                        f.flush()
                        await asyncio.sleep(interval_s)
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError):
                await asyncio.sleep(interval_s)  # the cluster is not up (yet, or any more)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=1200.0)
    args = parser.parse_args()
    rows = asyncio.run(sample(args.out, args.interval, args.seconds))
    print(f"{rows} rows in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
