"""The summary over many runs: the dissertation's figure set, create-to-Ready per
concurrency, and the targets table judged on the observations pooled from every run.

:func:`summarise` reads only the runs' own files (via :mod:`wasmop.bench.report`), so the
summary can be drawn again at any time without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from wasmop.bench import figures, report
from wasmop.bench.analysis import Analysis
from wasmop.bench.experiments.chaos import recovery_by_kind
from wasmop.bench.experiments.load_latency import latency_by_source
from wasmop.bench.stats import ratio_of
from wasmop.bench.targets import evaluate, results_frame, results_markdown


@dataclass(frozen=True)
class Summary:
    analysis: Analysis  # figures and tables (deployment_by_concurrency, targets)
    metrics: dict[str, dict[str, float]]  # pooled statistics the targets were judged on
    targets_markdown: str


def _last_run(samples: pd.DataFrame) -> pd.DataFrame:
    """One run's samples: a timeline of several runs laid over each other is unreadable."""
    return (
        samples[samples["run_id"] == samples["run_id"].iloc[-1]] if not samples.empty else samples
    )


def ratio_by_concurrency(deployments: pd.DataFrame) -> pd.DataFrame:
    """Per concurrency: the operator's p50 and p95 create-to-Ready over the plain
    baseline's, with bootstrap intervals and both n (levels run in one mode only are
    left out)."""
    columns = ["concurrency", "statistic", "value", "ci_low", "ci_high"]
    if deployments.empty or "mode" not in deployments:
        return pd.DataFrame(columns=[*columns, "n_numerator", "n_denominator"])
    ok = deployments[deployments["ok"].astype(bool)]
    rows = []
    for level, group in ok.groupby("concurrency", sort=True):
        operator = group.loc[group["mode"] == "operator", "create_to_ready_ms"]
        plain = group.loc[group["mode"] == "plain", "create_to_ready_ms"]
        if operator.empty or plain.empty:
            continue
        for statistic in ("p50", "p95"):
            rows.append({"concurrency": level, "statistic": statistic,
                         **ratio_of(operator, plain, statistic)})  # fmt: skip
    return pd.DataFrame(rows, columns=None if rows else columns)


# Tables that set the modes side by side on purpose: each value is one mode's statistic
# over the other's, never a statistic of both modes' observations pooled.
COMPARISONS = frozenset({"deployment_ratio"})


def summarise(runs: pd.DataFrame) -> Summary:
    """Figures, tables and targets over ``runs`` (a :func:`wasmop.bench.report.runs`
    table). The operator is judged alone: every table and figure is drawn from its runs
    (``mode: operator``), except the comparison with the plain baseline, which keeps the
    modes apart (``mode`` column, one curve each, and their ratio)."""

    def tables(experiment: str, table: str, mode: str | None = "operator") -> pd.DataFrame:
        selected = runs[runs["experiment"] == experiment] if not runs.empty else runs
        return report.load_table(
            selected if mode is None else report.of_mode(selected, mode), table
        )

    both = tables("deployment_latency", "functions", mode=None)
    deployments = tables("deployment_latency", "functions")
    result = Analysis()
    result.figure(
        "deployment_cdf",
        figures.deployment_cdf(deployments),
        "Create-to-Ready time of every function (ECDF), one curve per number of functions"
        " created at once; the bar at 0.5 spans the median's 95 % CI; dashed: the 2 s target.",
    )
    result.figure(
        "deployment_concurrency",
        figures.deployment_vs_concurrency(both),
        "Median and p95 create-to-Ready against the number of functions created at once,"
        " with their 95 % CIs, one pair of curves per mode (the operator, and plain"
        " Deployments where the plan ran them); with both modes, the lower panel is the"
        " operator's over the baseline's, with bootstrap CIs; dotted: the 2 s target.",
    )
    result.figure(
        "deployment_phases",
        figures.phase_breakdown(tables("deployment_latency", "phases")),
        "Median time in each phase of a deployment, from the watch events, stacked per"
        " number of functions created at once (medians of phases need not add up to the"
        " median total).",
    )
    result.figure(
        "scaling_latency",
        figures.scaling_latency(tables("scaling", "scale_steps")),
        "Manual scale-out and scale-in, request to replicas ready: bar the median with its"
        " 95 % CI, markers the single steps; dashed: the 5 s target.",
    )
    result.figure(
        "latency_cdf",
        figures.latency_cdf(tables("load_latency", "requests")),
        "Request latency through the gateway under the Locust load mix (ECDF per function,"
        " log scale), with each median's 95 % CI at 0.5.",
    )
    result.figure(
        "latency_sources",
        figures.latency_sources(
            latency_by_source(
                tables("load_latency", "requests"),
                tables("load_latency", "floor_requests"),
                tables("load_latency", "probes"),
            )
        ),
        "The same load's latency three ways: Locust through the gateway (the system), Locust"
        " against a trivial endpoint on the same machine (the load generator's floor), and a"
        " keep-alive aiohttp probe through the gateway (and to the trivial endpoint); ECDFs,"
        " each median's 95 % CI at 0.5. The gap between the first two is the system's share.",
    )
    result.figure(
        "recovery",
        figures.recovery_bars(tables("recovery", "recovery")),
        "Fault to recovered per fault type: bar the median over runs with its 95 % CI where"
        " there are enough runs, x every run; dashed: the 10 s target.",
    )
    result.figure(
        "operator_resources",
        figures.resource_timeline(_last_run(tables("operator_overhead", "samples"))),
        "The operator's CPU and resident memory over one run (idle, creating functions,"
        " holding them); dashed: the limit the target judges, dotted: the request.",
    )
    result.figure(
        "edge_latency",
        figures.edge_latency(tables("edge_network", "conditions")),
        "Median and p95 request latency against the delay added on one node's link, with"
        " their 95 % CIs, one series per loss level.",
    )
    # The chaos soaks: every event window of every run, recovery and losses per kind.
    chaos = tables("chaos", "windows")
    by_kind = recovery_by_kind(chaos) if not chaos.empty else pd.DataFrame()
    result.table("chaos_by_kind", by_kind)
    result.figure(
        "chaos_recovery",
        figures.chaos_recovery(by_kind),
        "Recovery per event kind in the chaos soaks: median (bar) and maximum (whisker) over"
        " every event of the kind, with the 10 s bound; a kind that did not recover within"
        " its window is marked.",
    )
    result.figure(
        "chaos_requests_lost",
        figures.chaos_requests_lost(chaos),
        "Failed requests in each event kind's windows of the chaos soaks, summed over runs,"
        " with the share that succeeded.",
    )
    if not both.empty and "mode" not in both:
        both = both.assign(mode="operator")
    result.table(
        "deployment_by_concurrency",
        report.describe_by(both, ["mode", "concurrency"], ["create_to_ready_ms", "status_lag_ms"]),
    )
    result.table("deployment_ratio", ratio_by_concurrency(both))
    metrics = report.pooled_metrics(runs) if not runs.empty else {}
    judged = evaluate(metrics)
    targets = result.table("targets", results_frame(judged))
    result.figure(
        "targets",
        figures.targets_table_figure(targets),
        "The report's targets: the judged estimate, its 95 % CI and n over all runs of the"
        " plan, and the verdict.",
    )
    return Summary(result, metrics, results_markdown(judged))
