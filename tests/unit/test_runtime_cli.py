"""`wasmop runtime check|invoke|serve` as a user runs them."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest
from wasmop.runtime.cli import default_name
from wasmop.runtime.workloads import Manifest, ensure_built


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return ensure_built()


def wasmop(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wasmop.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_default_names() -> None:
    assert default_name("functions/build/hello.wasm") == "hello"
    assert default_name("https://example.test/m/SQLite.wasm.gz") == "sqlite"


def test_check_ok_and_json(manifest: Manifest) -> None:
    result = wasmop("runtime", "check", "--module", str(manifest["hello"].wasm_path))
    assert result.returncode == 0, result.stderr
    assert "digest   sha256:" in result.stdout
    result = wasmop("runtime", "check", "--json", "--module", str(manifest["sqlite"].wasm_path))
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert data["size"] == manifest["sqlite"].wasm_path.stat().st_size


def test_check_refusals_name_the_reason(manifest: Manifest) -> None:
    result = wasmop("runtime", "check", "--module", str(manifest["badimport"].wasm_path))
    assert result.returncode == 1
    assert "ForbiddenImport" in result.stderr
    assert "env::host_socket_connect" in result.stderr
    result = wasmop("runtime", "check", "--json", "--module", str(manifest["notwasm"].wasm_path))
    assert result.returncode == 1
    assert json.loads(result.stdout)["reason"] == "NotWasm"
    result = wasmop("runtime", "check", "--module", "x.wasm", "--feature", "reference-types=off")
    assert result.returncode == 1
    assert "reference-types" in result.stderr


def test_invoke(manifest: Manifest) -> None:
    result = wasmop(
        "runtime", "invoke", "--module", str(manifest["fib"].wasm_path), "--query", "n=20"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "fib(20) = 6765\n"
    result = wasmop("runtime", "invoke", "-i", "--module", str(manifest["trap"].wasm_path))
    assert result.returncode == 1
    assert result.stdout.startswith("HTTP/1.1 500")
    assert "X-Wasmop-Reason: trap" in result.stdout


def test_serve_answers_shows_metrics_and_stops_cleanly(manifest: Manifest) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wasmop.cli",
            "runtime",
            "serve",
            "--module",
            str(manifest["hello"].wasm_path),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"on http://127.0.0.1:{port}" in line
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(base + "/", timeout=10) as response:
            assert response.read() == b"Hello, world!\n"
        with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert (
            'wasmop_function_requests_total{code="200",function="hello",reason="ok"} 1.0' in metrics
        )
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "panicked" not in stderr


def test_serve_refuses_a_bad_module(manifest: Manifest) -> None:
    result = wasmop(
        "runtime", "serve", "--port", str(free_port()),
        "--module", str(manifest["badimport"].wasm_path),
    )  # fmt: skip
    assert result.returncode == 1
    assert "env::host_socket_connect" in result.stderr
