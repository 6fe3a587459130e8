"""The workload manifest, its response checks, and the build's up-to-date skip."""

from __future__ import annotations

import subprocess
import sys

import pytest
from wasmop.runtime.workloads import Expectation, Manifest, SampleRequest, ensure_built

KINDS = {"basic", "cpu", "memory", "io", "fault", "real", "size", "fixture"}
REQUIRED = {"hello", "echo", "fib", "sha256", "matmul", "alloc", "sleep", "trap", "loop",
            "grow", "flood", "sqlite", "badimport", "notwasm"}  # fmt: skip


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return ensure_built()


def test_manifest_covers_the_issue(manifest: Manifest) -> None:
    names = [w.name for w in manifest.workloads]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED
    for workload in manifest.workloads:
        assert workload.kind in KINDS, workload.name
        assert workload.exercises, workload.name
        assert workload.wasm_path.is_file(), workload.name
        if workload.is_fixture:
            assert workload.check or workload.samples, workload.name
        else:
            assert workload.samples and not workload.check, workload.name
        if not workload.check:
            workload.function_limits()  # parses
    assert {w.name for w in manifest.servable()} - {w.name for w in manifest.benchmarks()} == {
        "env"
    }


def test_expectation_reports_every_mismatch() -> None:
    expect = Expectation.from_mapping(
        {
            "status": 200,
            "headers": {"Content-Type": "application/json"},
            "json": {"a": {"b": 1}, "c": [1, 2]},
            "json_len": {"c": 2},
            "body_contains": '"c"',
        }
    )
    good = b'{"a": {"b": 1, "extra": true}, "c": [1, 2]}'
    headers = {"content-type": "application/json; charset=utf-8"}
    assert expect.problems(200, headers, good) == []
    bad = expect.problems(500, {"Content-Type": "text/plain"}, b'{"a": {"b": 2}, "c": [2]}')
    assert len(bad) == 5
    assert any(p.startswith("status") for p in bad)
    assert any(".a.b" in p for p in bad)
    assert Expectation(reason="trap").problems(500, {"X-Wasmop-Reason": "timeout"}, b"") != []
    with pytest.raises(ValueError, match="unknown expectation"):
        Expectation.from_mapping({"stauts": 200})


def test_sample_request_target() -> None:
    request = SampleRequest.from_mapping({"path": "/x", "query": {"n": 3}, "body": "hi"})
    assert request.target == "/x?n=3"
    assert request.to_request().body == b"hi"


def test_build_skips_work_when_up_to_date(manifest: Manifest) -> None:
    before = {w.name: w.wasm_path.stat().st_mtime_ns for w in manifest.workloads}
    result = subprocess.run(
        [sys.executable, str(manifest.root / "build.py"), "--verbose"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    after = {w.name: w.wasm_path.stat().st_mtime_ns for w in manifest.workloads}
    assert after == before
    assert "compiling" not in result.stderr
    assert "sqlite is up to date" in result.stderr
