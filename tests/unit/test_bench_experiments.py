"""Every experiment's analysis, on runs recorded from the embedded cluster.

``recorded_runs/<experiment>/recorded/`` holds what one small real run wrote
(``scripts/record_test_runs.py``): its ``raw/`` data, ``params.json``, and the tables,
observations and summary the run derived from them. ``wasmop experiments analyse`` must
rebuild those CSVs byte for byte from ``raw/`` alone, and each analysis must say what
the run measured.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from wasmop.bench import watch
from wasmop.bench.experiments import registry
from wasmop.bench.experiments.base import RawData, RawDataError
from wasmop.bench.experiments.deployment_latency import analyse_deployment_latency
from wasmop.bench.experiments.edge_network import analyse_edge_network
from wasmop.bench.experiments.load_latency import analyse_load_latency
from wasmop.bench.experiments.operator_overhead import analyse_operator_overhead
from wasmop.bench.experiments.recovery import analyse_recovery
from wasmop.bench.experiments.scale import PROJECT_TO, analyse_scale, classify_growth
from wasmop.bench.experiments.scaling import analyse_load_scaling, analyse_manual_scaling
from wasmop.cli import main

RECORDED = Path(__file__).parent / "recorded_runs"
EXPERIMENTS = sorted(p.name for p in RECORDED.iterdir() if p.is_dir())


def recorded(name: str) -> RawData:
    return RawData(RECORDED / name / "recorded")


def observed(analysis, metric: str) -> list[float]:  # type: ignore[no-untyped-def]
    return [v for o in analysis.observations if o.metric == metric for v in o.values]


def test_every_experiment_is_registered_and_recorded() -> None:
    assert set(registry.experiments()) == {
        "deployment_latency", "manual_scaling", "load_scaling", "load_latency", "recovery",
        "operator_overhead", "edge_network", "chaos", "scale", "cold_start", "compare_scaling",
    }  # fmt: skip
    assert sorted(registry.experiments()) == EXPERIMENTS
    size = sum(p.stat().st_size for p in RECORDED.rglob("*") if p.is_file())
    assert size < 1_000_000, "keep the recorded runs small"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_reanalysis_rewrites_the_runs_csv_files_byte_for_byte(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = RECORDED / name / "recorded"
    written = {p.name: p.read_bytes() for p in original.glob("*.csv")}
    summary = json.loads((original / "summary.json").read_text())
    folder = tmp_path / name / "recorded"
    shutil.copytree(original / "raw", folder / "raw")
    shutil.copy2(original / "params.json", folder / "params.json")

    assert main(["experiments", "analyse", str(folder)]) == 0

    assert str(folder) in capsys.readouterr().out
    assert {p.name for p in folder.glob("*.csv")} == set(written)
    for csv_name, content in written.items():
        assert (folder / csv_name).read_bytes() == content, csv_name
    again = json.loads((folder / "summary.json").read_text())
    assert again["metrics"] == summary["metrics"] and again["counts"] == summary["counts"]
    assert again["targets"] == summary["targets"]
    pngs = list((folder / "figures").glob("*.png"))
    assert pngs and all(p.with_suffix(".pdf").stat().st_size > 1000 for p in pngs)


def test_analysing_a_folder_without_raw_data_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "params.json").write_text("{}")
    assert main(["experiments", "analyse", str(tmp_path)]) != 0
    assert "raw/experiment.json" in capsys.readouterr().err


def test_missing_raw_file_is_named() -> None:
    raw = RawData(RECORDED / "manual_scaling" / "recorded")
    with pytest.raises(RawDataError, match=r"probes\.csv"):
        raw.table("probes")


def test_unknown_parameters_are_refused() -> None:
    with pytest.raises(TypeError, match="concurency"):
        registry.get("deployment_latency").parameters({"concurency": 3})
    assert registry.get("recovery").parameters({})["fault"] == "pod-delete"


def test_recorded_events_read_back_with_their_types() -> None:
    events = recorded("deployment_latency").events()
    assert list(events.columns) == list(watch.COLUMNS)
    assert events["t_ms"].is_monotonic_increasing
    assert set(events["ready"].map(type)) <= {bool, type(None)}
    pods = events[events["kind"] == "Pod"]
    assert (pods["ready"] == True).any()  # noqa: E712
    nodes = events[events["kind"] == "Node"]
    assert (nodes["function"] == "").all() and nodes["replicas_desired"].isna().all()


def test_deployment_latency_splits_create_to_ready_into_ordered_phases() -> None:
    result = analyse_deployment_latency(recorded("deployment_latency"))
    functions = result.tables["functions"]
    assert len(functions) == 2 and functions["ok"].all()
    ordered = ["created_ms", "deployment_seen_ms", "pod_created_ms", "pod_scheduled_ms",
               "pod_ready_ms", "pods_ready_ms", "function_ready_ms"]  # fmt: skip
    assert (functions[ordered].diff(axis=1).iloc[:, 1:] >= 0).all().all()
    assert functions["acceptedAt_ms"].notna().all(), "the operator's own clock is kept"
    assert (functions["status_lag_ms"] >= 0).all()
    phases = result.tables["phases"]
    assert len(phases) == 2 * 6 and (phases["duration_ms"] >= 0).all()
    per_function = phases.groupby("function")["duration_ms"].sum()
    by_function = functions.set_index("function")
    created_to_ready = by_function["function_ready_ms"] - by_function["created_ms"]
    assert per_function.round(6).equals(created_to_ready.round(6)), "phases add up"
    assert len(observed(result, "concurrent_deploy_latency_ms")) == 2
    assert result.counts == {"concurrent_deploy_total": 2, "concurrent_deploy_ready": 2}
    assert set(result.figures) == {"deployment_cdf", "deployment_phases", "pod_starts"}
    # The recorded run took its module from the registry: a new digest, so each node's
    # first Pod pulled it (and says so in its Pulled Event).
    pods = result.tables["pods"]
    assert len(pods) == 2 and (pods["source"] == "image").all()
    assert set(pods["module"]) <= {"pulled", "on node"} and "pulled" in set(pods["module"])
    assert (pods["start_ms"] > 0).all() and (pods["ready_ms"] > pods["created_ms"]).all()
    first = observed(result, "image_first_pod_start_ms")
    assert len(first) == (pods["module"] == "pulled").sum()


def test_manual_scaling_times_each_request_to_ready() -> None:
    result = analyse_manual_scaling(recorded("manual_scaling"))
    steps = result.tables["scale_steps"]
    assert list(steps["direction"]) == ["out", "in"]
    assert list(steps["to_replicas"]) == [2, 1]
    assert (steps["ready_ms"] > steps["requested_ms"]).all()
    assert (steps["latency_ms"] == steps["ready_ms"] - steps["requested_ms"]).all()
    out = steps.iloc[0]
    assert out["status_lag_ms"] == out["ready_ms"] - out["pods_ready_ms"] >= 0
    assert pd.isna(steps.iloc[1]["status_lag_ms"]), "status lag is a scale-out measure"
    assert observed(result, "scale_latency_ms") == [out["latency_ms"]]


def test_load_scaling_finds_the_scale_out_decisions() -> None:
    raw = recorded("load_scaling")
    result = analyse_load_scaling(raw)
    decisions = result.tables["decisions"]
    ups = decisions[decisions["to_replicas"] > decisions["from_replicas"]]
    assert not ups.empty
    assert (ups["decided_ms"] >= raw.mark_ms("load-start")).all()
    assert (ups["reaction_ms"] >= 0).all() and (ups["decision_to_ready_ms"] > 0).all()
    assert result.tables["load_history"]["User Count"].max() == 4
    assert observed(result, "autoscale_reaction_ms") == ups["reaction_ms"].tolist()


def test_load_latency_counts_every_request_of_the_raw_log() -> None:
    result = analyse_load_latency(recorded("load_latency"))
    requests = result.tables["requests"]
    assert len(requests) > 10 and requests["ok"].all()
    assert set(requests["name"].str.split("/").str[1]) == {"hello", "fib"}
    summary = result.tables["request_summary"]
    assert summary["requests"].sum() == len(requests)
    assert (summary["latency_ms_p50"] <= summary["latency_ms_p99"]).all()
    final = result.tables["locust_final"]
    assert final["num_requests"].sum() == len(requests), "Locust counted the same requests"
    assert result.counts == {"requests_total": len(requests), "requests_failed": 0}


def test_load_latency_sets_the_system_beside_the_generators_floor_and_a_probe() -> None:
    raw = recorded("load_latency")
    result = analyse_load_latency(raw)
    floor = result.tables["floor_requests"]
    assert len(floor) > 10 and floor["ok"].all()
    assert (floor["pod"] == "").all(), "the floor's requests never reached the gateway"
    probes = result.tables["probes"]
    assert set(probes["target"]) == {"system", "floor"}
    through_gateway = probes[probes["target"] == "system"]
    assert (through_gateway["pod"].str.len() > 0).all()
    # Open loop at probe_rate_hz for as long as Locust ran (a few seconds).
    rate = raw.parameters["probe_rate_hz"]
    assert len(through_gateway) >= rate * raw.parameters["run_time_s"] * 0.8
    sources = result.tables["latency_sources"].set_index(["target", "client"])
    assert list(sources.index) == [
        ("system", "locust"), ("floor", "locust"), ("system", "probe"), ("floor", "probe"),
    ]  # fmt: skip
    assert (
        sources.loc[("system", "locust"), "latency_ms_n"] == result.tables["requests"]["ok"].sum()
    )
    assert (sources["latency_ms_p50_ci_low"] <= sources["latency_ms_p50"]).all()
    assert (sources["latency_ms_p50"] <= sources["latency_ms_p50_ci_high"]).all()
    metrics = {o.metric for o in result.observations}
    assert {"request_latency_ms", "probe_latency_ms", "locust_floor_latency_ms",
            "probe_floor_latency_ms"} <= metrics  # fmt: skip
    # Only the system's requests count towards the success and error rates.
    assert result.counts["requests_total"] == len(result.tables["requests"])


def test_recovery_reports_both_views_of_the_fault() -> None:
    raw = recorded("recovery")
    result = analyse_recovery(raw)
    [row] = result.tables["recovery"].to_dict("records")
    assert row["fault"] == "pod-delete" and row["fault_ms"] == raw.json("fault")["t_ms"]
    assert row["cluster_degraded_ms"] >= row["fault_ms"]
    assert row["cluster_restored_ms"] > row["cluster_degraded_ms"]
    assert row["recovery_ms"] == max(
        row["cluster_fault_to_ready_ms"], row["client_fault_to_recovered_ms"] or 0
    )
    probes = result.tables["probes"]
    assert probes["ok"].iloc[-5:].all(), "served again at the end"
    assert result.counts["fault_requests_total"] == len(probes)


def test_operator_overhead_assigns_each_sample_its_phase() -> None:
    raw = recorded("operator_overhead")
    result = analyse_operator_overhead(raw)
    samples = result.tables["samples"]
    marks = raw.marks("phase")
    assert list(marks["detail"]) == ["idle", "deploying", "holding", "deleting", "idle-after"]
    for sample in samples.dropna(subset=["phase"]).itertuples():
        started = marks[marks["detail"] == sample.phase]["t_ms"].iloc[0]
        assert sample.t_ms >= started
    phases = result.tables["phases"]
    assert phases["samples"].sum() == samples["phase"].notna().sum()
    assert len(observed(result, "operator_rss_mib")) == len(samples)
    assert result.tables["deployments"]["ok"].all()


def test_edge_network_latency_grows_with_the_link_delay() -> None:
    result = analyse_edge_network(recorded("edge_network"))
    conditions = result.tables["conditions"].set_index("delay_ms")
    assert list(conditions.index) == [0, 40]
    assert conditions["failures"].sum() == 0
    assert conditions.loc[40, "latency_ms_p50"] > conditions.loc[0, "latency_ms_p50"] + 30
    assert (result.tables["probes"]["node"] == "wasm-node-2").all()


def test_scale_sets_each_cost_against_the_functions_held() -> None:
    raw = recorded("scale")
    sizes = raw.parameters["sizes"]
    result = analyse_scale(raw)
    table = result.tables["by_size"]
    assert list(table["functions"]) == [0, *sizes]  # first with none
    assert np.isnan(table["operator_requests_per_minute_per_function"].iloc[0])
    assert (table["agent_mib_per_pod"].iloc[1:] > 0).all()
    assert (table["operator_rss_mib"] > 10).all()
    assert (table["operator_idle_cpu_millicores"] >= 0).all()
    assert (table["resync_ms"] > 0).all() and (table["resync_queued"] == 0).all()
    assert (table["probe_n"] == raw.parameters["probes"]).all()
    # With no function there is none to ask through the gateway.
    assert list(table["gateway_n"]) == [0] + [raw.parameters["gateway_requests"]] * len(sizes)
    assert (table["operator_requests_per_minute"] >= 0).all()
    growth = result.tables["growth"]
    assert set(growth["kind"]) <= {"constant", "linear", "worse than linear", "unknown"}
    assert (growth["project_to"] == PROJECT_TO).all()
    assert observed(result, "operator_rss_mib")
    assert "scale_growth" in result.figures
    # Measured points are markers; each fit is a plain dashed line (the style cycle had
    # put a marker on every point of its grid, so fit and data looked alike).
    for ax in result.figures["scale_growth"].axes:
        for line in ax.get_lines():
            if line.get_linestyle() == "--":
                assert line.get_marker() in ("", "None", None), ax.get_ylabel()


def test_growth_is_named_constant_linear_or_worse() -> None:
    n = [10, 100, 250, 500, 1000]
    flat = classify_growth(n, [100.0, 101.0, 99.5, 100.5, 102.0])
    assert flat.kind == "constant" and flat.projected == pytest.approx(100.6)
    line = classify_growth(n, [60.0 + 0.05 * x for x in n])
    assert line.kind == "linear"
    assert line.slope == pytest.approx(0.05) and line.projected == pytest.approx(560.0)
    worse = classify_growth(n, [1.0 + 1e-4 * x * x for x in n])
    assert worse.kind == "worse than linear" and worse.projected == pytest.approx(10_001.0)
    assert classify_growth([10, 20], [1.0, 2.0]).kind == "unknown"
    # Falling is no growth; a change within the measurement's resolution is none either.
    assert classify_growth(n, [156.0, 118.0, 117.0, 123.0, 110.0]).kind == "constant"
    cpu = classify_growth(n, [2.0, 2.0, 2.0, 5.0, 4.0], flat_within=5.0)
    assert cpu.kind == "constant"
    # Four points are too few to call a bend worse than linear.
    assert classify_growth(n[:4], [1.0, 2.0, 9.0, 30.0]).kind == "linear"


def test_a_fit_does_not_carry_the_arithmetics_last_digits() -> None:
    """A re-analysis on another numpy or BLAS build writes the same growth table: the
    recorded scale run's fit differed in its 16th digit after an upgrade."""
    n = [0, 10, 100, 250, 500, 1000]
    rss = [58.6, 67.1, 108.1, 121.5, 146.8, 170.0]
    nudged = [math.nextafter(v, math.inf) for v in rss]  # one unit in the last place
    first, second = classify_growth(n, rss), classify_growth(n, nudged)
    assert (first.intercept, first.slope, first.quadratic, first.r2_linear, first.projected) == (
        second.intercept,
        second.slope,
        second.quadratic,
        second.r2_linear,
        second.projected,
    )
    assert first.slope == pytest.approx(0.1, rel=0.2)
