"""The report's targets: which hold, which are missed, which were not measured."""

from __future__ import annotations

import math

import pytest
from wasmop.bench.stats import describe, jsonable, ratio
from wasmop.bench.targets import TARGETS, evaluate, results_frame, results_markdown


def by_key(results):  # type: ignore[no-untyped-def]
    return {r.target.key: r for r in results}


def test_describe_uses_exact_quantiles_and_ignores_missing_values() -> None:
    stats = describe([1, 2, 3, 4, None, float("nan"), 100])
    assert stats["n"] == 5
    assert stats["p50"] == 3
    assert stats["max"] == 100 and stats["min"] == 1
    empty = describe([])
    assert empty["n"] == 0 and math.isnan(empty["p50"])


def test_ratio_and_json_conversion() -> None:
    assert ratio(1, 4) == 0.25
    assert math.isnan(ratio(1, 0))
    assert jsonable({"a": float("nan"), "b": [float("inf"), 1.5]}) == {"a": None, "b": [None, 1.5]}


def test_every_target_is_judged_on_its_statistic() -> None:
    stats = {
        "deploy_latency_ms": {"p50": 800.0, "p95": 2500.0, "n": 10},
        "scale_latency_ms": {"p50": 6000.0, "n": 3},
        "status_lag_ms": {"p50": 50.0, "n": 10},
        "success_ratio": {"value": 0.9995, "n": 10000},
        "error_ratio": {"value": 0.0005, "n": 10000},
        "recovery_ms": {"p50": 12000.0, "max": 15000.0, "n": 4},
        "concurrent_ready_ratio": {"value": 1.0, "n": 300, "batch": 100},
        "operator_cpu_millicores": {"p95": 80.0, "mean": 20.0, "n": 60},
        "operator_rss_mib": {"max": 300.0, "mean": 200.0, "n": 60},
    }
    results = by_key(evaluate(stats))
    assert results["deployment"].holds is True  # the median, not the p95, is judged
    assert results["deployment"].context_value == 2500.0
    assert results["scaling"].holds is False
    assert results["status"].holds is True
    assert results["success"].holds is True
    assert results["error"].holds is True
    assert results["recovery"].holds is False
    assert results["concurrent"].holds is True
    assert results["operator_cpu"].holds is True
    assert "request" in results["operator_cpu"].note
    assert results["operator_memory"].holds is False
    assert len(results) == len(TARGETS)


def test_missing_or_too_few_observations_are_not_measured() -> None:
    results = by_key(
        evaluate(
            {
                "concurrent_ready_ratio": {"value": 1.0, "n": 30, "batch": 10},
                "deploy_latency_ms": {"p50": float("nan"), "n": 0},
            }
        )
    )
    assert results["concurrent"].holds is None
    assert "10" in results["concurrent"].note and "100" in results["concurrent"].note
    assert results["deployment"].holds is None
    assert results["scaling"].holds is None and results["scaling"].verdict == "not measured"


def test_the_interval_is_shown_and_says_when_it_reaches_across_the_bound() -> None:
    stats = {
        "deploy_latency_ms": {"p50": 1500.0, "p50_ci_low": 1200.0, "p50_ci_high": 2400.0,
                              "n": 12},
        "scale_latency_ms": {"p50": 900.0, "p50_ci_low": 700.0, "p50_ci_high": 1100.0, "n": 12},
        "recovery_ms": {"max": 12000.0, "max_ci_low": 11000.0, "max_ci_high": 12000.0, "n": 12},
        "success_ratio": {"value": 1.0, "value_ci_low": 0.998, "value_ci_high": 1.0, "n": 2000},
        "status_lag_ms": {"p50": 30.0, "n": 3},
    }  # fmt: skip
    results = by_key(evaluate(stats))
    deployment = results["deployment"]
    assert deployment.holds is True and deployment.settled is False
    assert (deployment.ci_low, deployment.ci_high) == (1200.0, 2400.0)
    assert deployment.verdict == "holds (95 % CI crosses the bound)"
    assert results["scaling"].settled is True and results["scaling"].verdict == "holds"
    assert results["recovery"].holds is False and results["recovery"].verdict == "missed"
    # 2,000 requests without a failure cannot show a 99.9 % success rate.
    assert results["success"].holds is True and results["success"].settled is False
    assert results["status"].settled is None and "no interval below n=10" in results["status"].note
    markdown = results_markdown(evaluate(stats))
    assert "| p50 1.50 s | [1.20 s, 2.40 s] | 12 |" in markdown
    assert "| 100.000 % | [99.800 %, 100.000 %] | 2000 |" in markdown
    frame = results_frame(evaluate(stats))
    assert list(frame.loc[0, ["ci_low", "ci_high", "settled"]]) == [1200.0, 2400.0, False]


def test_an_exact_claim_shows_its_interval_without_judging_it() -> None:
    ready = {"value": 1.0, "n": 300, "batch": 100, "value_ci_low": 0.987, "value_ci_high": 1.0}
    result = by_key(evaluate({"concurrent_ready_ratio": ready}))["concurrent"]
    assert result.holds is True and result.settled is None and result.verdict == "holds"
    assert result.ci_low == 0.987


