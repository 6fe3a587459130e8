"""The function ABI (docs/abi.md): CGI environment in, CGI response out, faults as HTTP.

Pure functions and tables only, so the contract can be unit-tested without wasmtime and
read in one place: how a request becomes environment variables, how stdout becomes a
response, and which HTTP status and `X-Wasmop-Reason` each fault produces.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from wasmop import __version__
from wasmop.wellknown import BODY_TOO_LARGE_REASON, REASON_HEADER

SERVER_SOFTWARE = f"wasmop/{__version__}"


class Fault(enum.Enum):
    """Every way a request can fail, with its HTTP status. The value is the reason text."""

    TRAP = "trap"
    EXIT_STATUS = "exit-status"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory-limit"
    OUTPUT_TOO_LARGE = "output-too-large"
    BAD_RESPONSE = "bad-response"
    BODY_TOO_LARGE = BODY_TOO_LARGE_REASON
    BODY_TIMEOUT = "body-timeout"
    OVERLOADED = "overloaded"
    CONNECTION_LIMIT = "connection-limit"
    QUEUE_FULL = "queue-full"
    QUEUE_TIMEOUT = "queue-timeout"
    DRAINING = "draining"
    NOT_FOUND = "no-such-function"
    INTERNAL = "internal"

    @property
    def status(self) -> int:
        return FAULT_STATUS[self]


FAULT_STATUS: dict[Fault, int] = {
    Fault.TRAP: 500,
    Fault.EXIT_STATUS: 500,
    Fault.TIMEOUT: 504,
    Fault.MEMORY_LIMIT: 507,
    Fault.OUTPUT_TOO_LARGE: 502,
    Fault.BAD_RESPONSE: 502,
    Fault.BODY_TOO_LARGE: 413,
    Fault.BODY_TIMEOUT: 408,
    Fault.OVERLOADED: 503,
    Fault.CONNECTION_LIMIT: 503,
    Fault.QUEUE_FULL: 503,
    Fault.QUEUE_TIMEOUT: 503,
    Fault.DRAINING: 503,
    Fault.NOT_FOUND: 404,
    Fault.INTERNAL: 500,
}

# Faults after which a client may simply retry (the runtime was busy, not the function bad).
RETRYABLE = frozenset(
    {
        Fault.QUEUE_FULL,
        Fault.QUEUE_TIMEOUT,
        Fault.DRAINING,
        Fault.OVERLOADED,
        Fault.CONNECTION_LIMIT,
    }
)


def fault_body(fault: Fault, message: str, stderr: str | None = None) -> bytes:
    """The JSON body of a fault response; `stderr` is the tail of the module's stderr."""
    data = {"reason": fault.value, "message": message}
    if stderr:
        data["stderr"] = stderr
    return (json.dumps(data) + "\n").encode()


def fault_headers(fault: Fault) -> list[tuple[str, str]]:
    headers = [("Content-Type", "application/json"), (REASON_HEADER, fault.value)]
    if fault in RETRYABLE:
        headers.append(("Retry-After", "1"))
    return headers


# --- request -> environment ------------------------------------------------------------

_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")
# Hop-by-hop and framing headers belong to the HTTP connection, not to the function.
_SKIP_REQUEST_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    }
)


@dataclass
class Request:
    """An HTTP request as the runtime hands it to a function."""

    method: str = "GET"
    path: str = "/"  # the path the function sees as PATH_INFO
    query: str = ""  # raw query string, without "?"
    headers: Iterable[tuple[str, str]] | Mapping[str, str] = ()
    body: bytes = b""
    remote_addr: str = "127.0.0.1"
    server_name: str = "localhost"
    server_port: int = 80
    scheme: str = "http"
    script_name: str = ""  # the mount prefix, in servers that host several functions

    def header_items(self) -> list[tuple[str, str]]:
        if isinstance(self.headers, Mapping):
            return list(self.headers.items())
        return list(self.headers)


