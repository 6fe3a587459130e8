"""The dissertation's figures, built from the experiments' tidy tables.

Each function takes the tables an experiment wrote (one run's, or many runs' pooled by
:mod:`wasmop.bench.report`) and returns a matplotlib Figure in the house style of
:mod:`wasmop.bench.plots`; the experiment notebooks and the summary notebook share them,
so a figure looks the same wherever it is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from wasmop.bench import plots
from wasmop.bench.stats import bootstrap_intervals, ratio_of
from wasmop.bench.targets import format_interval, format_value, target
from wasmop.bench.watch import PHASES

PHASE_LABELS = {
    "operator": "operator (validate, create Deployment)",
    "replicaset": "ReplicaSet controller",
    "scheduling": "scheduler",
    "pod_start": "node agent (start, probe)",
    "rollout": "remaining replicas",
    "status": "status update",
}


def _seconds(key: str) -> float:
    """A latency target's bound in seconds, for a threshold line on a seconds axis."""
    bound = target(key)
    if bound.unit != "ms":
        raise ValueError(f"target {key} is in {bound.unit}, not ms")
    return bound.threshold / 1000


def _intervals(groups: pd.core.groupby.SeriesGroupBy, statistic: str) -> plots.Interval:
    """Each group's 95 % interval of ``statistic`` (NaN where it has too few values)."""
    lows, highs = [], []
    for _, values in groups:
        low, high = bootstrap_intervals(values).get(statistic, (np.nan, np.nan))
        lows.append(low)
        highs.append(high)
    return lows, highs


def _scaled(interval: plots.Interval, factor: float) -> plots.Interval:
    return [v * factor for v in interval[0]], [v * factor for v in interval[1]]


def _empty(fig: Figure, ax: object, text: str) -> Figure:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)  # type: ignore[attr-defined]
    ax.set_axis_off()  # type: ignore[attr-defined]
    return fig


def deployment_cdf(functions: pd.DataFrame, by: str = "concurrency") -> Figure:
    """ECDF of create-to-Ready per concurrency level."""
    fig, ax = plots.new_figure()
    ok = functions[functions["ok"].astype(bool)] if not functions.empty else functions
    if ok.empty:
        return _empty(fig, ax, "no successful deployment")
    series = {
        f"{by} {key}": (group["create_to_ready_ms"] / 1000).tolist()
        for key, group in ok.groupby(by, sort=True)
    }
    plots.ecdf(ax, series, "create to Ready (s)")
    bound = _seconds("deployment")
    ax.axvline(bound, color="#444444", linestyle="--", linewidth=1)
    ax.annotate(
        f"target {bound:g} s", (bound, 0.05), xytext=(4, 0), textcoords="offset points", fontsize=8
    )
    ax.set_title("Deployment latency")
    return fig


def pod_start_cdf(pods: pd.DataFrame) -> Figure:
    """ECDF of each Pod's start (first seen to Ready) by where its module came from: the
    node pulled it for this Pod (pull + compile), or had it (cached), or a ConfigMap."""
    fig, ax = plots.new_figure()
    if pods.empty:
        return _empty(fig, ax, "no Pod became Ready")
    labels = {
        "pulled": "first on its node (pull + compile)",
        "on node": "module on the node",
        "": "from a ConfigMap",
    }
    series = {
        labels.get(origin, origin): (group["start_ms"] / 1000).tolist()
        for origin, group in pods.groupby(pods["module"].fillna(""), sort=True)
    }
    plots.ecdf(ax, series, "Pod start, first seen to Ready (s)")
    ax.set_title("Pod start by module origin")
    return fig


