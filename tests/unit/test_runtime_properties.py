"""Generated inputs through the runtime's parsers (hypothesis, derandomized so a failure
reproduces on every run): whatever a module writes or whatever bytes arrive as a module,
the runtime answers with a response it can send or a ModuleError with a reason."""

from __future__ import annotations

import re

import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wasmop.runtime import ModuleError, RuntimeConfig
from wasmop.runtime.abi import BadResponse, parse_cgi_output
from wasmop.runtime.loader import (
    ACCOUNTING_PREFIX,
    decode_module_bytes,
    inspect,
    parse_interface,
    with_accounting_exports,
)
from wasmop.runtime.workloads import load_manifest

SETTINGS = settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

header_names = st.sampled_from(
    ["Status", "Content-Type", "Location", "X-A", "Content-Length", "Set-Cookie", "X-Wasmop-Reason"]
) | st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12)
header_values = st.sampled_from(
    ["200", "204", "304 Not Modified", "101 Switching", "404 Nope", "999", "text/plain", "/x"]
) | st.binary(max_size=24).map(lambda b: b.decode("latin-1"))
header_lines = st.tuples(header_names, header_values).map(
    lambda nv: f"{nv[0]}: {nv[1]}".encode("latin-1")
)
outputs = st.one_of(
    st.binary(max_size=256),
    st.tuples(
        st.lists(header_lines, max_size=6),
        st.sampled_from([b"\n", b"\r\n"]),
        st.binary(max_size=64),
    ).map(lambda t: t[1].join(t[0]) + t[1] * 2 + t[2]),
)


@SETTINGS
@given(outputs)
def test_any_output_is_a_sendable_response_or_a_bad_response(output: bytes) -> None:
    try:
        parsed = parse_cgi_output(output)
    except BadResponse as exc:
        assert str(exc)
        return
    assert 200 <= parsed.status <= 599
    if parsed.status in (204, 304):
        assert parsed.body == b""
    names = [name.lower() for name, _ in parsed.headers]
    assert "content-type" in names
    assert not {"status", "content-length", "transfer-encoding", "x-wasmop-reason"} & set(names)
    for name, value in parsed.headers:
        assert TOKEN.match(name), name
        assert not CONTROL.search(value), value


HELLO = load_manifest()["hello"].wasm_path.read_bytes()
CONFIG = RuntimeConfig()
ENGINE = wasmtime.Engine()


def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """The module with bytes flipped, cut or inserted: mostly invalid, some still valid."""
    flip = st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)).map(
        lambda iv: data[: iv[0]] + bytes([iv[1]]) + data[iv[0] + 1 :]
    )
    cut = st.integers(0, len(data)).map(lambda n: data[:n])
    insert = st.tuples(st.integers(8, len(data)), st.binary(min_size=1, max_size=8)).map(
        lambda ib: data[: ib[0]] + ib[1] + data[ib[0] :]
    )
    return st.one_of(flip, cut, insert, st.binary(max_size=64))


@SETTINGS
@given(mutated(HELLO))
def test_any_module_bytes_are_served_or_refused_with_a_reason(data: bytes) -> None:
    try:
        wasm, _ = decode_module_bytes(data, CONFIG.max_module_bytes)
        info, parsed = inspect(wasm, ENGINE, CONFIG, None, None)
    except ModuleError as exc:
        assert exc.reason and exc.message
        return
    # What passes is accounted for: the instrumented module is valid, exports every memory
    # and table once more, and the reader agrees with the engine about them.
    instrumented = with_accounting_exports(wasm, parsed)
    wasmtime.Module.validate(ENGINE, instrumented)
    again = parse_interface(instrumented)
    assert again.memories == parsed.memories and again.tables == parsed.tables
    added = {e.name for e in again.exports} - {e.name for e in parsed.exports}
    assert len(added) == len(parsed.memories) + len(parsed.tables)
    assert all(name.startswith(ACCOUNTING_PREFIX) for name in added)
    assert info.digest and info.size == len(wasm)