def cgi_environ(
    request: Request,
    *,
    function: str,
    digest: str = "",
    granted: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """The environment a module sees: RFC 3875 CGI variables, HTTP_* headers, grants.

    Nothing from the host process's own environment is ever passed.
    """
    headers = request.header_items()
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    host = next((v for k, v in headers if k.lower() == "host"), "")
    query = f"?{request.query}" if request.query else ""
    authority = host or f"{request.server_name}:{request.server_port}"
    env: dict[str, str] = {}
    if granted:
        env.update(granted)
    env.update(
        {
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_NAME": request.server_name,
            "SERVER_PORT": str(request.server_port),
            "REQUEST_METHOD": request.method.upper(),
            "SCRIPT_NAME": request.script_name,
            "PATH_INFO": request.path,
            "QUERY_STRING": request.query,
            "CONTENT_LENGTH": str(len(request.body)),
            "REMOTE_ADDR": request.remote_addr,
            "X_FULL_URL": f"{request.scheme}://{authority}{request.script_name}{request.path}{query}",
            "X_WASMOP_FUNCTION": function,
        }
    )
    if content_type:
        env["CONTENT_TYPE"] = content_type
    if digest:
        env["X_WASMOP_DIGEST"] = digest
    joined: dict[str, list[str]] = {}
    for name, value in headers:
        if name.lower() in _SKIP_REQUEST_HEADERS or not _HEADER_NAME.match(name):
            continue
        joined.setdefault("HTTP_" + name.upper().replace("-", "_"), []).append(value)
    for key, values in joined.items():
        env[key] = ", ".join(v.replace("\0", "") for v in values)
    return list(env.items())


# --- stdout -> response ----------------------------------------------------------------

_RESPONSE_HEADER = re.compile(rb"^([A-Za-z0-9!#$%&'*+.^_`|~-]+):[ \t]*(.*?)[ \t]*$", re.DOTALL)
# What an HTTP field value may not contain: control characters other than tab (a lone CR
# or LF would split the header, a NUL ends it early in many clients).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Final statuses a function may answer with: 1xx are interim answers a client would keep
# waiting after, and nothing outside 200-599 is a status at all.
MIN_STATUS, MAX_STATUS = 200, 599
NO_BODY_STATUSES = frozenset({204, 304})
# The runtime frames the response itself; a module cannot set these.
_DROP_RESPONSE_HEADERS = frozenset(
    {
        "status",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "trailer",
        "te",
        "date",
        "server",
        REASON_HEADER.lower(),
    }
)
MAX_HEADER_BLOCK = 64 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class BadResponse(ValueError):
    """The module's CGI header block is malformed (e.g. an invalid Status)."""


@dataclass
class ParsedOutput:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def parse_cgi_output(output: bytes) -> ParsedOutput:
    """Split stdout into status, headers and body.

    A header block is recognised when the output starts with `Name: value` lines ended by
    an empty line (LF or CRLF) within the first 64 KiB; otherwise the whole output is the
    body. `Status: 404 Not Found` sets the status (default 200, or 302 with a `Location`).
    A block that could not be sent as it is raises `BadResponse`: a status outside
    200-599, a body with 204 or 304, a control character in a header.
    """
    block_end = -1
    separator = 0
    for candidate in (b"\r\n\r\n", b"\n\n"):
        index = output.find(candidate, 0, MAX_HEADER_BLOCK)
        if index != -1 and (block_end == -1 or index < block_end):
            block_end, separator = index, len(candidate)
    if block_end == -1:
        return ParsedOutput(200, [("Content-Type", DEFAULT_CONTENT_TYPE)], output)
    lines = output[:block_end].replace(b"\r\n", b"\n").split(b"\n")
    matches = [_RESPONSE_HEADER.match(line) for line in lines]
    if not all(matches):
        return ParsedOutput(200, [("Content-Type", DEFAULT_CONTENT_TYPE)], output)
    status: int | None = None
    headers: list[tuple[str, str]] = []
    for match in matches:
        assert match is not None
        name = match.group(1).decode("ascii")
        if _CONTROL.search(match.group(2)):
            raise BadResponse(f"header {name} contains a control character")
        value = match.group(2).decode("latin-1")
        if name.lower() == "status":
            code = value.split(" ", 1)[0]
            if not (code.isdigit() and len(code) == 3 and MIN_STATUS <= int(code) <= MAX_STATUS):
                raise BadResponse(
                    f"invalid Status header: {value!r} (a final status, {MIN_STATUS}-{MAX_STATUS})"
                )
            status = int(code)
            continue
        if name.lower() in _DROP_RESPONSE_HEADERS:
            continue
        headers.append((name, value))
    if status is None:
        status = 302 if any(k.lower() == "location" for k, _ in headers) else 200
    body = output[block_end + separator :]
    if status in NO_BODY_STATUSES and body:
        raise BadResponse(
            f"a {status} response has no body, but the function wrote {len(body)} bytes"
        )
    if not any(k.lower() == "content-type" for k, _ in headers):
        headers.append(("Content-Type", DEFAULT_CONTENT_TYPE))
    return ParsedOutput(status, headers, body)