def deployment_vs_concurrency(functions: pd.DataFrame) -> Figure:
    """Median and p95 create-to-Ready against the number of functions created at once,
    one pair of curves per mode, each point with its 95 % interval; with both modes, a
    second panel shows the operator's median and p95 over the baseline's (plain
    Deployments of the same run or plan), with 95 % bootstrap intervals."""
    ok = functions[functions["ok"].astype(bool)] if not functions.empty else functions
    modes = sorted(ok["mode"].dropna().unique()) if "mode" in ok else []
    compare = {"operator", "plain"} <= set(modes)
    fig, axes = plots.new_figure(
        nrows=2 if compare else 1, height=5.4 if compare else 3.6, sharex=compare
    )
    ax = axes[0] if compare else axes
    if ok.empty:
        return _empty(fig, ax, "no successful deployment")
    by_mode = {mode: ok[ok["mode"] == mode] for mode in modes} if modes else {"": ok}
    x_all: set[int] = set()
    for i, (mode, rows) in enumerate(by_mode.items()):
        grouped = rows.groupby("concurrency")["create_to_ready_ms"]
        x = grouped.median().index.tolist()
        x_all |= set(x)
        prefix = f"{mode} " if mode else ""
        for j, (label, values) in enumerate(
            (("median", grouped.median()), ("p95", grouped.quantile(0.95)))
        ):
            style = plots.series_style(2 * i + j)
            ax.plot(x, (values / 1000).tolist(), label=f"{prefix}{label}", color=style["color"],
                    marker=style["marker"], linestyle=style["linestyle"])  # fmt: skip
            low, high = _scaled(_intervals(grouped, {"median": "p50"}.get(label, label)), 1e-3)
            extents = plots.error_extents((values / 1000).tolist(), (low, high))
            if extents is not None:
                ax.errorbar(x, (values / 1000).tolist(), yerr=np.vstack(extents), fmt="none",
                            ecolor=style["color"], capsize=3, linewidth=1.0)  # fmt: skip
    ax.set_ylabel("create to Ready (s)")
    ax.axhline(_seconds("deployment"), color="#444444", linestyle=":", linewidth=1)
    ax.legend(loc="upper left")
    ax.set_title("Deployment latency against concurrency (bars: 95 % CI)")
    xs = sorted(x_all)
    if compare:
        ratio_ax = axes[1]
        for j, statistic in enumerate(("p50", "p95")):
            rows = []
            for level in xs:
                at = ok[ok["concurrency"] == level]
                r = ratio_of(
                    at.loc[at["mode"] == "operator", "create_to_ready_ms"],
                    at.loc[at["mode"] == "plain", "create_to_ready_ms"],
                    statistic,
                )
                rows.append((level, r["value"], r["ci_low"], r["ci_high"]))
            level, value, low, high = (np.asarray(v, dtype=float) for v in zip(*rows, strict=True))
            style = plots.series_style(j)
            errors = np.vstack([np.nan_to_num(value - low), np.nan_to_num(high - value)])
            ratio_ax.errorbar(level, value, yerr=errors, capsize=3, color=style["color"],
                              marker=style["marker"], linestyle=style["linestyle"],
                              label=f"{statistic} operator / plain")  # fmt: skip
        ratio_ax.axhline(1.0, color="#444444", linestyle=":", linewidth=1)
        ratio_ax.set_ylabel("operator / plain")
        ratio_ax.set_xlabel("functions created at once")
        ratio_ax.legend(loc="upper left")
    else:
        ax.set_xlabel("functions created at once")
    bottom = axes[-1] if compare else ax
    if len(xs) > 1 and max(xs) / max(min(xs), 1) >= 10:
        bottom.set_xscale("log")
        bottom.set_xticks(xs, [str(v) for v in xs])
    return fig


def phase_breakdown(phases: pd.DataFrame, by: str = "concurrency") -> Figure:
    """Median time in each phase of a deployment, stacked, per concurrency level."""
    fig, ax = plots.new_figure(width=7.5)
    if phases.empty:
        return _empty(fig, ax, "no phase data")
    medians = phases.groupby([by, "phase"])["duration_ms"].median().unstack("phase")
    order = [p for p, _, _ in PHASES if p in medians.columns]
    components = {PHASE_LABELS.get(p, p): (medians[p] / 1000).tolist() for p in order}
    plots.stacked_bars(
        ax, [str(i) for i in medians.index], components, "median time (s)", xlabel=by
    )
    ax.set_title("Where deployment time goes")
    return fig


