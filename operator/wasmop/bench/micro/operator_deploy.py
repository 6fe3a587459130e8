"""Benchmark (``make bench-operator``): the operator against its baseline, and its cost.

Bursts of 1, 10, 50 and 100 functions created at once, each level run in both modes,
interleaved (operator, plain, plain, operator, ...) in one run so that both see the same
machine: WasmFunctions through the operator, and the same workload as hand-written
Deployments and Services (``plain``). All times are client-side watch timestamps in
milliseconds (:mod:`wasmop.bench.watch`). Printed: create-to-Ready and status lag per
mode and level with n and 95 % intervals, the ratio of the operator's p50 and p95 to
plain's (with bootstrap intervals), where the operator's time goes, the API writes per
created function by actor (from the API server's audit log, :mod:`wasmop.bench.audit`),
scale-out latency, and the operator's CPU and RSS idle and with the functions, and
how often its Pod's CPU quota stopped it during each burst (its cgroup's ``cpu.stat``,
read before the creations and once all are Ready).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from wasmop.bench import audit
from wasmop.bench.deploy import (
    create_namespace,
    delete_namespace,
    deploy_functions,
    deploy_plain,
    ensure_module,
    function_manifest,
    scale_function,
    wait_replicas_ready,
)
from wasmop.bench.micro.checks import Check, print_checks
from wasmop.bench.process_sampler import ProcessSampler, operator_pid, summarise
from wasmop.bench.stats import describe, ratio_of
from wasmop.bench.watch import Recorder, function_milestones, phase_durations
from wasmop.cluster.layout import StateLayout
from wasmop.kube import ApiError, Kube, KubeConfig
from wasmop.kube.client import api_path
from wasmop.node.cgroups import process_throttling
from wasmop.node.stats import Throttling
from wasmop.operator.status import parse_time
from wasmop.wellknown import API_VERSION, FUNCTION_PLURAL

MODES = ("operator", "plain")
LEVELS = (1, 10, 50, 100)
# Bursts per level and mode: enough functions at every level for an interval (n >= 10).
REPETITIONS = {1: 10, 10: 2}
SETTLE_S = 2.0  # after the last Ready: trailing status writes, and the audit log's batch
# The acceptance bounds of issue 13, judged on the largest burst and on one function.
BURST_P95_RATIO = 1.25
ONE_P50_EXTRA_MS = 50.0
STATUS_LAG_P95_TARGET_MS = 1000.0
SCALE_OUT_P95_TARGET_MS = 1000.0
RSS_TARGET_MIB = 128.0
# The operator's own steps for one function, from its status.timings (its clock, the
# benchmark's machine): creation to the reconcile's start (the watch event's way through
# kopf and the work queue), to the module checked, to its Deployment apply answered.
OPERATOR_STEPS = {
    "reconcile_started_ms": "acceptedAt",
    "validated_ms": "validatedAt",
    "deployment_written_ms": "deploymentCreatedAt",
}


@dataclass
class Burst:
    """One burst: ``count`` functions of one mode created at once."""

    mode: str
    count: int
    repetition: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    phases: pd.DataFrame | None = None
    writes: pd.DataFrame | None = None
    # The operator Pod's CFS quota from the creations until all were Ready, and how long
    # that took (None: its cgroup could not be read, e.g. an operator run by hand).
    throttling: Throttling | None = None
    duration_s: float = 0.0


def operator_throttling() -> Throttling | None:
    """The operator process's cgroup ``cpu.stat`` now (its Pod's quota on the system node)."""
    pid = operator_pid()
    return process_throttling(pid) if pid is not None else None


def first_seen_ms(observed: pd.DataFrame, kind: str) -> dict[str, float]:
    """Per name: when this benchmark's own watch first saw the object of ``kind`` (the
    API server's delivery of its creation to a watcher, to compare with the operator's)."""
    if observed.empty:
        return {}
    rows = observed[(observed["kind"] == kind) & (observed["event"] != "LISTED")]
    return {str(k): float(v) for k, v in rows.groupby("name")["t_ms"].min().items()}


def operator_steps(body: dict[str, Any] | None, created_ms: float) -> dict[str, float | None]:
    """Each of :data:`OPERATOR_STEPS` in ms after the client sent the creation."""
    timings = ((body or {}).get("status") or {}).get("timings") or {}
    return {
        column: (parse_time(timings[key]).timestamp() * 1000 - created_ms)
        if timings.get(key)
        else None
        for column, key in OPERATOR_STEPS.items()
    }


def throttling_between(before: Throttling | None, after: Throttling | None) -> Throttling | None:
    """What the quota did between two readings; None if either is missing or the
    counters went back (the operator restarted into a new group)."""
    if before is None or after is None:
        return None
    delta = after.since(before)
    return delta if delta.periods >= 0 and delta.throttled_periods >= 0 else None


def schedule(levels: Sequence[int], repetitions: dict[int, int]) -> list[tuple[int, int, str]]:
    """(level, repetition, mode) in the order they run: both modes at each repetition,
    the first mode alternating, so neither always runs on a machine the other warmed."""
    order = []
    for level in levels:
        for rep in range(repetitions.get(level, 1)):
            modes = MODES if rep % 2 == 0 else MODES[::-1]
            order += [(level, rep, mode) for mode in modes]
    return order


def status_lags(milestones: pd.DataFrame, mode: str) -> pd.Series:
    """Per function: its Pods all Ready to its status saying so (the WasmFunction's for
    the operator, the Deployment's for plain)."""
    ready = milestones["function_ready_ms" if mode == "operator" else "deployment_ready_ms"]
    return ready - milestones["pods_ready_ms"]


async def clear(kube: Kube, namespace: str, recorder: Recorder, timeout_s: float) -> None:
    """Delete every function and Deployment of the namespace and wait until their Pods
    are gone, so the next burst starts on idle nodes."""
    for version, plural in ((API_VERSION, FUNCTION_PLURAL), ("apps/v1", "deployments")):
        with contextlib.suppress(ApiError):
            await kube.delete(api_path(version, plural, namespace), propagationPolicy="Background")
    services = await kube.list(api_path("v1", "services", namespace))
    for item in services.get("items", []):
        with contextlib.suppress(ApiError):
            await kube.delete(api_path("v1", "services", namespace, item["metadata"]["name"]))

    def idle(rec: Recorder) -> bool:
        return not any(rec.objects(kind) for kind in ("WasmFunction", "Deployment", "Pod"))

    await recorder.wait_for(idle, timeout_s)


async def burst(
    kube: Kube,
    namespace: str,
    recorder: Recorder,
    mode: str,
    count: int,
    repetition: int,
    timeout_s: float,
    audit_log: Path | None,
) -> Burst:
    tag = f"{mode[0]}{count}-{repetition}"
    names = [f"{tag}-{i:03d}" for i in range(count)]
    tail = audit.AuditTail(audit_log) if audit_log else None
    quota_before = operator_throttling()
    start = time.time() * 1000
    if mode == "operator":
        manifests = [function_manifest(n, "hello") for n in names]
        outcomes = await deploy_functions(kube, namespace, manifests, recorder, timeout_s)
    else:
        outcomes = await deploy_plain(
            kube, namespace, names, "hello", recorder, timeout_s=timeout_s
        )
    quota = throttling_between(quota_before, operator_throttling())
    duration_s = time.time() - start / 1000
    await asyncio.sleep(SETTLE_S)
    result = Burst(mode, count, repetition, throttling=quota, duration_s=duration_s)
    created = {o.name: o.created_ms for o in outcomes}
    observed = pd.DataFrame(recorder.rows)
    milestones = function_milestones(observed, created)
    seen = first_seen_ms(observed, "WasmFunction" if mode == "operator" else "Deployment")
    lags = dict(zip(milestones["function"], status_lags(milestones, mode), strict=True))
    for o in outcomes:
        body = recorder.get("WasmFunction", o.name) if mode == "operator" else None
        result.rows.append(
            {
                "mode": mode,
                "concurrency": count,
                "repetition": repetition,
                "function": o.name,
                "ok": o.ok,
                "create_to_ready_ms": o.latency_ms,
                "status_lag_ms": lags.get(o.name),
                "watch_event_ms": seen[o.name] - o.created_ms if o.name in seen else None,
                **operator_steps(body, o.created_ms),
            }
        )
    if mode == "operator":
        result.phases = phase_durations(milestones)
    if tail is not None:
        await asyncio.sleep(SETTLE_S)  # the audit log is written in batches of a second
        writes = audit.frame(tail.read())
        result.writes = audit.select(writes, namespace, start, time.time() * 1000)
    return result


async def run(
    levels: Sequence[int],
    repetitions: dict[int, int],
    scale_outs: int,
    sample_s: float,
    timeout_s: float,
) -> dict[str, Any]:
    namespace = f"bench-operator-{uuid.uuid4().hex[:6]}"
    if operator_pid() is None:
        raise SystemExit("the operator is not running: start the cluster with 'wasmop cluster up'")
    audit_log = StateLayout.default().audit_log
    result: dict[str, Any] = {"largest": max(levels), "audit": audit_log.exists()}
    async with Kube(KubeConfig.load(), max_connections=250) as kube:
        await create_namespace(kube, namespace)
        recorder = Recorder(kube, namespace, kinds=("WasmFunction", "Deployment", "Pod"))
        await recorder.start()
        try:
            await ensure_module(kube, namespace, "hello")
            with ProcessSampler(operator_pid, interval_s=0.5, label="operator") as idle:
                await asyncio.sleep(sample_s)
            result["idle"] = summarise(idle.table())

            bursts: list[Burst] = []
            for level, rep, mode in schedule(levels, repetitions):
                sampler = ProcessSampler(operator_pid, interval_s=0.5, label="operator")
                with sampler:
                    done = await burst(
                        kube, namespace, recorder, mode, level, rep, timeout_s,
                        audit_log if result["audit"] else None,
                    )  # fmt: skip
                if mode == "operator" and level == max(levels) and rep == 0:
                    result["with_functions"] = summarise(sampler.table())
                bursts.append(done)
                print(f"  {mode:<9}{level:>4} at once (repetition {rep + 1}): done", flush=True)
                await clear(kube, namespace, recorder, timeout_s)
            result["bursts"] = bursts

            names = [f"scale-{i:02d}" for i in range(scale_outs)]
            await deploy_functions(
                kube, namespace, [function_manifest(n, "hello") for n in names], recorder
            )
            scale = []
            for name in names:
                requested = await scale_function(kube, namespace, name, 3)
                ready = await wait_replicas_ready(recorder, "WasmFunction", name, 3, requested, 60)
                scale.append(ready - requested)
            result["scale_out_ms"] = scale
        finally:
            await recorder.stop()
            await delete_namespace(kube, namespace)
    return result


# --------------------------------------------------------------------------- report


def observations(bursts: Sequence[Burst]) -> pd.DataFrame:
    """One row per function of every burst: mode, concurrency, outcome, latencies."""
    return pd.DataFrame([row for b in bursts for row in b.rows])


def latency_table(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per mode and concurrency: n, p50 and p95 of ``column`` with their intervals."""
    rows = []
    for (mode, level), group in table.groupby(["mode", "concurrency"], sort=True):
        ok = group[group["ok"].astype(bool)]
        d = describe(ok[column].dropna(), ci=True)
        rows.append(
            {
                "mode": mode,
                "concurrency": level,
                "created": len(group),
                "ready": len(ok),
                "n": d["n"],
                **{k: d[k] for k in ("p50", "p50_ci_low", "p50_ci_high")},
                **{k: d[k] for k in ("p95", "p95_ci_low", "p95_ci_high")},
            }
        )
    return pd.DataFrame(rows)


def ratio_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per concurrency: the operator's p50 and p95 create-to-Ready over plain's."""
    rows = []
    ok = table[table["ok"].astype(bool)]
    for level, group in ok.groupby("concurrency", sort=True):
        op = group[group["mode"] == "operator"]["create_to_ready_ms"]
        plain = group[group["mode"] == "plain"]["create_to_ready_ms"]
        for statistic in ("p50", "p95"):
            r = ratio_of(op, plain, statistic)
            rows.append({"concurrency": level, "statistic": statistic, **r})
    return pd.DataFrame(rows)


def burst_table(bursts: Sequence[Burst]) -> pd.DataFrame:
    """One row per burst: how long it took to all Ready, and the operator Pod's CFS
    periods, throttled periods and throttled time in that while."""
    rows = []
    for b in bursts:
        q = b.throttling
        rows.append(
            {
                "mode": b.mode,
                "concurrency": b.count,
                "repetition": b.repetition,
                "duration_s": round(b.duration_s, 3),
                "operator_cfs_periods": q.periods if q else None,
                "operator_cfs_throttled_periods": q.throttled_periods if q else None,
                "operator_cfs_throttled_share": round(q.throttled_share, 4) if q else None,
                "operator_cfs_throttled_s": round(q.throttled_seconds, 3) if q else None,
            }
        )
    return pd.DataFrame(rows)


def print_throttling(table: pd.DataFrame) -> None:
    print("\noperator Pod's CPU quota per burst, creations to all Ready (cgroup cpu.stat)")
    if table["operator_cfs_periods"].isna().all():
        print("  (its cgroup could not be read: an operator outside the system node?)")
        return
    print(
        f"  {'mode':<9}{'at once':>8}{'rep':>4}{'duration s':>11}{'periods':>9}"
        f"{'throttled':>10}{'share':>7}{'throttled s':>12}"
    )
    for r in table.itertuples(index=False):
        if pd.isna(r.operator_cfs_periods):
            continue
        print(
            f"  {r.mode:<9}{r.concurrency:>8}{r.repetition + 1:>4}{r.duration_s:>11.1f}"
            f"{int(r.operator_cfs_periods):>9}{int(r.operator_cfs_throttled_periods):>10}"
            f"{r.operator_cfs_throttled_share:>7.0%}{r.operator_cfs_throttled_s:>12.2f}"
        )


def print_operator_steps(table: pd.DataFrame, level: int) -> None:
    """Medians and p95 of the operator's own steps at ``level`` at once."""
    rows = table[(table["mode"] == "operator") & (table["concurrency"] == level)]
    if rows.empty:
        return
    print(f"\nthe operator's steps, {level} at once [ms after creation; its status.timings]")
    print(f"  {'step':<24}{'n':>5}{'p50':>9}{'p95':>9}{'max':>9}")
    for column in ("watch_event_ms", *OPERATOR_STEPS):
        values = pd.to_numeric(rows[column], errors="coerce").dropna()
        if values.empty:
            continue
        print(
            f"  {column:<24}{len(values):>5}{values.quantile(0.5):>9.0f}"
            f"{values.quantile(0.95):>9.0f}{values.max():>9.0f}"
        )


def _interval(low: float, high: float, digits: int = 0) -> str:
    if pd.isna(low) or pd.isna(high):
        return "-"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def print_latencies(title: str, table: pd.DataFrame) -> None:
    print(f"\n{title} [ms; 95 % bootstrap intervals]")
    print(f"  {'mode':<9}{'at once':>8}{'ready':>10}{'p50':>9}{'':<18}{'p95':>9}")
    for r in table.itertuples(index=False):
        print(
            f"  {r.mode:<9}{r.concurrency:>8}{f'{r.ready}/{r.created}':>10}{r.p50:>9.0f}"
            f" {_interval(r.p50_ci_low, r.p50_ci_high):<17}{r.p95:>9.0f}"
            f" {_interval(r.p95_ci_low, r.p95_ci_high)}"
        )


def print_ratios(table: pd.DataFrame) -> None:
    print("\noperator / plain, create-to-Ready (same run, interleaved)")
    header = f"{'at once':>8}{'statistic':>10}{'ratio':>8}  {'95 % CI':<16}{'n op':>6}"
    print(f"  {header}{'n plain':>8}")
    for r in table.itertuples(index=False):
        print(
            f"  {r.concurrency:>8}{r.statistic:>10}{r.value:>8.2f}  "
            f"{_interval(r.ci_low, r.ci_high, 2):<16}{r.n_numerator:>6}{r.n_denominator:>8}"
        )


def writes_summary(bursts: Sequence[Burst], mode: str, level: int) -> pd.DataFrame | None:
    chosen = [b for b in bursts if b.mode == mode and b.count == level and b.writes is not None]
    if not chosen:
        return None
    writes = pd.concat([b.writes for b in chosen if b.writes is not None], ignore_index=True)
    return audit.writes_table(writes, sum(b.count for b in chosen))


def report(result: dict[str, Any]) -> bool:
    largest = result["largest"]
    table = observations(result["bursts"])
    create = latency_table(table, "create_to_ready_ms")
    lag = latency_table(table, "status_lag_ms")
    ratios = ratio_table(table)
    print_latencies("create-to-Ready (client-side watch timestamps)", create)
    print_latencies("status lag: Pods all Ready to the owner's status saying so", lag)
    print_ratios(ratios)
    print_throttling(burst_table(result["bursts"]))
    print_operator_steps(table, largest)

    phases = [b.phases for b in result["bursts"] if b.count == largest and b.phases is not None]
    if phases:
        merged = pd.concat(phases)
        print(f"\nwhere the operator's time goes ({largest} at once; median ms per phase)")
        for phase, value in merged.groupby("phase", sort=False)["duration_ms"].median().items():
            print(f"  {phase:<14}{value:>9.1f}")

    for mode in MODES:
        writes = writes_summary(result["bursts"], mode, largest)
        if writes is not None and not writes.empty:
            print(f"\nAPI writes per created function, {mode}, {largest} at once (audit log)")
            print(audit.format_table(writes))
    if not result["audit"]:
        print("\n(no audit log at .wasmop/logs/audit.log: writes per function not counted)")

    scale = describe(result["scale_out_ms"], ci=True)
    print(f"\nscale-out 1 -> 3 replicas Ready [ms]: n={scale['n']} p50 {scale['p50']:.0f}")
    print(f"  p95 {scale['p95']:.0f} {_interval(scale['p95_ci_low'], scale['p95_ci_high'])}")
    print("\noperator process           CPU p50 [m]  CPU max [m]  RSS p50 [MiB]  RSS max [MiB]")
    for label, key in (("idle", "idle"), (f"during {largest} at once", "with_functions")):
        cpu, rss = result[key]["cpu_millicores"], result[key]["rss_mib"]
        print(
            f"  {label:<25}{cpu['p50']:>11.0f}{cpu['max']:>13.0f}{rss['p50']:>15.1f}"
            f"{rss['max']:>15.1f}"
        )

    def stat(frame: pd.DataFrame, mode: str, level: int, column: str) -> float:
        row = frame[(frame["mode"] == mode) & (frame["concurrency"] == level)]
        return float(row[column].iloc[0]) if not row.empty else float("nan")

    p95_ratio = ratios[(ratios["concurrency"] == largest) & (ratios["statistic"] == "p95")]
    ready = stat(create, "operator", largest, "ready")
    one_plain = stat(create, "plain", min(result_levels(table)), "p50")
    return print_checks(
        [
            Check(
                f"{largest} at once, operator p95 / plain p95 (all Ready)",
                float(p95_ratio["value"].iloc[0]) if not p95_ratio.empty else float("nan"),
                BURST_P95_RATIO,
                "x",
                holds_also=ready == largest,
            ),
            Check(
                "1 function, operator p50",
                stat(create, "operator", 1, "p50"),
                one_plain + ONE_P50_EXTRA_MS,
                "ms",
            ),
            Check(
                f"status lag p95, {largest} at once",
                stat(lag, "operator", largest, "p95"),
                STATUS_LAG_P95_TARGET_MS,
                "ms",
            ),
            Check("scale-out p95", scale["p95"], SCALE_OUT_P95_TARGET_MS, "ms"),
            Check(
                f"operator RSS max during {largest} at once",
                result["with_functions"]["rss_mib"]["max"],
                RSS_TARGET_MIB,
                "MiB",
            ),
        ]
    )


def save(result: dict[str, Any], folder: Path) -> None:
    """The observations and the writes of every burst as tidy CSV tables."""
    folder.mkdir(parents=True, exist_ok=True)
    bursts = result["bursts"]
    observations(bursts).to_csv(folder / "functions.csv", index=False)
    burst_table(bursts).to_csv(folder / "bursts.csv", index=False)
    writes = [
        b.writes.assign(mode=b.mode, concurrency=b.count, repetition=b.repetition)
        for b in bursts
        if b.writes is not None
    ]
    if writes:
        pd.concat(writes, ignore_index=True).to_csv(folder / "audit_writes.csv", index=False)
    print(f"\ntables written to {folder}")


def result_levels(table: pd.DataFrame) -> list[int]:
    return sorted(int(v) for v in table["concurrency"].unique())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--levels",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        default=LEVELS,
        help="functions created at once, comma-separated (default 1,10,50,100)",
    )
    parser.add_argument(
        "--repetitions",
        type=int,
        default=None,
        help="bursts per level and mode (default: 10 of 1, 2 of 10, 1 of more)",
    )
    parser.add_argument("--scale-outs", type=int, default=10, help="functions scaled 1 -> 3")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="idle CPU/RSS")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per burst")
    parser.add_argument(
        "--output", type=Path, help="also write the tidy tables (CSV) into this directory"
    )
    args = parser.parse_args(argv)
    reps = REPETITIONS if args.repetitions is None else dict.fromkeys(args.levels, args.repetitions)
    started = time.monotonic()
    result = asyncio.run(run(args.levels, reps, args.scale_outs, args.sample_seconds, args.timeout))
    ok = report(result)
    if args.output is not None:
        save(result, args.output)
    print(f"\n(measured in {time.monotonic() - started:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
