"""Experiment runs: the folder, tidy tables, observations and the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from wasmop.bench.environment import collect_environment
from wasmop.bench.run import ExperimentRun, ratios_from_counts, safe_name


def test_a_run_writes_params_env_tables_and_summary(tmp_path: Path) -> None:
    run = ExperimentRun.start(
        "deployment", {"concurrency": 10}, results_dir=tmp_path, run_id="c10 r1", environment=False
    )
    assert run.folder == tmp_path / "deployment" / "c10-r1"
    params = json.loads(run.paths.params.read_text())
    assert params == {"experiment": "deployment", "run_id": "c10-r1", "concurrency": 10}
    env = json.loads(run.paths.env.read_text())
    assert env["cpu_count"] >= 1 and "git" in env and "pandas" in env["packages"]

    path = run.write_table(
        "functions", pd.DataFrame({"function": ["a", "b"], "latency_ms": [1, 2]})
    )
    table = pd.read_csv(path)
    assert list(table.columns) == ["experiment", "run_id", "function", "latency_ms"]
    assert path.with_suffix(".parquet").exists()
    run.write_raw("events", [{"t_ms": 1.0, "x": float("nan")}])
    assert json.loads((run.paths.raw / "events.jsonl").read_text()) == {"t_ms": 1.0, "x": None}
    assert run.figure_stem("cdf").parent == run.paths.figures

    run.observe("deploy_latency_ms", [100, 200, 300], concurrency=10)
    run.observe("status_lag_ms", 40.0)
    run.count("requests_total", 1000)
    run.count("requests_failed", 2)
    summary = run.finish(note="test")
    assert summary["metrics"]["deploy_latency_ms"]["p50"] == 200
    assert summary["metrics"]["error_ratio"]["value"] == 0.002
    verdicts = {t["target"]: t["verdict"] for t in summary["targets"]}
    assert verdicts["Deployment latency"] == "holds"
    # 2 failures in 1,000 could still be a rate under 0.1 %.
    assert verdicts["Error rate"] == "missed (95 % CI crosses the bound)"
    assert on_disk_intervals(run)["level"] == 0.95
    assert verdicts["Recovery time"] == "not measured"
    on_disk = json.loads(run.paths.summary.read_text())
    assert on_disk["note"] == "test" and on_disk["counts"]["requests_total"] == 1000
    observations = pd.read_csv(run.paths.observations)
    assert len(observations) == 4 and set(observations["metric"]) == {
        "deploy_latency_ms",
        "status_lag_ms",
    }


def on_disk_intervals(run: ExperimentRun) -> dict:  # type: ignore[type-arg]
    """The interval methods a summary.json names."""
    return json.loads(run.paths.summary.read_text())["intervals"]


def test_a_run_without_observations_still_finishes(tmp_path: Path) -> None:
    run = ExperimentRun.start("empty", results_dir=tmp_path, environment=False)
    summary = run.finish()
    assert summary["metrics"] == {}
    assert pd.read_csv(run.paths.observations).empty


def test_ratios_from_counts() -> None:
    stats = ratios_from_counts(
        {"requests_total": 200, "requests_failed": 0, "concurrent_deploy_total": 100,
         "concurrent_deploy_ready": 99}
    )  # fmt: skip
    success = stats["success_ratio"]
    assert (success["value"], success["n"], success["value_ci_high"]) == (1.0, 200, 1.0)
    assert 0.98 < success["value_ci_low"] < 1.0, "no failures in 200 is not a 100 % rate"
    ready = stats["concurrent_ready_ratio"]
    assert (ready["value"], ready["n"], ready["batch"]) == (0.99, 100, 100)
    assert ratios_from_counts({}) == {}


def test_environment_without_a_cluster_records_the_error(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    env = collect_environment()
    assert "error" in env["kubernetes"]
    assert env["cpu_model"]


def test_safe_names() -> None:
    assert safe_name("a b/c") == "a-b-c"
    assert safe_name("concurrency=10") == "concurrency=10"