def scaling_latency(steps: pd.DataFrame) -> Figure:
    """Scale-out and scale-in latency (request to ready): the median with its 95 %
    interval, each repetition a marker."""
    fig, ax = plots.new_figure()
    if steps.empty:
        return _empty(fig, ax, "no scaling steps")
    labels = []
    for i, (key, group) in enumerate(steps.groupby(["direction", "to_replicas"], sort=False)):
        direction, to = key
        label = f"scale {direction} to {to}\n(n={len(group)})"
        labels.append(label)
        style = plots.series_style(i)
        values = group["latency_ms"] / 1000
        median = values.median()
        low, high = bootstrap_intervals(values).get("p50", (median, median))
        ax.bar(
            i, median, color="white", edgecolor=style["color"],
            hatch=style["hatch"] or None, linewidth=1.0,
            yerr=[[median - low], [high - median]], capsize=4,
        )  # fmt: skip
        jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
        ax.plot(i + np.asarray(jitter), values, linestyle="none", marker=style["marker"],
                color="black", markersize=4)  # fmt: skip
    ax.set_xticks(range(len(labels)), labels)
    ax.axhline(_seconds("scaling"), color="#444444", linestyle="--", linewidth=1)
    ax.set_ylabel("request to ready (s)")
    ax.set_title("Manual scaling latency (bar: median, 95 % CI; markers: runs)")
    ax.grid(axis="x", visible=False)
    return fig


def autoscaling_timeline(
    events: pd.DataFrame, history: pd.DataFrame, name: str = "autoscaled"
) -> Figure:
    """Users offered and replicas desired/ready over time during a load shape."""
    fig, (load_ax, replica_ax) = plots.new_figure(nrows=2, height=4.8, sharex=True)
    rows = events[(events["kind"] == "WasmFunction") & (events["name"] == name)]
    rows = rows[rows["event"] != "LISTED"]
    start = rows["t_ms"].min() if not rows.empty else 0.0
    if not history.empty:
        aggregated = history[history["Name"] == "Aggregated"]
        t = (aggregated["Timestamp"] * 1000 - start) / 1000
        plots.lines(
            load_ax, t.tolist(),
            {"users": aggregated["User Count"].tolist(),
             "requests/s": aggregated["Requests/s"].tolist()},
            "", "users; requests/s", step=True,
        )  # fmt: skip
        load_ax.legend(loc="upper left")
    load_ax.set_title("Load-driven autoscaling")
    if not rows.empty:
        t = ((rows["t_ms"] - start) / 1000).tolist()
        plots.lines(
            replica_ax, t,
            {"desired": rows["replicas_desired"].tolist(),
             "ready": rows["replicas_ready"].fillna(0).tolist()},
            "time since deployment (s)", "replicas", step=True,
        )  # fmt: skip
        replica_ax.legend(loc="upper left")
    return fig


def latency_cdf(requests: pd.DataFrame, by: str = "name") -> Figure:
    """ECDF of successful request latency per function (log scale)."""
    fig, ax = plots.new_figure()
    ok = requests[requests["ok"].astype(bool)] if not requests.empty else requests
    if ok.empty:
        return _empty(fig, ax, "no successful request")
    series = {str(k).split("/")[-1]: g["latency_ms"].tolist() for k, g in ok.groupby(by)}
    plots.ecdf(ax, series, "request latency through the gateway (ms)", log_x=True)
    ax.set_title("Request latency")
    return fig


SOURCE_LABELS = {
    ("system", "locust"): "system, Locust",
    ("floor", "locust"): "floor: Locust to a trivial endpoint",
    ("system", "probe"): "system, keep-alive probe",
    ("floor", "probe"): "probe to the trivial endpoint",
}


