"""The function ABI and configuration: pure functions, no wasmtime."""

from __future__ import annotations

import json

import pytest
from wasmop.runtime.abi import (
    FAULT_STATUS,
    REASON_HEADER,
    BadResponse,
    Fault,
    Request,
    cgi_environ,
    fault_body,
    fault_headers,
    parse_cgi_output,
)
from wasmop.runtime.config import (
    MIB,
    EngineFeatures,
    FunctionConfig,
    Limits,
    RuntimeConfig,
)
from wasmop.runtime.errors import RuntimeConfigError


def env_of(request: Request, **kwargs: object) -> dict[str, str]:
    return dict(cgi_environ(request, function="fn", **kwargs))  # type: ignore[arg-type]


def test_cgi_environ_carries_the_request() -> None:
    env = env_of(
        Request(
            method="post",
            path="/items/7",
            query="a=1&b=2",
            headers=[
                ("Content-Type", "application/json"),
                ("X-Trace-Id", "abc"),
                ("Accept", "text/plain"),
                ("Accept", "application/json"),
                ("Host", "example.test:8080"),
            ],
            body=b"12345",
            remote_addr="10.244.1.9",
            server_name="10.244.1.5",
            server_port=8080,
            script_name="/fn",
        ),
        digest="d" * 64,
    )
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/items/7"
    assert env["SCRIPT_NAME"] == "/fn"
    assert env["QUERY_STRING"] == "a=1&b=2"
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "5"
    assert env["REMOTE_ADDR"] == "10.244.1.9"
    assert env["SERVER_PORT"] == "8080"
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["HTTP_X_TRACE_ID"] == "abc"
    assert env["HTTP_ACCEPT"] == "text/plain, application/json"
    assert env["X_FULL_URL"] == "http://example.test:8080/fn/items/7?a=1&b=2"
    assert env["X_WASMOP_DIGEST"] == "d" * 64
    # Content-Type has its own variable; it is not repeated as a header.
    assert "HTTP_CONTENT_TYPE" not in env


def test_cgi_environ_never_includes_the_host_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WASMOP_TEST_SECRET", "s3cret")
    env = env_of(Request())
    assert "WASMOP_TEST_SECRET" not in env
    assert "PATH" not in env and "HOME" not in env


def test_cgi_environ_skips_hop_by_hop_and_malformed_header_names() -> None:
    env = env_of(Request(headers=[("Connection", "keep-alive"), ("Bad Header", "x")]))
    assert "HTTP_CONNECTION" not in env
    assert not any(key.startswith("HTTP_BAD") for key in env)


def test_granted_env_is_added_but_cannot_shadow_cgi() -> None:
    env = env_of(Request(), granted={"GREETING": "hi"})
    assert env["GREETING"] == "hi"
    with pytest.raises(RuntimeConfigError, match="PATH_INFO"):
        FunctionConfig(name="fn", env={"PATH_INFO": "/evil"})
    with pytest.raises(RuntimeConfigError, match="HTTP_"):
        FunctionConfig(name="fn", env={"HTTP_HOST": "x"})


def test_parse_cgi_output_with_headers() -> None:
    parsed = parse_cgi_output(
        b"Content-Type: application/json\nStatus: 201 Created\nX-Custom: yes\n\n{}"
    )
    assert parsed.status == 201
    assert ("Content-Type", "application/json") in parsed.headers
    assert ("X-Custom", "yes") in parsed.headers
    assert all(name.lower() != "status" for name, _ in parsed.headers)
    assert parsed.body == b"{}"


def test_parse_cgi_output_crlf_and_location() -> None:
    parsed = parse_cgi_output(b"Location: /elsewhere\r\n\r\n")
    assert parsed.status == 302
    assert parsed.body == b""


def test_parse_cgi_output_without_headers_is_all_body() -> None:
    parsed = parse_cgi_output(b"just text\nmore text\n\nand more")
    assert parsed.status == 200
    assert parsed.body == b"just text\nmore text\n\nand more"
    assert ("Content-Type", "application/octet-stream") in parsed.headers


def test_parse_cgi_output_drops_framing_headers_the_module_cannot_set() -> None:
    parsed = parse_cgi_output(
        b"Content-Length: 999\nTransfer-Encoding: chunked\nX-Wasmop-Reason: ok\n\nbody"
    )
    names = {name.lower() for name, _ in parsed.headers}
    assert not names & {"content-length", "transfer-encoding", REASON_HEADER.lower()}
    assert parsed.body == b"body"


@pytest.mark.parametrize("status", [b"abc", b"99", b"600 Too High", b""])
def test_invalid_status_is_a_bad_response(status: bytes) -> None:
    with pytest.raises(BadResponse):
        parse_cgi_output(b"Status: " + status + b"\n\nbody")


