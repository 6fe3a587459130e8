"""A figure style for the dissertation: readable printed in black and white.

Series differ by marker, line style and hatching as well as by (grey-scale friendly)
colour; axes carry labels with units; every figure is saved as PNG (for notebooks and
the README) and PDF (vector, for LaTeX) by :func:`save`. Point estimates carry their
95 % intervals (:mod:`wasmop.bench.stats`): an ECDF marks its median's interval, lines
and bars take interval bars.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import cycle
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from wasmop.bench.stats import bootstrap_intervals

# Colour-blind safe and distinct in grey scale (dark to light), each with its own marker,
# line style and hatch, so a series never depends on colour alone.
COLORS = ("#000000", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#7f7f7f")
MARKERS = ("o", "s", "^", "D", "v", "x")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
HATCHES = ("", "///", "...", "xxx", "\\\\\\", "++")


def series_style(index: int) -> dict[str, Any]:
    """Colour, marker, line style and hatch of the ``index``-th series."""
    i = index % len(COLORS)
    return {
        "color": COLORS[i],
        "marker": MARKERS[i],
        "linestyle": LINESTYLES[i],
        "hatch": HATCHES[i],
    }


def _leading(value: float) -> int:
    """The leading digit of a positive number (log-axis minor tick labels: 2 and 5)."""
    if value <= 0:
        return 0
    return int(f"{value:e}"[0])


def log_axis(ax: Axes, which: str = "y") -> Axes:
    """A log scale labelled 1, 2, 5, 10, 20 ... instead of 2x10^0 (readable in print)."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(
        FuncFormatter(lambda value, _: f"{value:g}" if _leading(value) in (2, 5) else "")
    )
    return ax


def use_style() -> None:
    """Apply the house style to matplotlib's defaults."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.0, 3.6),
            "figure.dpi": 110,
            "savefig.dpi": 200,
            "savefig.bbox": "tight",
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "legend.frameon": False,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.color": "#cccccc",
            "grid.linestyle": ":",
            "grid.linewidth": 0.6,
            "lines.linewidth": 1.5,
            "lines.markersize": 5,
            "hatch.linewidth": 0.6,
            "pdf.fonttype": 42,  # embed TrueType: editable text, no Type 3 fonts
            "ps.fonttype": 42,
            "axes.prop_cycle": cycler(color=COLORS)
            + cycler(marker=MARKERS)
            + cycler(linestyle=list(LINESTYLES)),
        }
    )


def new_figure(
    ncols: int = 1, nrows: int = 1, width: float = 6.0, height: float = 3.6, **kwargs: Any
) -> tuple[Figure, Any]:
    use_style()
    return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)


def save(fig: Figure, stem: Path | str, close: bool = False) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf``; returns both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path)
    if close:
        plt.close(fig)
    return paths


Interval = tuple[Sequence[float], Sequence[float]]  # lows and highs, one per point


def error_extents(
    values: Sequence[float], interval: Interval
) -> tuple[np.ndarray, np.ndarray] | None:
    """matplotlib's (below, above) distances from ``values`` to an interval's ends; NaN
    where a point has no interval (too few observations), so no bar is drawn there."""
    centre = np.asarray(values, dtype=float)
    low, high = (np.asarray(end, dtype=float) for end in interval)
    if not np.isfinite(low).any():
        return None
    return np.clip(centre - low, 0, None), np.clip(high - centre, 0, None)


def ecdf(
    ax: Axes,
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    *,
    log_x: bool = False,
    markevery: float = 0.1,
    median_interval: bool = True,
) -> Axes:
    """Empirical CDF per series: the whole distribution, not just a few percentiles.
    With ``median_interval``, a bar at 0.5 spans each median's 95 % interval."""
    for i, (label, values) in enumerate(series.items()):
        data = np.sort(np.asarray([v for v in values if np.isfinite(v)], dtype=float))
        if data.size == 0:
            continue
        y = np.arange(1, data.size + 1) / data.size
        style = series_style(i)
        ax.step(
            data, y, where="post", label=f"{label} (n={data.size})",
            color=style["color"], linestyle=style["linestyle"],
            marker=style["marker"], markevery=markevery, markersize=4,
        )  # fmt: skip
        interval = bootstrap_intervals(data).get("p50") if median_interval else None
        if interval is not None:
            median = float(np.quantile(data, 0.5))
            ax.errorbar(
                [median], [0.5], xerr=[[median - interval[0]], [interval[1] - median]],
                color=style["color"], capsize=4, linewidth=1.5, marker="|", markersize=8,
            )  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of observations")
    ax.set_ylim(0, 1.02)
    if log_x:
        log_axis(ax, "x")
    if series:
        ax.legend(loc="best")
    return ax