def latency_sources(sources: Mapping[tuple[str, str], Sequence[float]]) -> Figure:
    """The same load's latency as Locust sees it through the gateway, Locust's own floor
    (the same load to a trivial endpoint), and a low-overhead probe: what of a figure is
    the system and what is the harness."""
    fig, ax = plots.new_figure(width=6.5)
    series = {
        SOURCE_LABELS.get(key, " ".join(key)): list(values)
        for key, values in sorted(sources.items(), key=lambda kv: list(SOURCE_LABELS).index(kv[0])
                                  if kv[0] in SOURCE_LABELS else len(SOURCE_LABELS))
        if len(values)
    }  # fmt: skip
    if not series:
        return _empty(fig, ax, "no successful request")
    plots.ecdf(ax, series, "request latency (ms)", log_x=True)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Latency: the system, the load generator's floor, a probe")
    return fig


def throughput_timeline(requests: pd.DataFrame) -> Figure:
    """Requests and failures per second, from the raw log."""
    fig, ax = plots.new_figure()
    if requests.empty:
        return _empty(fig, ax, "no requests")
    t = ((requests["timestamp_ms"] - requests["timestamp_ms"].min()) // 1000).astype(int)
    per_second = requests.assign(second=t).groupby("second")
    ok = per_second["ok"].sum()
    failed = per_second["ok"].count() - ok
    plots.lines(
        ax, ok.index.tolist(),
        {"successful requests/s": ok.tolist(), "failed requests/s": failed.tolist()},
        "time since first request (s)", "requests per second", step=True,
    )  # fmt: skip
    ax.set_title("Throughput and errors")
    return fig


def recovery_bars(recovery: pd.DataFrame) -> Figure:
    """Recovery time per fault (median over runs, with its 95 % interval where there are
    enough runs), every run a marker, with the 10 s target."""
    fig, ax = plots.new_figure()
    data = recovery.dropna(subset=["recovery_ms"]) if not recovery.empty else recovery
    if data.empty:
        return _empty(fig, ax, "no recovery measured")
    grouped = data.groupby("fault")["recovery_ms"]
    medians = grouped.median() / 1000
    # "node-kill" -> "node\nkill": five fault names side by side stay legible.
    labels = [f"{str(f).replace('-', chr(10), 1)}\n(n={n})" for f, n in grouped.size().items()]
    plots.bars(
        ax, labels, medians.tolist(), "fault to recovered (s)",
        interval=_scaled(_intervals(grouped, "p50"), 1 / 1000),
    )  # fmt: skip
    for x, (_, values) in enumerate(grouped):
        ax.plot(np.full(len(values), float(x)), values / 1000, linestyle="none", marker="x",
                color="black", markersize=4)  # fmt: skip
    for x, value in enumerate(medians.tolist()):
        ax.annotate(f"{value:.1f}", (x, value), ha="left", va="bottom", fontsize=8,
                    xytext=(6, 2), textcoords="offset points")  # fmt: skip
    ax.axhline(_seconds("recovery"), color="#444444", linestyle="--", linewidth=1)
    ax.set_title("Recovery time per fault (bar: median, 95 % CI; x: runs)")
    return fig


def probe_timeline(probes: pd.DataFrame, fault_ms: float) -> Figure:
    """Each probe request around a fault: latency, failures marked."""
    fig, ax = plots.new_figure()
    if probes.empty:
        return _empty(fig, ax, "no probes")
    t = (probes["t_ms"] - fault_ms) / 1000
    ok = probes["ok"].astype(bool)
    ax.plot(t[ok], probes.loc[ok, "latency_ms"], linestyle="none", marker="o", markersize=3,
            color="black", label="successful")  # fmt: skip
    ax.plot(t[~ok], probes.loc[~ok, "latency_ms"], linestyle="none", marker="x", markersize=5,
            color="#D55E00", label="failed")  # fmt: skip
    plots.mark_times(ax, [0.0], ["fault"])
    plots.log_axis(ax, "y")
    ax.set_xlabel("time since fault (s)")
    ax.set_ylabel("request latency (ms)")
    ax.legend(loc="upper right")
    ax.set_title("Requests around the fault")
    return fig


def resource_timeline(samples: pd.DataFrame) -> Figure:
    """Operator CPU (millicores) and RSS (MiB) over time, with the phases shaded."""
    fig, (cpu_ax, mem_ax) = plots.new_figure(nrows=2, height=4.8, sharex=True)
    if samples.empty:
        return _empty(fig, cpu_ax, "no samples")
    start = samples["t_ms"].min()
    if "pid" in samples and samples["pid"].nunique() > 1:
        # The process was restarted: break the lines instead of joining two processes.
        breaks = samples[samples["pid"] != samples["pid"].shift()].iloc[1:]
        gaps = breaks.assign(t_ms=breaks["t_ms"] - 1, cpu_millicores=np.nan, rss_mib=np.nan)
        samples = pd.concat([samples, gaps]).sort_values("t_ms", kind="stable")
    t = ((samples["t_ms"] - start) / 1000).tolist()
    plots.lines(cpu_ax, t, {"CPU": samples["cpu_millicores"].tolist()}, "", "CPU (millicores)")
    plots.lines(mem_ax, t, {"RSS": samples["rss_mib"].tolist()}, "time (s)", "memory RSS (MiB)")
    for key, axis in (("operator_cpu", cpu_ax), ("operator_memory", mem_ax)):
        # Dashed: the limit the target judges; dotted: the resource request.
        axis.axhline(target(key).threshold, color="#444444", linestyle="--", linewidth=1)
        axis.axhline(target(key).request, color="#444444", linestyle=":", linewidth=1)
    if "phase" in samples:
        starts = samples.dropna(subset=["phase"]).groupby("phase", sort=False)["t_ms"].min()
        offsets = ((starts - start) / 1000).tolist()
        plots.mark_times(cpu_ax, offsets, starts.index.tolist())
    cpu_ax.set_title("Operator resource use (dashed: limit; dotted: request)")
    return fig


def edge_latency(summary: pd.DataFrame) -> Figure:
    """Median and p95 latency against the link delay, one series per loss level, each
    with its 95 % interval (from the table's ``_ci_low``/``_ci_high`` columns)."""
    fig, ax = plots.new_figure()
    if summary.empty:
        return _empty(fig, ax, "no edge measurements")
    series: dict[str, list[float]] = {}
    intervals: dict[str, plots.Interval] = {}
    for loss, group in summary.groupby("loss_percent", sort=True):
        group = group.sort_values("delay_ms")
        for name, statistic in (("median", "p50"), ("p95", "p95")):
            label = f"{name}, {loss:g} % loss"
            series[label] = group[f"latency_ms_{statistic}"].tolist()
            if f"latency_ms_{statistic}_ci_low" in group:
                intervals[label] = (
                    group[f"latency_ms_{statistic}_ci_low"].tolist(),
                    group[f"latency_ms_{statistic}_ci_high"].tolist(),
                )
        x = group["delay_ms"].tolist()
    plots.lines(
        ax, x, series, "added link delay (ms)", "request latency (ms)", markevery=1,
        intervals=intervals,
    )  # fmt: skip
    ax.set_title("Latency under edge network conditions (bars: 95 % CI)")
    return fig


def targets_table_figure(frame: pd.DataFrame) -> Figure:
    """The targets table as a figure (for slides and the PDF appendix): estimate, its
    95 % interval, n and the verdict."""

    def number(row: pd.Series, column: str) -> float | None:
        value = row.get(column)
        return None if value is None or pd.isna(value) else float(value)

    rows = [
        [
            row["target"],
            row["requirement"],
            format_value(number(row, "measured"), row["unit"]),
            format_interval(number(row, "ci_low"), number(row, "ci_high"), row["unit"]),
            "-" if pd.isna(row["n"]) else f"{int(row['n'])}",
            row["verdict"].replace(" (", "\n("),
        ]
        for _, row in frame.iterrows()
    ]
    columns = ["target", "requirement", "estimate", "95 % CI", "n", "verdict"]
    fig, ax = plots.new_figure(width=11.0, height=0.5 + 0.42 * len(rows))
    ax.set_axis_off()
    table = ax.table(
        cellText=rows, colLabels=columns, loc="center", cellLoc="left",
        colWidths=[0.16, 0.31, 0.09, 0.17, 0.06, 0.21],
    )  # fmt: skip
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1, 1.6)
    for (row, _), cell in table.get_celld().items():
        if row == 0:
            cell.set_text_props(fontweight="bold")
    return fig