def test_every_fault_has_a_documented_status() -> None:
    assert set(FAULT_STATUS) == set(Fault)
    assert Fault.TRAP.status == 500
    assert Fault.TIMEOUT.status == 504
    assert Fault.MEMORY_LIMIT.status == 507
    assert Fault.OUTPUT_TOO_LARGE.status == 502
    assert Fault.QUEUE_FULL.status == 503
    assert Fault.BODY_TOO_LARGE.status == 413


def test_fault_response_shape() -> None:
    headers = dict(fault_headers(Fault.QUEUE_FULL))
    assert headers[REASON_HEADER] == "queue-full"
    assert headers["Retry-After"] == "1"
    body = json.loads(fault_body(Fault.TRAP, "wasm trap: unreachable", stderr="boom"))
    assert body == {"reason": "trap", "message": "wasm trap: unreachable", "stderr": "boom"}
    assert "Retry-After" not in dict(fault_headers(Fault.TRAP))


def test_engine_features_from_kubernetes_spellings() -> None:
    features = EngineFeatures.from_mapping({"bulk-memory": False, "relaxedSimd": True})
    assert features.bulk_memory is False
    assert features.relaxed_simd is True
    assert "relaxed-simd" in features.enabled()
    assert "bulk-memory" not in features.enabled()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"warp-drive": True}, "unknown engine features"),
        ({"reference-types": False}, "reference-types"),
        ({"simd": False, "relaxed-simd": True}, "relaxed-simd needs simd"),
    ],
)
def test_engine_features_refuse_what_wasmtime_would_abort_on(
    data: dict[str, bool], message: str
) -> None:
    with pytest.raises(RuntimeConfigError, match=message):
        EngineFeatures.from_mapping(data)


def test_limits_accept_mib_and_reject_nonsense() -> None:
    limits = Limits.from_mapping({"memoryMiB": 64, "timeout_ms": 250, "output_mib": 0.5})
    assert limits.memory_bytes == 64 * MIB
    assert limits.timeout_s == 0.25
    assert limits.output_bytes == MIB // 2
    with pytest.raises(RuntimeConfigError):
        Limits(memory_bytes=1024)
    with pytest.raises(RuntimeConfigError):
        Limits(timeout_s=0)
    with pytest.raises(RuntimeConfigError, match="unknown limits"):
        Limits.from_mapping({"cpu": 1})


def test_function_config_from_mapping() -> None:
    config = FunctionConfig.from_mapping(
        "hello",
        {
            "maxConcurrency": 2,
            "maxQueue": 0,
            "env": [{"name": "MODE", "value": "fast"}],
            "limits": {"timeoutS": 1},
        },
    )
    assert config.max_concurrency == 2
    assert config.max_queue == 0
    assert config.env == {"MODE": "fast"}
    assert config.limits.timeout_s == 1
    with pytest.raises(RuntimeConfigError, match="function name"):
        FunctionConfig(name="Bad Name")


def test_runtime_config_from_mapping(tmp_path: object) -> None:
    config = RuntimeConfig.from_mapping(
        {"features": {"simd": False}, "maxModuleMib": 2, "epochTickS": 0.005}
    )
    assert config.features.simd is False
    assert config.max_module_bytes == 2 * MIB
    assert config.epoch_tick_s == 0.005
    with pytest.raises(RuntimeConfigError):
        RuntimeConfig(allowed_import_modules=("env",))


@pytest.mark.parametrize("status", [b"101 Switching Protocols", b"100 Continue", b"199"])
def test_informational_status_is_a_bad_response(status: bytes) -> None:
    """A 1xx is not a final response: the client would wait for another one."""
    with pytest.raises(BadResponse, match="Status"):
        parse_cgi_output(b"Status: " + status + b"\n\nbody")


@pytest.mark.parametrize("status", [b"204", b"304 Not Modified"])
def test_a_body_with_204_or_304_is_a_bad_response(status: bytes) -> None:
    with pytest.raises(BadResponse, match="no body"):
        parse_cgi_output(b"Status: " + status + b"\n\nbody")
    assert parse_cgi_output(b"Status: " + status + b"\n\n").body == b""


@pytest.mark.parametrize(
    "line", [b"X-A: one\rtwo", b"X-A: \x00", b"X-A: a\x1bb", b"Location: /x\rSet-Cookie: a=b"]
)
def test_control_characters_in_a_header_are_a_bad_response(line: bytes) -> None:
    """A lone CR once reached the client as an empty reply that was counted as a 200."""
    with pytest.raises(BadResponse, match="control character"):
        parse_cgi_output(b"Content-Type: text/plain\n" + line + b"\n\nbody")
