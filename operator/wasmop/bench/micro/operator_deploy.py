"""Benchmark (``make bench-operator``): the operator's latencies and its own cost.

All times are client-side watch timestamps in milliseconds (`wasmop.bench.watch`):
create-to-Ready of one WasmFunction at a time and of 100 created at once, with the split
of that time across phases; the lag between a Pod turning Ready and the function's
status saying so, for one function alone and amid the 100; scale-out latency (scale
subresource change to the new replicas Ready); operator CPU and RSS idle and while it
holds 100 functions.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from typing import Any

import pandas as pd

from wasmop.bench.deploy import (
    create_namespace,
    delete_functions,
    delete_namespace,
    deploy_functions,
    ensure_module,
    function_manifest,
    scale_function,
    wait_replicas_ready,
)
from wasmop.bench.micro.checks import Check, print_checks, print_quantiles
from wasmop.bench.process_sampler import ProcessSampler, operator_pid, summarise
from wasmop.bench.stats import describe
from wasmop.bench.watch import Recorder, function_milestones, phase_durations
from wasmop.kube import Kube, KubeConfig

ONE_P50_TARGET_MS = 500.0
BATCH_P95_TARGET_MS = 2000.0
STATUS_LAG_P95_TARGET_MS = 250.0
SCALE_OUT_P95_TARGET_MS = 1000.0
RSS_TARGET_MIB = 128.0


def status_lags(milestones: pd.DataFrame) -> list[float]:
    """Per function: its Pods all Ready to its status saying so (as the notebooks count it)."""
    lags = milestones["function_ready_ms"] - milestones["pods_ready_ms"]
    return [float(lag) for lag in lags.dropna()]


async def run(single: int, batch: int, scale_outs: int, sample_s: float) -> dict[str, Any]:
    namespace = f"bench-operator-{uuid.uuid4().hex[:6]}"
    pid = operator_pid()
    if pid is None:
        raise SystemExit("the operator is not running: start the cluster with 'wasmop cluster up'")
    result: dict[str, Any] = {"batch": batch}
    async with Kube(KubeConfig.load(), max_connections=250) as kube:
        await create_namespace(kube, namespace)
        recorder = Recorder(kube, namespace, kinds=("WasmFunction", "Deployment", "Pod"))
        await recorder.start()
        try:
            await ensure_module(kube, namespace, "hello")
            with ProcessSampler(operator_pid, interval_s=0.5, label="operator") as idle:
                await asyncio.sleep(sample_s)
            result["idle"] = summarise(idle.table())

            singles, single_created = [], {}
            for i in range(single):
                name = f"one-{i:02d}"
                [outcome] = await deploy_functions(
                    kube, namespace, [function_manifest(name, "hello")], recorder
                )
                singles.append(outcome.latency_ms)
                single_created[name] = outcome.created_ms
                await delete_functions(kube, namespace, [name])
                await recorder.wait_for(lambda rec, n=name: rec.get("WasmFunction", n) is None, 30)
            result["single_ms"] = singles
            observations = pd.DataFrame(recorder.rows)
            result["single_status_lag_ms"] = status_lags(
                function_milestones(observations, single_created)
            )

            names = [f"fn-{i:03d}" for i in range(batch)]
            with ProcessSampler(operator_pid, interval_s=0.5, label="operator") as busy:
                outcomes = await deploy_functions(
                    kube,
                    namespace,
                    [function_manifest(n, "hello") for n in names],
                    recorder,
                    timeout_s=180,
                )
                created = {o.name: o.created_ms for o in outcomes}
                result["batch_ms"] = [o.latency_ms for o in outcomes if o.ok]
                result["batch_ok"] = sum(o.ok for o in outcomes)
                await asyncio.sleep(sample_s)
            result["with_functions"] = summarise(busy.table())
            milestones = function_milestones(pd.DataFrame(recorder.rows), created)
            result["phases"] = phase_durations(milestones)
            result["status_lag_ms"] = status_lags(milestones)

            scale = []
            for name in names[:scale_outs]:
                requested = await scale_function(kube, namespace, name, 3)
                ready = await wait_replicas_ready(recorder, "WasmFunction", name, 3, requested, 60)
                scale.append(ready - requested)
            result["scale_out_ms"] = scale
        finally:
            await recorder.stop()
            await delete_namespace(kube, namespace)
    return result


def report(result: dict[str, Any]) -> bool:
    batch = result["batch"]
    print_quantiles(
        "operator latencies (client-side watch timestamps)",
        {
            "create-to-Ready, 1 function": result["single_ms"],
            f"create-to-Ready, {batch} at once": result["batch_ms"],
            "status lag, 1 function": result["single_status_lag_ms"],
            f"status lag, {batch} at once": result["status_lag_ms"],
            "scale-out 1 -> 3 replicas Ready": result["scale_out_ms"],
        },
    )
    phases = result["phases"]
    if not phases.empty:
        print(f"\nwhere the time goes ({batch} at once; median ms per phase)")
        for phase, value in phases.groupby("phase", sort=False)["duration_ms"].median().items():
            print(f"  {phase:<14}{value:>9.1f}")
    print("\noperator process           CPU p50 [m]  CPU max [m]  RSS p50 [MiB]  RSS max [MiB]")
    for label, key in (("idle", "idle"), (f"with {batch} functions", "with_functions")):
        cpu, rss = result[key]["cpu_millicores"], result[key]["rss_mib"]
        print(
            f"  {label:<25}{cpu['p50']:>11.0f}{cpu['max']:>13.0f}{rss['p50']:>15.1f}"
            f"{rss['max']:>15.1f}"
        )
    one, many = describe(result["single_ms"]), describe(result["batch_ms"])
    lag, scale = describe(result["status_lag_ms"]), describe(result["scale_out_ms"])
    one_lag = describe(result["single_status_lag_ms"])
    rss_max = result["with_functions"]["rss_mib"]["max"]
    return print_checks(
        [
            Check("1 function create-to-Ready p50", one["p50"], ONE_P50_TARGET_MS, "ms"),
            Check(
                f"{batch} at once, all Ready, p95",
                many["p95"],
                BATCH_P95_TARGET_MS,
                "ms",
                holds_also=result["batch_ok"] == batch,
            ),
            Check("status lag p95, 1 function", one_lag["p95"], STATUS_LAG_P95_TARGET_MS, "ms"),
            Check(f"status lag p95, {batch} at once", lag["p95"], STATUS_LAG_P95_TARGET_MS, "ms"),
            Check("scale-out p95", scale["p95"], SCALE_OUT_P95_TARGET_MS, "ms"),
            Check(f"operator RSS max with {batch} functions", rss_max, RSS_TARGET_MIB, "MiB"),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=10, help="one-at-a-time repetitions")
    parser.add_argument("--batch", type=int, default=100, help="functions created at once")
    parser.add_argument("--scale-outs", type=int, default=10, help="functions scaled 1 -> 3")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="CPU/RSS sampling")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = asyncio.run(run(args.single, args.batch, args.scale_outs, args.sample_seconds))
    ok = report(result)
    print(f"\n(measured in {time.monotonic() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
