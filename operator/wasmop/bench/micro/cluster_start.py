"""Benchmark: how fast the embedded control plane starts, and what it costs at rest.

Runs in a scratch state directory on shifted ports, so a cluster that is already up is
not disturbed. A cold start begins from an empty state dir (PKI, etcd bootstrap, RBAC
bootstrap); a warm start reuses the state of the previous run, as `wasmop cluster up`
does after `down`. Time to ready is measured client-side until the supervisor reports
every component ready (API server /readyz included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from wasmop.bench.micro.checks import Check, print_checks, print_quantiles
from wasmop.cluster import manager
from wasmop.cluster.layout import StateLayout
from wasmop.cluster.settings import ClusterSettings

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
WARM_READY_TARGET_S = 10.0
IDLE_RSS_TARGET_MIB = 1536.0


def component_rss_mib(layout: StateLayout) -> dict[str, float]:
    status = manager.read_status(layout) or {"components": {}}
    rss = {}
    for name, comp in status["components"].items():
        if comp["pid"]:
            rss[name] = psutil.Process(comp["pid"]).memory_info().rss / 2**20
    return rss


def start_once(layout: StateLayout, settings: ClusterSettings, fresh: bool) -> float:
    if fresh and layout.root.exists():
        manager.wipe(layout)
    layout.root.mkdir(parents=True, exist_ok=True)
    if not layout.settings_file.exists():
        settings.save(layout.settings_file)
    started = time.perf_counter()
    manager.up(layout, timeout=180)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", type=int, default=2, help="cold starts (default 2)")
    parser.add_argument("--warm", type=int, default=5, help="warm starts (default 5)")
    parser.add_argument("--idle-seconds", type=float, default=15.0, help="settle time before RSS")
    parser.add_argument("--port-offset", type=int, default=200, help="added to every default port")
    args = parser.parse_args(argv)

    # Wasm nodes need the machine's pod range, which a running cluster may hold; so do the
    # system node's network and the operator's and gateway's ports (their manifest's).
    settings = (
        ClusterSettings().with_port_offset(args.port_offset).updated(nodes=0, system_node=False)
    )
    cold: list[float] = []
    warm: list[float] = []
    rss: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="wasmop-bench-cluster-") as scratch:
        layout = StateLayout(Path(scratch) / "state")
        try:
            for i in range(args.cold):
                cold.append(start_once(layout, settings, fresh=True))
                print(f"cold start {i + 1}/{args.cold}: {cold[-1]:.2f} s", file=sys.stderr)
                manager.down(layout)
            for i in range(args.warm):
                warm.append(start_once(layout, settings, fresh=False))
                print(f"warm start {i + 1}/{args.warm}: {warm[-1]:.2f} s", file=sys.stderr)
                if i < args.warm - 1:
                    manager.down(layout)
            time.sleep(args.idle_seconds)
            rss = component_rss_mib(layout)
        finally:
            manager.down(layout)

    total_rss = sum(v for k, v in rss.items() if k in CONTROL_PLANE)
    print_quantiles(
        "embedded cluster start, until every component is ready",
        {"cold start to ready": cold, "warm start to ready": warm},
        unit="s",
    )
    print(f"\nidle resident memory after {args.idle_seconds:.0f} s [MiB]")
    for name in sorted(rss, key=lambda n: (n not in CONTROL_PLANE, n)):
        print(f"  {name:<32}{rss[name]:>10.1f}")
    print(f"  {'control plane (first four)':<32}{total_rss:>10.1f}")
    ok = print_checks(
        [
            Check("warm start to ready, median", statistics.median(warm), WARM_READY_TARGET_S, "s"),
            Check("idle control plane RSS", total_rss, IDLE_RSS_TARGET_MIB, "MiB"),
        ]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