def bars(
    ax: Axes,
    labels: Sequence[str],
    values: Sequence[float],
    ylabel: str,
    *,
    interval: Interval | None = None,
    xlabel: str = "",
) -> Axes:
    """Bars with a hatch each, and each value's interval as an error bar."""
    x = np.arange(len(labels))
    extents = error_extents(values, interval) if interval is not None else None
    for i, value in enumerate(values):
        style = series_style(i)
        yerr = None if extents is None else [[extents[0][i]], [extents[1][i]]]
        ax.bar(
            x[i], value, color="white", edgecolor=style["color"], hatch=style["hatch"] or None,
            linewidth=1.0, yerr=yerr, capsize=3,
        )  # fmt: skip
    ax.set_xticks(x, labels)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.grid(axis="x", visible=False)
    return ax


def stacked_bars(
    ax: Axes,
    categories: Sequence[str],
    components: Mapping[str, Sequence[float]],
    ylabel: str,
    *,
    xlabel: str = "",
) -> Axes:
    """One bar per category split into hatched components (a phase breakdown)."""
    x = np.arange(len(categories))
    bottom = np.zeros(len(categories))
    width = 0.6 if len(categories) > 1 else 0.4
    for i, (label, values) in enumerate(components.items()):
        data = np.nan_to_num(np.asarray(values, dtype=float))
        style = series_style(i)
        ax.bar(
            x, data, bottom=bottom, label=label, color="white", edgecolor=style["color"],
            hatch=style["hatch"] or None, linewidth=1.0, width=width,
        )  # fmt: skip
        bottom += data
    ax.set_xticks(x, categories)
    ax.set_xlim(-0.75, len(categories) - 0.25)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.grid(axis="x", visible=False)
    # Outside the axes, top to bottom in stacking order reversed (as the bars read).
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def lines(
    ax: Axes,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    *,
    markevery: int | float = 0.1,
    step: bool = False,
    intervals: Mapping[str, Interval] | None = None,
) -> Axes:
    """Several series over a common x (time, load), each with marker and line style, and
    interval bars for the series named in ``intervals``."""
    for i, (label, values) in enumerate(series.items()):
        style = series_style(i)
        extents = error_extents(values, intervals[label]) if label in (intervals or {}) else None
        if extents is not None:
            ax.errorbar(
                x, values, yerr=np.vstack(extents), fmt="none", ecolor=style["color"],
                capsize=3, linewidth=1.0,
            )  # fmt: skip
        kwargs = {
            "label": label,
            "color": style["color"],
            "linestyle": style["linestyle"],
            "marker": style["marker"],
            "markevery": markevery,
        }
        if step:
            ax.step(x, values, where="post", **kwargs)
        else:
            ax.plot(x, values, **kwargs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend(loc="best")
    return ax


def mark_times(ax: Axes, times: Sequence[float], labels: Sequence[str] | None = None) -> Axes:
    """Vertical lines at events (a fault, a scale request), labelled at the top."""
    styles = cycle(["--", ":", "-."])
    for i, t in enumerate(times):
        ax.axvline(t, color="#444444", linestyle=next(styles), linewidth=1.0)
        if labels:
            # Alternate heights so labels of events close in time do not overlap.
            ax.annotate(
                labels[i], (t, 1.0 if i % 2 == 0 else 0.55), xycoords=("data", "axes fraction"),
                rotation=90, va="top", ha="right", fontsize=8, color="#444444",
            )  # fmt: skip
    return ax
