"""Figures render from the experiments' tables and are written as PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from wasmop.bench import figures, plots
from wasmop.bench.targets import evaluate, results_frame


def test_every_series_differs_by_more_than_colour() -> None:
    styles = [plots.series_style(i) for i in range(len(plots.COLORS))]
    for key in ("marker", "linestyle", "hatch"):
        values = [str(s[key]) for s in styles]
        assert len(set(values)) == len(values), key


def test_save_writes_png_and_pdf(tmp_path: Path) -> None:
    fig, ax = plots.new_figure()
    plots.ecdf(ax, {"a": [1, 2, 3], "b": [2, 4]}, "latency (ms)", log_x=True)
    paths = plots.save(fig, tmp_path / "sub" / "cdf", close=True)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"


def functions_table() -> pd.DataFrame:
    return pd.DataFrame(
        {"ok": [True, True, False], "create_to_ready_ms": [900.0, 1500.0, None],
         "concurrency": [1, 10, 10]}
    )  # fmt: skip


@pytest.mark.parametrize(
    "build",
    [
        lambda: figures.deployment_cdf(functions_table()),
        lambda: figures.deployment_vs_concurrency(functions_table()),
        lambda: figures.phase_breakdown(
            pd.DataFrame(
                {
                    "concurrency": [1, 1],
                    "phase": ["operator", "pod_start"],
                    "duration_ms": [30.0, 900.0],
                }
            )
        ),
        lambda: figures.scaling_latency(
            pd.DataFrame(
                {"direction": ["out", "in"], "to_replicas": [4, 1], "latency_ms": [1200.0, 300.0]}
            )
        ),
        lambda: figures.latency_cdf(
            pd.DataFrame({"name": ["ns/a", "ns/b"], "ok": [True, True], "latency_ms": [2.0, 3.0]})
        ),
        lambda: figures.throughput_timeline(
            pd.DataFrame({"timestamp_ms": [0.0, 500.0, 1500.0], "ok": [True, False, True]})
        ),
        lambda: figures.recovery_bars(
            pd.DataFrame({"fault": ["pod-delete", "pod-delete"], "recovery_ms": [800.0, 1200.0]})
        ),
        lambda: figures.probe_timeline(
            pd.DataFrame({"t_ms": [0.0, 100.0], "ok": [True, False], "latency_ms": [2.0, 5.0]}),
            50.0,
        ),
        lambda: figures.resource_timeline(
            pd.DataFrame(
                {
                    "t_ms": [0.0, 500.0, 1000.0],
                    "pid": [1, 1, 2],  # restarted
                    "cpu_millicores": [5.0, 80.0, 20.0],
                    "rss_mib": [90.0, 95.0, 40.0],
                    "phase": ["idle", "deploying", "deploying"],
                }
            )
        ),
        lambda: figures.edge_latency(
            pd.DataFrame(
                {
                    "delay_ms": [0.0, 50.0],
                    "loss_percent": [0.0, 0.0],
                    "latency_ms_p50": [3.0, 105.0],
                    "latency_ms_p95": [5.0, 110.0],
                }
            )
        ),
        lambda: figures.targets_table_figure(results_frame(evaluate({}))),
        # No data: a figure that says so instead of an exception.
        lambda: figures.deployment_cdf(pd.DataFrame()),
        lambda: figures.recovery_bars(pd.DataFrame()),
    ],
)
def test_figures_render(build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fig = build()
    paths = plots.save(fig, tmp_path / "figure", close=True)
    assert all(p.exists() for p in paths)
    for ax in fig.axes:
        if ax.axison and ax.has_data():
            assert ax.get_ylabel(), "every plotted axis carries a label"


def threshold_lines(ax) -> set[float]:  # type: ignore[no-untyped-def]
    """Positions of the grey reference lines (axhline/axvline) on an axis."""
    positions = set()
    for line in ax.get_lines():
        if line.get_color() != "#444444":
            continue
        xs, ys = line.get_xdata(), line.get_ydata()
        if len(set(xs)) == 1:
            positions.add(float(xs[0]))
        elif len(set(ys)) == 1:
            positions.add(float(ys[0]))
    return positions


def test_threshold_lines_follow_the_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from wasmop.bench import targets

    moved = tuple(
        replace(t, threshold=t.threshold * 2, request=t.request and t.request * 2)
        for t in targets.TARGETS
    )
    monkeypatch.setattr(targets, "TARGETS", moved)
    [ax] = figures.deployment_cdf(functions_table()).axes
    assert threshold_lines(ax) == {4.0}  # 2 s target, doubled
    steps = pd.DataFrame({"direction": ["out"], "to_replicas": [4], "latency_ms": [1200.0]})
    assert threshold_lines(figures.scaling_latency(steps).axes[0]) == {10.0}
    recovery = pd.DataFrame({"fault": ["pod-delete"], "recovery_ms": [800.0]})
    assert threshold_lines(figures.recovery_bars(recovery).axes[0]) == {20.0}
    samples = pd.DataFrame(
        {"t_ms": [0.0, 500.0], "pid": [1, 1], "cpu_millicores": [5.0, 8.0],
         "rss_mib": [90.0, 95.0], "phase": ["idle", "idle"]}
    )  # fmt: skip
    cpu_ax, mem_ax = figures.resource_timeline(samples).axes
    assert {1000.0, 200.0} <= threshold_lines(cpu_ax)
    assert threshold_lines(mem_ax) == {512.0, 256.0}


def interval_bars(ax) -> list[tuple[float, float]]:  # type: ignore[no-untyped-def]
    """The (bottom, top) of every vertical error bar drawn on ``ax``."""
    from matplotlib.collections import LineCollection

    spans = []
    for collection in ax.collections:
        if isinstance(collection, LineCollection):
            for segment in collection.get_segments():
                (x0, y0), (x1, y1) = segment[0], segment[-1]
                if x0 == x1:
                    spans.append((min(y0, y1), max(y0, y1)))
    return spans


def test_medians_carry_their_bootstrap_interval() -> None:
    from wasmop.bench.stats import bootstrap_intervals

    values = [1000.0 + 37 * i % 400 for i in range(30)]
    frame = pd.DataFrame({"ok": True, "create_to_ready_ms": values, "concurrency": 10})
    [ax] = figures.deployment_vs_concurrency(frame).axes
    low, high = bootstrap_intervals(values)["p50"]
    assert (pytest.approx(low / 1000), pytest.approx(high / 1000)) in interval_bars(ax)

    steps = pd.DataFrame({"direction": "out", "to_replicas": 4, "latency_ms": values})
    [ax] = figures.scaling_latency(steps).axes
    assert (pytest.approx(low / 1000), pytest.approx(high / 1000)) in interval_bars(ax)


def test_too_few_values_draw_no_interval_bar() -> None:
    steps = pd.DataFrame({"direction": ["out"] * 3, "to_replicas": 4, "latency_ms": [1.0, 2, 3]})
    [ax] = figures.scaling_latency(steps).axes
    assert all(bottom == top for bottom, top in interval_bars(ax))