def _kind_label(kind: str) -> str:
    """``node-partition`` -> ``node\\npartition``: many kinds side by side stay legible."""
    return str(kind).replace("-", "\n", 1)


def chaos_timeline(requests: pd.DataFrame, windows: pd.DataFrame, health: pd.DataFrame) -> Figure:
    """The soak over time: success rate of each second's requests (top) and the share of
    functions settled (bottom), each event marked where it started."""
    fig, (top, bottom) = plots.new_figure(nrows=2, height=4.8, sharex=True)
    if requests.empty or windows.empty:
        return _empty(fig, top, "no requests")
    t0 = float(windows["start_ms"].min())
    second = ((requests["timestamp_ms"] - t0) // 1000).astype(int)
    per_second = requests.groupby(second)["ok"].agg(["mean", "size"])
    plots.lines(
        top, per_second.index.tolist(), {"requests answered": (per_second["mean"] * 100).tolist()},
        "", "success (%)", markevery=0.05, step=True,
    )  # fmt: skip
    top.set_ylim(min(90.0, float(per_second["mean"].min() * 100) - 1), 100.5)
    events = windows[windows["kind"] != "steady"]
    plots.mark_times(
        top, ((events["start_ms"] - t0) / 1000).tolist(), events["kind"].astype(str).tolist()
    )
    top.set_title("Chaos soak: requests through the gateway and functions settled")
    if not health.empty:
        settled = health["functions_settled"] / health["functions_total"].where(
            health["functions_total"] > 0
        )
        plots.lines(
            bottom, ((health["t_ms"] - t0) / 1000).tolist(),
            {"functions settled": (settled * 100).tolist(),
             "API answering": (health["api_ok"].astype(float) * 100).tolist()},
            "time since the soak started (s)", "share (%)", markevery=0.05, step=True,
        )  # fmt: skip
        bottom.set_ylim(-5, 105)
    return fig


def chaos_recovery(by_kind: pd.DataFrame) -> Figure:
    """Recovery per event kind in the soak: median (bar) and maximum (whisker), with the
    10 s bound; a kind that did not recover within its window is marked."""
    fig, ax = plots.new_figure(width=7.5)
    if by_kind.empty:
        return _empty(fig, ax, "no events")
    medians = (by_kind["recovery_ms_p50"].fillna(0) / 1000).tolist()
    maxima = (by_kind["recovery_ms_max"] / 1000).tolist()
    spread = [0.0 if np.isnan(m) else m - p for m, p in zip(maxima, medians, strict=True)]
    # The whisker runs from the median up to the maximum (no interval: one soak's events).
    reach = [median + extra for median, extra in zip(medians, spread, strict=True)]
    plots.bars(
        ax, [_kind_label(k) for k in by_kind["kind"]], medians, "recovery (s)",
        interval=(medians, reach),
    )  # fmt: skip
    for x, (median, maximum) in enumerate(zip(medians, maxima, strict=True)):
        text = "not\nrecovered" if np.isnan(maximum) else f"{maximum:.1f}"
        ax.annotate(text, (x, median + spread[x]), ha="center", va="bottom", fontsize=7,
                    xytext=(0, 2), textcoords="offset points")  # fmt: skip
    ax.axhline(_seconds("recovery"), color="#444444", linestyle="--", linewidth=1)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title("Recovery per event in the soak (bar: median; whisker and label: max)")
    return fig


def chaos_requests_lost(windows: pd.DataFrame) -> Figure:
    """Failed requests in each event kind's windows, with their success rate."""
    fig, ax = plots.new_figure(width=7.5)
    events = windows[windows["kind"] != "steady"] if not windows.empty else windows
    if events.empty:
        return _empty(fig, ax, "no events")
    grouped = events.groupby("kind", sort=True)[["requests", "failed_requests"]].sum()
    plots.bars(
        ax, [_kind_label(k) for k in grouped.index], grouped["failed_requests"].tolist(),
        "failed requests",
    )  # fmt: skip
    for x, (requests, failed) in enumerate(grouped.itertuples(index=False)):
        share = 100 * (requests - failed) / requests if requests else float("nan")
        ax.annotate(f"{failed}\n{share:.2f} %", (x, failed), ha="center", va="bottom",
                    fontsize=7, xytext=(0, 2), textcoords="offset points")  # fmt: skip
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylim(0, max(1.0, float(grouped["failed_requests"].max()) * 1.4))
    ax.set_title("Requests lost per event kind (label: failed, success rate)")
    return fig


def cold_start_cdf(cold: pd.DataFrame, warm: pd.DataFrame) -> Figure:
    """Cold requests (by functions woken at once) against warm ones, as CDFs on a log
    axis, with the cold-start targets as dashed lines."""
    fig, ax = plots.new_figure(width=7.0)
    ok = cold[cold["ok"].astype(bool)] if not cold.empty else cold
    if ok.empty and warm.empty:
        return _empty(fig, ax, "no requests")
    series = {
        f"cold, {int(batch)} at once": group["latency_ms"].tolist()
        for batch, group in ok.groupby("batch")
    }
    series["warm"] = warm["latency_ms"].tolist()
    plots.ecdf(ax, series, "latency through the gateway (ms)", log_x=True)
    for key in ("cold_start_p50", "cold_start_p95"):
        ax.axvline(target(key).threshold, color="#444444", linestyle="--", linewidth=1)
    ax.set_title("Cold and warm requests")
    return fig


def activation_phases(phases: pd.DataFrame, labels: Mapping[str, str]) -> Figure:
    """Median time in each phase of an activation, stacked, per number of functions
    woken at once (``labels``: phase names to legend text, in order)."""
    fig, ax = plots.new_figure(width=8.0)
    if phases.empty:
        return _empty(fig, ax, "no activation phases")
    medians = phases.groupby(["batch", "phase"])["duration_ms"].median().unstack("phase")
    order = [p for p in labels if p in medians.columns]
    components = {labels[p]: medians[p].tolist() for p in order}
    plots.stacked_bars(
        ax, [str(int(b)) for b in medians.index], components, "median time (ms)",
        xlabel="functions woken at once",
    )  # fmt: skip
    ax.set_title("Where a cold request's time goes")
    return fig


def scaling_comparison(variants: pd.DataFrame, bound_ms: float) -> Figure:
    """Per load shape, one bar per autoscaling variant in each of three panels: requests
    over the latency bound, replica-seconds used, and the p95 reaction time."""
    panels = (
        ("over_bound", f"requests over {bound_ms:g} ms\n(failures included)", 1.0),
        ("replica_s", "replica-seconds used", 1.0),
        ("reaction_p95_ms", "reaction p95 (s)\n(load rise to scale-out)", 1 / 1000),
    )
    fig, axes = plots.new_figure(ncols=3, width=12.0, height=4.0)
    if variants.empty:
        return _empty(fig, axes[0], "no load runs")
    shapes = list(dict.fromkeys(variants["shape"]))
    names = list(dict.fromkeys(variants["variant"]))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(shapes))
    for ax, (column, label, factor) in zip(axes, panels, strict=True):
        for i, variant in enumerate(names):
            own = variants[variants["variant"] == variant].groupby("shape")[column].mean()
            values = [float(own.get(s, np.nan)) * factor for s in shapes]
            style = plots.series_style(i)
            ax.bar(
                x + (i - (len(names) - 1) / 2) * width, np.nan_to_num(values), width,
                label=variant, color="white", edgecolor=style["color"],
                hatch=style["hatch"] or None, linewidth=1.0,
            )  # fmt: skip
        ax.set_xticks(x, shapes)
        ax.set_xlabel("load shape")
        ax.set_ylabel(label)
        ax.grid(axis="x", visible=False)
    axes[2].axhline(target("reaction").threshold / 1000, color="#444444", linestyle="--",
                    linewidth=1)  # fmt: skip
    axes[0].legend(loc="best")
    fig.suptitle("Reactive, fast and predictive autoscaling, side by side")
    return fig
