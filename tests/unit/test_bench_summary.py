"""The summary judges the operator alone: no table pools its runs with the plain baseline's.

Runs of both modes are written as the experiments write them (a ``mode`` parameter and
column, ``plain_*`` metric names). The property checked for every table the summary
makes: its operator rows (or the whole table, if it has no ``mode`` column) are exactly
what the operator's runs alone give, and its plain rows exactly what the plain runs
alone give. A comparison table (operator over plain) must equal the ratio of the two
modes' own statistics.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from wasmop.bench import report
from wasmop.bench.experiments.base import metric_name
from wasmop.bench.run import ExperimentRun
from wasmop.bench.summary import COMPARISONS, summarise

matplotlib.use("Agg")

LEVELS = (1, 10)


def deployment_run(root: Path, mode: str, concurrency: int, repetition: int) -> None:
    """A deployment_latency run whose latencies tell the modes apart: plain's are ten
    times shorter, so any pooling moves every statistic."""
    run = ExperimentRun.start(
        "deployment_latency",
        {"plan": "test", "mode": mode, "concurrency": concurrency},
        results_dir=root,
        run_id=f"{mode}-{concurrency}-{repetition}",
        environment=False,
    )
    rng = np.random.default_rng(hash((mode, concurrency, repetition)) % 2**32)
    scale = 1000.0 if mode == "operator" else 100.0
    latency = scale * (1 + rng.random(max(concurrency, 12)))
    functions = pd.DataFrame(
        {
            "function": [f"fn-{i:03d}" for i in range(latency.size)],
            "ok": True,
            "create_to_ready_ms": latency,
            "status_lag_ms": latency / 10,
            "concurrency": concurrency,
            "mode": mode,
        }
    )
    run.write_table("functions", functions)
    phases = functions[["function"]].assign(phase="operator", duration_ms=latency / 2)
    if mode == "operator":
        run.write_table("phases", phases.assign(concurrency=concurrency))
    name = "deploy_latency_ms" if concurrency == 1 else "concurrent_deploy_latency_ms"
    run.observe(metric_name(mode, name), latency)
    run.finish()


def load_run(root: Path, mode: str) -> None:
    run = ExperimentRun.start(
        "load_latency", {"plan": "test", "mode": mode}, results_dir=root,
        run_id=f"load-{mode}", environment=False,
    )  # fmt: skip
    run.count(metric_name(mode, "requests_total"), 1000)
    run.count(metric_name(mode, "requests_failed"), 0 if mode == "operator" else 500)
    run.finish()


def write_runs(root: Path, modes: tuple[str, ...]) -> pd.DataFrame:
    for mode in modes:
        for level in LEVELS:
            for repetition in range(2):
                deployment_run(root, mode, level, repetition)
        load_run(root, mode)
    return report.runs(root, plan="test")


@pytest.fixture(scope="module")
def summaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    made = {
        name: summarise(write_runs(tmp_path_factory.mktemp(name), modes))
        for name, modes in (
            ("both", ("operator", "plain")),
            ("operator", ("operator",)),
            ("plain", ("plain",)),
        )
    }
    plt.close("all")
    return made


def _rows(table: pd.DataFrame, mode: str) -> pd.DataFrame:
    return table[table["mode"] == mode].reset_index(drop=True)


def test_no_summary_table_pools_the_modes(summaries: dict[str, object]) -> None:
    both, alone = summaries["both"], {m: summaries[m] for m in ("operator", "plain")}
    checked = 0
    for name, table in both.analysis.tables.items():  # type: ignore[attr-defined]
        if name in COMPARISONS:
            continue
        operator_alone = alone["operator"].analysis.tables[name]  # type: ignore[attr-defined]
        if "mode" not in table:
            pd.testing.assert_frame_equal(table, operator_alone, obj=name)
            checked += 1
            continue
        for mode, summary in alone.items():
            pd.testing.assert_frame_equal(
                _rows(table, mode),
                _rows(summary.analysis.tables[name], mode),  # type: ignore[attr-defined]
                obj=f"{name}, {mode} rows",
            )
        checked += 1
    assert checked >= 2  # the targets and the table per concurrency at least


def test_targets_judge_the_operator_alone(summaries: dict[str, object]) -> None:
    both = summaries["both"].metrics  # type: ignore[attr-defined]
    operator = summaries["operator"].metrics  # type: ignore[attr-defined]
    assert both["deploy_latency_ms"] == operator["deploy_latency_ms"]
    assert both["success_ratio"]["value"] == 1.0  # plain's 500 failures are not the operator's


def test_the_comparison_is_the_ratio_of_each_mode_alone(summaries: dict[str, object]) -> None:
    tables = summaries["both"].analysis.tables  # type: ignore[attr-defined]
    by_level = tables["deployment_by_concurrency"].set_index(["mode", "concurrency"])
    ratios = tables["deployment_ratio"]
    assert sorted(ratios["concurrency"].unique()) == list(LEVELS)
    for row in ratios.itertuples(index=False):
        column = f"create_to_ready_ms_{row.statistic}"
        expected = (
            by_level.loc[("operator", row.concurrency), column]
            / by_level.loc[("plain", row.concurrency), column]
        )
        assert row.value == pytest.approx(expected)
        assert row.ci_low <= row.value <= row.ci_high
    assert "deployment_concurrency" in summaries["both"].analysis.figures  # type: ignore[attr-defined]
