"""Headless Locust runs through the gateway, against functions on the real cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from wasmop.bench import deploy, probe
from wasmop.bench.load import (
    LocustConfig,
    read_final,
    read_raw_log,
    request_summary,
    run_locust,
)
from wasmop.bench.mix import parse_mix
from wasmop.bench.process_sampler import operator_pid
from wasmop.bench.session import BenchSession

pytestmark = pytest.mark.integration


@pytest.fixture
def session(cluster) -> Iterator[BenchSession]:  # type: ignore[no-untyped-def]
    with BenchSession(cluster.kubeconfig) as s:
        yield s


@pytest.fixture
def hello(session: BenchSession, namespace: str) -> str:
    """hello with two replicas, deployed by hand (no operator), serving via the gateway."""
    with session.recorder(namespace) as rec:
        outcome = session.run(
            deploy.deploy_plain(session.kube, namespace, ["hello"], "hello", rec, replicas=2)
        )[0]
    assert outcome.ok, outcome.error
    session.run(probe.wait_serving(deploy.gateway_url(namespace, "hello"), 60))
    return namespace


def test_ten_second_run_through_the_gateway_has_no_failures(hello: str, tmp_path: Path) -> None:
    config = LocustConfig(
        host=deploy.gateway_base(),
        functions=tuple(parse_mix(f"{hello}/hello")),
        users=4,
        spawn_rate=4,
        run_time_s=10,
        user_rps=5,
    )
    result = run_locust(config, tmp_path)
    assert result.ok
    final = read_final(result).set_index("name")
    assert final.loc[f"{hello}/hello", "num_requests"] > 0
    assert final["num_failures"].sum() == 0
    raw = read_raw_log(result)
    assert len(raw) == final.loc[f"{hello}/hello", "num_requests"]
    assert raw["ok"].all() and (raw["status"] == 200).all()
    assert raw["pod"].str.startswith("hello-").all()
    assert raw["pod"].nunique() == 2, "requests spread over both replicas"
    assert raw["upstream_ms"].notna().all()
    summary = request_summary(raw).set_index("name")
    assert summary.loc[f"{hello}/hello", "failures"] == 0
    assert result.history_csv.exists() and result.stats_csv.exists()
    assert (tmp_path / "command.txt").read_text().count("--headless") == 1


def test_failure_ratio_above_the_threshold_exits_non_zero(hello: str, tmp_path: Path) -> None:
    mix = tuple(parse_mix(f"{hello}/hello@1,{hello}/missing@1"))  # the second answers 404
    base = {"host": deploy.gateway_base(), "functions": mix, "users": 2, "run_time_s": 3}
    strict = run_locust(LocustConfig(**base, fail_ratio=0.2), tmp_path / "strict", check=False)
    assert strict.returncode == 1
    assert "exceeds the threshold" in strict.log_tail(50)
    lenient = run_locust(LocustConfig(**base, fail_ratio=0.9), tmp_path / "lenient", check=False)
    assert lenient.returncode == 0
    raw = read_raw_log(lenient)
    assert set(raw.loc[~raw["ok"], "status"]) == {404}


def test_request_count_bounds_a_run(hello: str, tmp_path: Path) -> None:
    config = LocustConfig(
        host=deploy.gateway_base(),
        functions=tuple(parse_mix(f"{hello}/hello")),
        users=2,
        run_time_s=60,
        user_rps=0,
        max_requests=50,
    )
    result = run_locust(config, tmp_path)
    assert result.duration_s < 60
    # No request starts once the limit is reached: past it, only those already in flight
    # (one per user) finish.
    assert 50 <= len(read_raw_log(result)) < 50 + config.users


def test_users_taking_turns_give_each_function_exactly_its_share(
    session: BenchSession, namespace: str, tmp_path: Path
) -> None:
    """``--pick rotate``: every user sends its requests to the mix's functions in turns
    by weight, so a function's count is its share of all requests, give or take one per
    user (a random pick per request wanders by the square root of the count)."""
    with session.recorder(namespace) as rec:
        outcomes = session.run(
            deploy.deploy_plain(session.kube, namespace, ["one", "three"], "hello", rec)
        )
    assert all(o.ok for o in outcomes), outcomes
    for name in ("one", "three"):
        session.run(probe.wait_serving(deploy.gateway_url(namespace, name), 60))
    config = LocustConfig(
        host=deploy.gateway_base(),
        functions=tuple(parse_mix(f"{namespace}/one@1,{namespace}/three@3")),
        users=4,
        spawn_rate=4,
        run_time_s=6,
        user_rps=8,
        options={"pick": "rotate"},
    )
    result = run_locust(config, tmp_path)
    assert result.ok
    counts = read_raw_log(result)["name"].value_counts()
    one, three = int(counts[f"{namespace}/one"]), int(counts[f"{namespace}/three"])
    assert one + three > 100
    assert abs(3 * one - three) <= 4 * config.users, (one, three)


def test_deployment_storm_reports_create_to_ready(
    session: BenchSession, namespace: str, tmp_path: Path
) -> None:
    if not operator_pid():
        pytest.fail(
            "the embedded cluster's operator is not running"
            " (wasmop kubectl get pods -n wasm-operators)"
        )
    session.run(deploy.ensure_module(session.kube, namespace, "hello"))
    config = LocustConfig(
        host=deploy.gateway_base(),
        scenarios=("deploy_storm.py",),
        users=3,
        spawn_rate=3,
        run_time_s=90,
        options={"namespace": namespace, "workload": "hello", "storm_functions": 3},
    )
    result = run_locust(config, tmp_path)
    final = read_final(result).set_index("name")
    assert final.loc["deploy", "num_requests"] == 3
    assert final.loc["deploy", "num_failures"] == 0
    raw = read_raw_log(result)
    assert list(raw["name"]) == ["deploy"] * 3 and raw["ok"].all()
    assert (raw["latency_ms"] > 0).all()
