"""Locust runs: the command line, its bounds and the raw log, without running Locust."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from wasmop.bench.load import (
    LocustConfig,
    LocustResult,
    locust_command,
    read_raw_log,
    request_summary,
)
from wasmop.bench.mix import parse_mix
from wasmop.bench.net import TargetNotAllowed
from wasmop.bench.rawlog import RAW_COLUMNS, header, parse_server_timing, to_csv_text
from wasmop.bench.shapes import Shape


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_command_is_headless_bounded_and_writes_everything(tmp_path: Path) -> None:
    config = LocustConfig(
        host="http://127.0.0.1:8000",
        users=7,
        spawn_rate=3.5,
        run_time_s=12,
        functions=tuple(parse_mix("ns/hello@2,ns/fib?n=20")),
        fail_ratio=0.01,
        max_requests=500,
        options={"storm_delete": True, "storm_functions": 5, "verbose": False},
    )
    command = locust_command(config, tmp_path)
    assert command[:3] == [sys.executable, "-m", "locust"]
    assert "--headless" in command and "--csv-full-history" in command
    assert option(command, "--run-time") == "12s"
    assert option(command, "--users") == "7" and option(command, "--spawn-rate") == "3.5"
    assert option(command, "--csv") == str(tmp_path / "locust")
    assert option(command, "--raw-log") == str(tmp_path / "requests.csv")
    assert option(command, "--fail-ratio") == "0.01"
    assert option(command, "--max-requests") == "500"
    assert option(command, "--functions") == "ns/hello@2,ns/fib?n=20"
    assert option(command, "--storm-functions") == "5"
    assert "--storm-delete" in command and "--verbose" not in command
    assert option(command, "-f").endswith("loadtests/http_mix.py")


def test_a_shape_adds_the_shape_scenario(tmp_path: Path) -> None:
    config = LocustConfig(host="http://127.0.0.1:8000", shape=Shape("spike", peak=9))
    command = locust_command(config, tmp_path)
    assert option(command, "-f").split(",")[-1].endswith("loadtests/shape.py")
    assert option(command, "--shape") == "spike:peak=9"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"host": "http://example.org"},
        {"host": "http://127.0.0.1:8000", "run_time_s": 0},
        {"host": "http://127.0.0.1:8000", "fail_ratio": 2},
        {"host": "http://127.0.0.1:8000", "spawn_rate": 0},
    ],
)
def test_unbounded_or_foreign_runs_are_refused(kwargs: dict) -> None:
    with pytest.raises((ValueError, TargetNotAllowed)):
        LocustConfig(**kwargs)


def test_unknown_scenario_is_reported(tmp_path: Path) -> None:
    config = LocustConfig(host="http://127.0.0.1:8000", scenarios=("nope.py",))
    with pytest.raises(FileNotFoundError, match=r"nope\.py"):
        locust_command(config, tmp_path)


def test_raw_log_round_trip_and_exact_quantiles(tmp_path: Path) -> None:
    rows = [
        {"timestamp_ms": 1000 + i * 10, "request_type": "GET", "name": "ns/a", "latency_ms": i,
         "status": 200, "ok": 1, "pod": f"a-{i % 2}", "cold_start": 0, "upstream_ms": 0.5,
         "response_bytes": 14}
        for i in range(1, 101)
    ] + [
        {"timestamp_ms": 500, "request_type": "GET", "name": "ns/b", "latency_ms": 5000,
         "status": 503, "ok": 0, "pod": "", "cold_start": 1, "error": "HTTPError: 503"},
    ]  # fmt: skip
    path = tmp_path / "requests.csv"
    path.write_text(to_csv_text(rows))
    raw = read_raw_log(path)
    assert list(raw.columns) == list(RAW_COLUMNS)
    assert raw.loc[0, "name"] == "ns/b"  # sorted by time
    assert raw["ok"].dtype == bool and raw["cold_start"].sum() == 1
    summary = request_summary(raw).set_index("name")
    assert summary.loc["ns/a", "requests"] == 100 and summary.loc["ns/a", "failures"] == 0
    assert summary.loc["ns/a", "latency_ms_p50"] == pytest.approx(50.5)
    assert summary.loc["ns/a", "latency_ms_max"] == 100
    assert summary.loc["ns/b", "failure_ratio"] == 1.0
    result = LocustResult(0, tmp_path, (), 1.0)
    assert len(read_raw_log(result)) == 101


def test_headers_and_server_timing() -> None:
    assert parse_server_timing("gateway;dur=0.25, upstream;dur=1.5") == {
        "gateway": 0.25,
        "upstream": 1.5,
    }
    assert parse_server_timing(None) == {} and parse_server_timing("x;dur=bad") == {}
    assert header({"x-wasmop-pod": "p"}, "X-Wasmop-Pod") == "p"
    assert header(None, "X") == ""
