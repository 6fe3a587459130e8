#!/usr/bin/env python3
"""Record the small experiment runs the unit tests analyse again (needs the cluster).

    wasmop-cluster-lock .venv/bin/python scripts/record_test_runs.py [--only NAME ...]

Starts the embedded cluster unless it is up (and then stops it again), runs each
experiment once with tiny parameters, exactly as a
notebook does (raw data first, then the analysis of what was written), and keeps what a
re-analysis needs and what it must reproduce: ``params.json``, ``raw/``, the CSV tables
and ``summary.json``, under ``tests/unit/recorded_runs/<experiment>/recorded/``. Run it
again when an experiment's raw data changes on purpose. When only an analysis changes
(its tables, statistics or summary, from the same raw data), ``--reanalyse`` rewrites the
kept files from the recorded ``raw/`` without a cluster.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from wasmop.bench.experiments import registry
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession
from wasmop.cluster import manager
from wasmop.cluster.layout import StateLayout, repo_root

DESTINATION = repo_root() / "tests" / "unit" / "recorded_runs"
RUN_ID = "recorded"

PARAMETERS: dict[str, dict[str, Any]] = {
    "deployment_latency": {"concurrency": 2},
    "manual_scaling": {"low": 1, "high": 2, "repetitions": 1},
    "load_scaling": {
        "workload": "fib",
        "query": "n=15",
        "shape": {"kind": "step", "peak": 4, "base": 2, "steps": 2, "duration": 24},
        "user_rps": 3,
        "max_replicas": 3,
        "rps_per_replica": 5,
    },
    "compare_scaling": {
        "workload": "fib",
        "query": "n=15",
        "shapes": [{"kind": "step", "peak": 6, "base": 3, "steps": 2, "duration": 20}],
        "user_rps": 3,
        "max_replicas": 3,
        "rps_per_replica": 3,
    },
    "cold_start": {
        "batches": [1, 3],
        "single_repetitions": 2,
        "per_function": 2,
        "warm_requests": 2,
        "unplaceable": 1,
    },
    "load_latency": {"mix": "hello@2,fib?n=15@1", "users": 3, "run_time_s": 5, "replicas": 1},
    "recovery": {"fault": "pod-delete", "settle_s": 1, "observe_s": 20, "probe_rate_hz": 10},
    "operator_overhead": {"functions_count": 2, "idle_s": 1, "hold_s": 1, "interval_s": 0.5},
    "edge_network": {"delays_ms": [0, 40], "seconds_per_condition": 2, "rate_hz": 5},
    "chaos": {
        "functions": 2,
        "kinds": ["pod-delete", "rollout", "scale-out", "scale-in", "bad-rollout", "node-freeze"],
        "users": 2,
        "user_rps": 3,
        "hold_s": [2.0, 2.5],
        "gap_s": [0.5, 1.0],
        "warmup_s": 1.0,
    },
    "scale": {
        "sizes": [2, 4, 6],
        "rest_s": 3,
        "probes": 2,
        "gateway_requests": 10,
        "wave_concurrency": 3,
        "interval_s": 0.25,
    },
}


def keep(run: Path, destination: Path) -> None:
    """The run's params, raw data, tables and summary; not figures, Parquet or env."""
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    shutil.copytree(run / "raw", destination / "raw")
    for path in [run / "params.json", run / "summary.json", *run.glob("*.csv")]:
        shutil.copy2(path, destination / path.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(PARAMETERS))
    parser.add_argument(
        "--reanalyse",
        action="store_true",
        help="no cluster: analyse the recorded raw/ data again and rewrite what is kept",
    )
    args = parser.parse_args(argv)
    if args.reanalyse:
        for name in args.only or PARAMETERS:
            reanalyse(DESTINATION / name / RUN_ID)
        return 0
    layout = StateLayout.default()
    started = not manager.is_running(layout)
    manager.up(layout, timeout=300)
    try:
        with tempfile.TemporaryDirectory(prefix="wasmop-recorded-") as scratch:
            for name in args.only or PARAMETERS:
                record(name, Path(scratch))
    finally:
        if started:
            manager.down(layout)
    return 0


def reanalyse(folder: Path) -> None:
    """Rewrite a recorded run's tables and summary from its raw/; drop what keep() drops."""
    registry.reanalyse(folder)
    shutil.rmtree(folder / "figures", ignore_errors=True)
    for path in folder.glob("*.parquet"):
        path.unlink()
    print(f"{folder.parent.name}: analysed again in {folder}")


def record(name: str, scratch: Path) -> None:
    params = registry.get(name).parameters(PARAMETERS[name])
    run = ExperimentRun.start(name, {**params, "plan": RUN_ID}, results_dir=scratch, run_id=RUN_ID)
    with BenchSession() as session:
        registry.execute(name, session, run, PARAMETERS[name])
    run.finish()
    keep(run.folder, DESTINATION / name / RUN_ID)
    size = sum(p.stat().st_size for p in (DESTINATION / name).rglob("*") if p.is_file())
    print(f"{name}: {size / 1024:.0f} KiB in {DESTINATION / name / RUN_ID}")


if __name__ == "__main__":
    sys.exit(main())
