"""Every notebook runs through papermill with smoke parameters against the real cluster,
and leaves plausible tables and figures behind.

Faults that act on shared components (a node agent, the operator, the API server) run
too; on a cluster shared with other work, WASMOP_TEST_DISRUPTIVE=0 leaves them out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from wasmop.bench import runner
from wasmop.bench.process_sampler import operator_pid
from wasmop.bench.targets import TARGETS

pytestmark = pytest.mark.integration

DISRUPTIVE = os.environ.get("WASMOP_TEST_DISRUPTIVE", "1") != "0"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, cluster) -> Path:  # type: ignore[no-untyped-def]
    runner.ensure_kernel()
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def operator_running(cluster) -> None:  # type: ignore[no-untyped-def]
    if not operator_pid():
        pytest.fail(
            "the embedded cluster's operator is not running"
            " (wasmop kubectl get pods -n wasm-operators)"
        )


def execute(results: Path, notebook: str, parameters: dict[str, Any], label: str = "") -> Path:
    """Run one notebook through the batch runner; return its run folder."""
    entry: dict[str, Any] = {"notebook": notebook, "parameters": parameters}
    if label:
        entry["label"] = label
    plan = runner.parse_plan({"name": "smoke", "experiments": [entry]})
    [result] = runner.run_plan(plan, results_dir=results, progress=False, report=lambda _: None)
    assert result.status == "completed", f"{result.error}; see {result.notebook}"
    assert result.notebook.exists()
    return result.folder


def table(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{name}.csv")


def figures_written(folder: Path, *names: str) -> None:
    for name in names:
        for suffix in (".png", ".pdf"):
            path = folder / "figures" / f"{name}{suffix}"
            assert path.exists() and path.stat().st_size > 1000, path


def summary(folder: Path) -> dict[str, Any]:
    data = json.loads((folder / "summary.json").read_text())
    assert {t["target"] for t in data["targets"]} >= {t.label for t in TARGETS}
    return data


@pytest.mark.usefixtures("operator_running")
def test_deployment_latency(results: Path) -> None:
    folder = execute(results, "deployment_latency.ipynb", {"concurrency": 2, "timeout_s": 120})
    functions = table(folder, "functions")
    assert len(functions) == 2 and functions["ok"].all()
    assert functions["create_to_ready_ms"].between(0, 120_000).all()
    ordered = ["created_ms", "deployment_seen_ms", "pod_created_ms", "pod_scheduled_ms",
               "pod_ready_ms", "pods_ready_ms", "function_ready_ms"]  # fmt: skip
    assert (functions[ordered].diff(axis=1).iloc[:, 1:] >= 0).all().all(), "milestones in order"
    assert functions["acceptedAt_ms"].notna().all(), "the operator's own timings are kept"
    phases = table(folder, "phases")
    assert set(phases["phase"]) == {
        "operator", "replicaset", "scheduling", "pod_start", "rollout", "status"
    }  # fmt: skip
    events = pd.read_csv(folder / "raw" / "watch_events.csv")
    assert {"WasmFunction", "Deployment", "Pod", "Node"} <= set(events["kind"])
    metrics = summary(folder)["metrics"]
    assert metrics["concurrent_deploy_latency_ms"]["n"] == 2
    assert metrics["concurrent_status_lag_ms"]["n"] == 2
    assert metrics["concurrent_ready_ratio"]["value"] == 1.0
    figures_written(folder, "deployment_cdf", "deployment_phases")


@pytest.mark.usefixtures("operator_running")
def test_manual_scaling(results: Path) -> None:
    folder = execute(
        results, "scaling.ipynb",
        {"scaling_mode": "manual", "low": 1, "high": 2, "repetitions": 1}, "manual",
    )  # fmt: skip
    steps = table(folder, "scale_steps")
    assert list(steps["direction"]) == ["out", "in"]
    assert list(steps["to_replicas"]) == [2, 1]
    assert (steps["latency_ms"] > 0).all()
    assert summary(folder)["metrics"]["scale_latency_ms"]["n"] == 1
    figures_written(folder, "scaling_latency")


@pytest.mark.usefixtures("operator_running")
def test_load_driven_scaling(results: Path) -> None:
    folder = execute(
        results, "scaling.ipynb",
        {"scaling_mode": "load", "workload": "fib", "query": "n=15",
         "shape": {"kind": "step", "peak": 4, "base": 2, "steps": 2, "duration": 24},
         "user_rps": 10,
         "max_replicas": 3, "rps_per_replica": 5},
        "load",
    )  # fmt: skip
    decisions = table(folder, "decisions")
    ups = decisions[decisions["to_replicas"] > decisions["from_replicas"]]
    assert not ups.empty, "the autoscaler scaled out under load"
    assert (ups["reaction_ms"] >= 0).all()
    history = table(folder, "load_history")
    assert history["User Count"].max() == 4
    figures_written(folder, "autoscaling")


@pytest.mark.usefixtures("operator_running")
def test_scaling_comparison(results: Path) -> None:
    """Reactive, fast and predictive functions under one step load: each has its row,
    the fast one scales out after the rise, and the figure is drawn."""
    folder = execute(
        results, "scaling.ipynb",
        {"scaling_mode": "compare", "workload": "fib", "query": {"n": 15},
         "shapes": [{"kind": "step", "peak": 6, "base": 3, "steps": 2, "duration": 20}],
         "user_rps": 3, "max_replicas": 3, "rps_per_replica": 3},
        "compare",
    )  # fmt: skip
    variants = table(folder, "variants")
    assert list(variants["variant"]) == ["reactive", "fast", "predictive"]
    assert (variants["requests"] > 0).all() and (variants["replica_s"] > 0).all()
    fast = variants.set_index("variant").loc["fast"]
    assert fast["scale_outs"] >= 1, "the fast variant scaled out under the step"
    reactions = table(folder, "reactions").dropna(subset=["reaction_ms"])
    assert (reactions["reaction_ms"] >= 0).all()
    figures_written(folder, "scaling_comparison")


@pytest.mark.usefixtures("operator_running")
def test_cold_start(results: Path) -> None:
    """Idle functions woken alone and three at once: every held request answered, the
    unplaceable function's refused with its reason after the gateway's bound."""
    folder = execute(
        results, "cold_start.ipynb",
        {"batches": [1, 3], "single_repetitions": 2, "per_function": 2, "warm_requests": 2,
         "unplaceable": 1},
    )  # fmt: skip
    requests = table(folder, "requests")
    cold = requests[requests["kind"] == "cold"]
    assert len(cold) == (2 * 1 + 3) * 2
    assert (cold["status"] == 200).all() and cold["cold_start"].all()
    assert (requests[requests["kind"] == "warm"]["status"] == 200).all()
    stuck = requests[requests["kind"] == "unplaceable"]
    assert list(stuck["status"]) == [503] and list(stuck["reason"]) == ["ActivationTimeout"]
    assert stuck["latency_ms"].min() > 14_000  # held to the bound, then refused
    phases = table(folder, "phases")
    assert {"gateway_to_scale", "pod_start", "first_byte"} <= set(phases["phase"])
    assert (phases["duration_ms"] >= 0).all()
    data = summary(folder)
    assert data["counts"]["activation_requests_lost"] == 0
    assert data["metrics"]["cold_start_ms"]["n"] == 2
    figures_written(folder, "cold_vs_warm", "activation_phases")


@pytest.mark.usefixtures("operator_running")
def test_load_latency(results: Path) -> None:
    folder = execute(
        results, "load_latency.ipynb",
        {"mix": "hello@2,fib?n=15@1", "users": 3, "run_time_s": 5, "replicas": 1},
    )  # fmt: skip
    requests = table(folder, "requests")
    assert requests["ok"].all() and len(requests) > 10
    assert set(requests["name"].str.split("/").str[1]) == {"hello", "fib"}
    per_function = table(folder, "request_summary")
    assert (per_function["latency_ms_p50"] <= per_function["latency_ms_p99"]).all()
    counts = summary(folder)["counts"]
    assert counts["requests_total"] == len(requests) and counts["requests_failed"] == 0
    # The generator's floor (same load, trivial endpoint) and the probe beside it.
    floor = table(folder, "floor_requests")
    assert floor["ok"].all() and len(floor) > 10 and (floor["pod"].isna()).all()
    probes = table(folder, "probes")
    assert set(probes["target"]) == {"system", "floor"} and probes["ok"].all()
    assert probes.loc[probes["target"] == "system", "pod"].notna().all(), "through the gateway"
    sources = table(folder, "latency_sources").set_index(["target", "client"])
    assert set(sources.index) == {("system", "locust"), ("floor", "locust"),
                                  ("system", "probe"), ("floor", "probe")}  # fmt: skip
    assert (sources["latency_ms_n"] > 10).all()
    assert (sources["latency_ms_p50_ci_low"] <= sources["latency_ms_p50"]).all()
    figures_written(folder, "latency_cdf", "throughput", "latency_sources")


FAULTS = ["pod-delete", "pod-crash"] + (
    ["node-kill", "operator-kill", "apiserver-restart"] if DISRUPTIVE else []
)


@pytest.mark.usefixtures("operator_running")
@pytest.mark.parametrize("fault", FAULTS)
def test_recovery(results: Path, fault: str) -> None:
    folder = execute(
        results, "recovery.ipynb", {"fault": fault, "observe_s": 45, "settle_s": 1}, fault
    )
    recovery = table(folder, "recovery").iloc[0]
    assert recovery["fault"] == fault
    assert 0 <= recovery["recovery_ms"] < 45_000
    probes = table(folder, "probes")
    assert len(probes) > 10
    assert probes["ok"].iloc[-5:].all(), "served again at the end"
    figures_written(folder, "probes", "recovery")


@pytest.mark.usefixtures("operator_running")
def test_chaos_soak(results: Path) -> None:
    """A small soak: two functions, a few event kinds (the shared components' faults only
    where disruption is allowed), then the invariants."""
    kinds = ["pod-delete", "rollout", "scale-out", "scale-in", "bad-rollout"] + (
        ["node-freeze", "etcd-kill"] if DISRUPTIVE else []
    )
    folder = execute(
        results, "chaos.ipynb",
        {"functions": 2, "kinds": kinds, "users": 2, "user_rps": 5, "gap_s": [0.5, 1.0],
         "hold_s": [2.0, 3.0], "warmup_s": 1.0},
    )  # fmt: skip
    windows = table(folder, "windows")
    assert sorted(windows["kind"][1:]) == sorted(kinds)
    assert windows["recovery_ms"][1:].notna().all(), windows.to_dict("records")
    assert windows["requests"].sum() > 50
    invariants = table(folder, "invariants")
    assert len(invariants) == 6 and invariants["holds"].all(), invariants.to_dict("records")
    counts = summary(folder)["counts"]
    assert counts["chaos_invariants_held"] == 6
    figures_written(folder, "chaos_timeline", "chaos_recovery", "chaos_requests_lost")


@pytest.mark.usefixtures("operator_running")
def test_operator_overhead(results: Path) -> None:
    folder = execute(
        results, "operator_overhead.ipynb",
        {"functions_count": 3, "idle_s": 2, "hold_s": 2, "interval_s": 0.25},
    )  # fmt: skip
    samples = table(folder, "samples")
    # Deleting three functions may take less than one sampling interval.
    assert {"idle", "deploying", "holding"} <= set(samples["phase"])
    assert (samples["rss_mib"] > 10).all() and (samples["cpu_millicores"] >= 0).all()
    metrics = summary(folder)["metrics"]
    assert metrics["operator_rss_mib"]["n"] == len(samples)
    figures_written(folder, "operator_resources")


@pytest.mark.usefixtures("operator_running")
def test_edge_network(results: Path) -> None:
    folder = execute(
        results, "edge_network.ipynb",
        {"delays_ms": [0, 40], "loss_percent": [0], "seconds_per_condition": 3, "rate_hz": 10},
    )  # fmt: skip
    conditions = table(folder, "conditions").set_index("delay_ms")
    assert conditions["failures"].sum() == 0
    assert conditions.loc[40, "latency_ms_p50"] > conditions.loc[0, "latency_ms_p50"]
    figures_written(folder, "edge_latency")


@pytest.mark.usefixtures("operator_running")
def test_scale(results: Path) -> None:
    folder = execute(
        results, "scale.ipynb",
        {"sizes": [2, 4, 6], "rest_s": 2, "probes": 1, "gateway_requests": 5,
         "wave_concurrency": 3, "interval_s": 0.25},
    )  # fmt: skip
    by_size = table(folder, "by_size")
    assert list(by_size["functions"]) == [0, 2, 4, 6]  # first with none
    assert (by_size["operator_rss_mib"] > 10).all() and (by_size["resync_ms"] > 0).all()
    assert (by_size["probe_n"] == 1).all()
    assert list(by_size["gateway_n"]) == [0, 5, 5, 5]  # no function to ask with none
    growth = table(folder, "growth")
    assert set(growth["kind"]) <= {"constant", "linear", "worse than linear", "unknown"}
    figures_written(folder, "scale_growth")


def test_summary_pools_every_run(results: Path) -> None:
    folder = execute(results, "summary.ipynb", {"all_plans": True})
    targets = table(folder, "targets")
    assert set(targets["target"]) >= {t.label for t in TARGETS}
    assert all(v.startswith(("holds", "missed", "not measured")) for v in targets["verdict"])
    assert {"ci_low", "ci_high", "settled"} <= set(targets)
    measured = set(targets.loc[targets["verdict"] != "not measured", "target"])
    # Whatever the tests before this one measured is pooled and judged.
    for experiment, target in (
        ("scaling", "Scaling latency"),
        ("scaling", "Status update lag"),
        ("load_latency", "Request success rate"),
        ("recovery", "Recovery time"),
        ("operator_overhead", "Operator memory"),
    ):
        if list(results.glob(f"{experiment}/*/summary.json")):
            assert target in measured, target
    assert (folder / "targets.md").read_text().startswith("| Target |")
    figures_written(
        folder, "deployment_cdf", "deployment_concurrency", "latency_cdf", "recovery", "targets"
    )
    if list(results.glob("deployment_latency/*/summary.json")):
        by_concurrency = table(folder, "deployment_by_concurrency")
        assert (by_concurrency["failures"] == 0).all()
        assert "status_lag_ms_p50" in by_concurrency
