"""Pooling many runs for the summary: observations, counts, the largest batch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from wasmop.bench import report
from wasmop.bench.run import ExperimentRun


def make_run(root: Path, experiment: str, run_id: str, plan: str, **data: object) -> ExperimentRun:
    run = ExperimentRun.start(
        experiment, {"plan": plan, **data.get("params", {})}, results_dir=root,
        run_id=run_id, environment=False,
    )  # fmt: skip
    for metric, values in data.get("observe", {}).items():
        run.observe(metric, values)
    for name, value in data.get("counts", {}).items():
        run.count(name, value)
    run.write_table("functions", pd.DataFrame({"function": ["f"], "create_to_ready_ms": [1.0]}))
    run.finish()
    return run


def test_runs_are_pooled_per_plan(tmp_path: Path) -> None:
    make_run(tmp_path, "deployment_latency", "a", "quick", params={"concurrency": 10},
             observe={"deploy_latency_ms": [100, 300]},
             counts={"concurrent_deploy_total": 10, "concurrent_deploy_ready": 10})  # fmt: skip
    make_run(tmp_path, "deployment_latency", "b", "quick", params={"concurrency": 100},
             observe={"deploy_latency_ms": [200]},
             counts={"concurrent_deploy_total": 100, "concurrent_deploy_ready": 99})  # fmt: skip
    make_run(tmp_path, "load_latency", "c", "quick",
             counts={"requests_total": 1000, "requests_failed": 1})  # fmt: skip
    make_run(tmp_path, "load_latency", "d", "other", counts={"requests_total": 5})
    (tmp_path / "load_latency" / "unfinished").mkdir()

    runs = report.runs(tmp_path, plan="quick")
    assert sorted(runs["run_id"]) == ["a", "b", "c"]
    assert set(runs["param_plan"]) == {"quick"}
    assert len(report.runs(tmp_path)) == 4
    assert len(report.runs(tmp_path, experiments=["load_latency"])) == 2

    stats = report.pooled_metrics(runs)
    assert stats["deploy_latency_ms"]["p50"] == 200 and stats["deploy_latency_ms"]["n"] == 3
    assert stats["error_ratio"]["value"] == 0.001
    # 10 + 100 is not 110 at once: only the largest batch counts.
    ready = stats["concurrent_ready_ratio"]
    assert (ready["value"], ready["n"], ready["batch"]) == (0.99, 100, 100)
    assert ready["value_ci_low"] < 0.99 < ready["value_ci_high"] <= 1.0

    table = report.load_table(runs, "functions")
    assert sorted(table["run_id"]) == ["a", "b", "c"]
    by_concurrency = report.metric_values(runs, "deploy_latency_ms", by="concurrency")
    assert by_concurrency == {"10": [100.0, 300.0], "100": [200.0]}
    assert report.select_runs(runs, {"concurrency": 100})["run_id"].tolist() == ["b"]


def test_figure_index_lists_png_and_pdf(tmp_path: Path) -> None:
    run = make_run(tmp_path, "x", "r", "p")
    stem = run.figure_stem("fig")
    stem.with_suffix(".png").write_bytes(b"")
    stem.with_suffix(".pdf").write_bytes(b"")
    index = report.figure_index(tmp_path)
    assert index.loc[0, "figure"] == "fig" and index.loc[0, "pdf"].endswith("fig.pdf")


def test_nothing_to_pool(tmp_path: Path) -> None:
    assert report.runs(tmp_path).empty
    assert report.load_table(report.runs(tmp_path), "functions").empty


def test_statistics_per_group_count_failures_apart() -> None:
    frame = pd.DataFrame(
        {
            "concurrency": [1, 10, 10, 10],
            "ok": [True, True, True, False],
            "create_to_ready_ms": [500.0, 1000.0, 3000.0, None],
            "status_lag_ms": [10.0, 20.0, 40.0, None],
        }
    )
    table = report.describe_by(frame, "concurrency", ["create_to_ready_ms", "status_lag_ms"])
    table = table.set_index("concurrency")
    assert table.loc[10, "status_lag_ms_p50"] == 30.0
    assert table.loc[10, "observations"] == 3 and table.loc[10, "failures"] == 1
    assert table.loc[10, "create_to_ready_ms_p50"] == 2000.0
    assert table.loc[1, "create_to_ready_ms_max"] == 500.0
    assert report.describe_by(pd.DataFrame(), "concurrency", "x").empty