def test_error_ratio_at_the_bound_is_missed() -> None:
    results = by_key(evaluate({"error_ratio": {"value": 0.001, "n": 1000}}))
    assert results["error"].holds is False


def test_tables() -> None:
    results = evaluate({"deploy_latency_ms": {"p50": 1500.0, "p95": 1900.0, "n": 5}})
    frame = results_frame(results)
    assert list(frame["target"]) == [t.label for t in TARGETS]
    assert frame.loc[0, "verdict"] == "holds"
    markdown = results_markdown(results)
    assert "| Deployment latency |" in markdown and "p50 1.50 s (p95 1.90 s) | - | 5 |" in markdown
    assert markdown.count("\n") == len(TARGETS) + 2


def test_targets_are_looked_up_by_key() -> None:
    from wasmop.bench.targets import target

    assert target("recovery").threshold == 10000.0
    assert target("operator_memory").request == 128.0
    with pytest.raises(KeyError, match="no target 'latency'"):
        target("latency")


def test_a_bound_is_judged_on_the_worst_case_and_per_fault_type() -> None:
    """Recovery < 10 s: a median of 1 s does not hide a 12 s maximum, and each fault
    type gets its own row (issue 12)."""
    import pandas as pd
    from wasmop.bench.stats import describe_groups, grouped_key
    from wasmop.bench.targets import grouped_contexts

    observations = pd.DataFrame(
        {
            "metric": ["recovery_ms"] * 4 + ["deploy_latency_ms"],
            "value": [500.0, 900.0, 1000.0, 12000.0, 100.0],
            "fault": ["pod-crash", "pod-crash", "etcd-kill", "node-kill", None],
        }
    )
    stats = {"recovery_ms": describe(observations["value"][:4])}
    stats.update(describe_groups(observations, grouped_contexts()))
    assert grouped_key("recovery_ms", "fault", "pod-crash") in stats
    results = [r for r in evaluate(stats) if r.target.key == "recovery"]
    assert [(r.label, r.holds) for r in results] == [
        ("Recovery time", False),
        ("Recovery time: etcd-kill", True),
        ("Recovery time: node-kill", False),
        ("Recovery time: pod-crash", True),
    ]
    assert results[0].measured == 12000.0 and results[0].context_value == 950.0
    assert list(results_frame(results)["target"])[1] == "Recovery time: etcd-kill"


def test_chaos_counts_become_the_chaos_targets() -> None:
    from wasmop.bench.run import ratios_from_counts

    stats = ratios_from_counts(
        {"chaos_requests_total": 10000, "chaos_requests_failed": 5,
         "drain_requests_total": 800, "drain_requests_failed": 0,
         "chaos_invariants_total": 6, "chaos_invariants_held": 5}
    )  # fmt: skip
    results = by_key(evaluate(stats))
    assert results["chaos_success"].holds is True and results["chaos_success"].n == 10000
    assert results["drain"].holds is True and results["drain"].measured == 0
    assert results["chaos_invariants"].holds is False
    assert "success_ratio" not in stats, "kept apart from the steady-load success rate"


def test_cold_start_reaction_and_predictive_targets_are_judged_honestly() -> None:
    """p50 and p95 of one cold-start sample judged apart; 25 at once needs 25
    observations; the predictive rows are judged on the worst shape, and per shape."""
    stats = {
        "cold_start_ms": {"p50": 240.0, "p95": 601.0, "max": 700.0, "n": 10},
        "cold_start_25_ms": {"p95": 1500.0, "max": 1800.0, "n": 10},
        "activation_lost_requests": {"value": 0.0, "n": 80},
        "fast_step_reaction_ms": {"p95": 1000.0, "max": 1000.0, "n": 4},
        "predictive_over_bound_reduction_ratio": {"min": 0.3, "p50": 0.6, "n": 2},
        "predictive_over_bound_reduction_ratio[shape=ramp]": {"min": 0.6, "n": 1},
        "predictive_over_bound_reduction_ratio[shape=periodic]": {"min": 0.3, "n": 1},
        "predictive_replica_seconds_increase_ratio": {"max": 0.05, "n": 2},
    }
    results = evaluate(stats)
    judged = {(r.target.key, r.group): r for r in results}
    assert judged[("cold_start_p50", "")].holds is True
    assert judged[("cold_start_p95", "")].holds is False  # 601 ms misses 500 ms
    assert judged[("cold_start_25", "")].holds is None  # only 10 of the 25 needed
    assert judged[("activation_lost", "")].holds is True
    assert judged[("reaction", "")].holds is True  # at the bound: <= holds
    assert judged[("predictive_over_bound", "")].holds is False  # the worst shape
    assert judged[("predictive_over_bound", "ramp")].holds is True
    assert judged[("predictive_over_bound", "periodic")].holds is False
    assert judged[("predictive_cost", "")].holds is True


def test_activation_counts_become_the_lost_requests_target() -> None:
    from wasmop.bench.run import ratios_from_counts

    stats = ratios_from_counts({"activation_requests_total": 80, "activation_requests_lost": 1})
    assert stats["activation_lost_requests"] == {"value": 1, "n": 80}
    [result] = [r for r in evaluate(stats) if r.target.key == "activation_lost"]
    assert result.holds is False
