"""The HTTP server: serves one or many functions plus /healthz, /readyz and /metrics.

Embeddable: a node agent runs many of these in one asyncio loop, one per pod, each on a
listening socket it created inside the pod's network namespace:

    handle = await start_server(function, sock=listening_socket)
    ...
    await handle.stop()          # this server only; other servers and the function go on

With one function, every path except the three reserved ones invokes it (PATH_INFO is
the request path). With several, `/<name>/<rest>` invokes function `name` with
SCRIPT_NAME `/<name>` and PATH_INFO `/<rest>`. Each server has its own Prometheus
registry, so servers never collide. The server owns the socket it is given and closes
it on stop; it never closes the functions, which the caller may serve again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from wasmop.runtime.abi import Fault, Request, fault_body, fault_headers
from wasmop.runtime.admission import Admission, AdmittingServer, shared_admission
from wasmop.runtime.function import Function, Response
from wasmop.runtime.isolation import keep_spare
from wasmop.runtime.metrics import registry_for

log = logging.getLogger("wasmop.runtime.server")

RESERVED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
READ_CHUNK = 64 * 1024

# Told about every answered request (the request, the response, seconds it took): a node
# agent writes it to the Pod's container log.
RequestLog = Callable[[Request, Response, float], None]


@dataclass
class ServerHandle:
    """A running server. `stop()` closes its socket after in-flight requests finish."""

    functions: dict[str, Function]
    registry: CollectorRegistry
    host: str
    port: int
    prefix_routing: bool
    admission: Admission = field(default_factory=shared_admission)
    runner: web.ServerRunner | None = None
    ready: bool = True  # /readyz answers 503 once this is False (set by stop())
    request_log: RequestLog | None = None
    # CPU seconds the server spent answering /healthz, /readyz and /metrics itself (the
    # functions' own CPU is theirs): with it a probed, idle Pod's CPU figure is not zero.
    reserved_cpu_seconds: float = 0.0
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url_for(self, name: str | None = None) -> str:
        """Base URL of a function (with its prefix when the server routes by name)."""
        if self.prefix_routing:
            if name is None:
                raise ValueError("this server hosts several functions; name one")
            return f"{self.url}/{name}"
        return self.url

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, answer in-flight requests (up to the runner's grace), close."""
        if self._stopped:
            return
        self._stopped = True
        self.ready = False
        if self.runner is not None:
            if grace is not None:
                # aiohttp only takes the grace period at construction; adjust it in place.
                with contextlib.suppress(AttributeError):
                    self.runner._shutdown_timeout = grace
            await self.runner.cleanup()
        log.info("server stopped address=%s:%d", self.host, self.port)

    async def __aenter__(self) -> ServerHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- request handling

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path in RESERVED_PATHS:
            cpu = time.thread_time()
            reply = self._reserved(path)
            self.reserved_cpu_seconds += time.thread_time() - cpu
            return reply
        function, script_name, path_info = self._route(path)
        if function is None:
            return _fault_response(Fault.NOT_FOUND, f"no function serves {path}")
        # Everything that can refuse the request is decided before its body is read.
        refusal = function.admits()
        if refusal is not None:
            return _refuse(function, *refusal)
        limit = function.config.limits.body_bytes
        length = request.content_length
        if length is not None and length > limit:
            return _refuse(function, Fault.BODY_TOO_LARGE, f"request body exceeds {limit} bytes")
        admission = self.admission
        reserved = length or 0
        if reserved and not admission.reserve_body(reserved):
            return _refuse(function, Fault.OVERLOADED, "the node's request-body budget is spent")
        try:
            body = b""
            if request.body_exists:
                try:
                    async with asyncio.timeout(admission.settings.body_timeout_s):
                        body, reserved, refused = await self._read_body(request, limit, reserved)
                except TimeoutError:
                    return _refuse(
                        function,
                        Fault.BODY_TIMEOUT,
                        f"the body did not arrive within {admission.settings.body_timeout_s} s",
                    )
                if refused is not None:
                    return _refuse(function, *refused)
            call = Request(
                method=request.method,
                path=path_info,
                query=request.query_string,
                headers=list(request.headers.items()),
                body=body,
                remote_addr=request.remote or "",
                server_name=self.host,
                server_port=self.port,
                scheme=request.scheme,
                script_name=script_name,
            )
            started = time.perf_counter()
            result = await function.invoke(call)
            if self.request_log is not None:
                with contextlib.suppress(Exception):  # a failing log never fails the request
                    self.request_log(call, result, time.perf_counter() - started)
        finally:
            if reserved:
                admission.release_body(reserved)
        return _to_web(result.status, result.headers, result.body)

    async def _read_body(
        self, request: web.BaseRequest, limit: int, reserved: int
    ) -> tuple[bytes, int, tuple[Fault, str] | None]:
        """The body, the budget now reserved for it, and a refusal if one applies. A body
        without a declared length reserves the budget chunk by chunk as it arrives."""
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.read(READ_CHUNK):
            size += len(chunk)
            if size > limit:
                return b"", reserved, (Fault.BODY_TOO_LARGE, f"request body exceeds {limit} bytes")
            if size > reserved:
                if not self.admission.reserve_body(size - reserved):
                    return b"", reserved, (Fault.OVERLOADED, "the request-body budget is spent")
                reserved = size
            chunks.append(chunk)
        return b"".join(chunks), reserved, None

    def _route(self, path: str) -> tuple[Function | None, str, str]:
        if not self.prefix_routing:
            return next(iter(self.functions.values())), "", path
        name, _, rest = path.lstrip("/").partition("/")
        function = self.functions.get(name)
        return function, f"/{name}", "/" + rest

    def _reserved(self, path: str) -> web.StreamResponse:
        if path == "/healthz":
            return web.Response(text="ok\n")
        if path == "/readyz":
            if self.ready and all(f.ready for f in self.functions.values()):
                return web.Response(text="ready\n")
            return web.Response(status=503, text="not ready\n")
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def access_line(request: Request, response: Response, seconds: float) -> str:
    """One request as the runtime logs it (logfmt): what was asked, how it ended, its cost."""
    target = request.script_name + request.path + (f"?{request.query}" if request.query else "")
    if any(c.isspace() or c == '"' for c in target):
        target = json.dumps(target)
    line = (
        f"method={request.method} path={target} status={response.status}"
        f" duration_ms={seconds * 1000:.3f} cpu_ms={response.stats.cpu_s * 1000:.3f}"
        f" memory_bytes={response.stats.memory_bytes}"
    )
    return line + (f" reason={response.reason}" if response.reason else "")


def _to_web(
    status: int, headers: list[tuple[str, str]], body: bytes, close: bool = False
) -> web.Response:
    response = web.Response(status=status, body=body, headers=CIMultiDict(headers))
    if close:
        response.force_close()
    return response


def _refuse(function: Function, fault: Fault, message: str) -> web.Response:
    """A refusal counted against the function; the connection is closed, since the rest
    of the request's body was not read."""
    response = function.reject(fault, message)
    return _to_web(response.status, response.headers, response.body, close=True)


def _fault_response(fault: Fault, message: str) -> web.Response:
    return _to_web(fault.status, fault_headers(fault), fault_body(fault, message))


def _as_mapping(
    functions: Function | Iterable[Function] | Mapping[str, Function],
) -> dict[str, Function]:
    if isinstance(functions, Function):
        return {functions.name: functions}
    if isinstance(functions, Mapping):
        return dict(functions)
    result: dict[str, Function] = {}
    for function in functions:
        if function.name in result:
            raise ValueError(f"two functions are named {function.name}")
        result[function.name] = function
    return result


async def start_server(
    functions: Function | Iterable[Function] | Mapping[str, Function],
    *,
    sock: socket.socket | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    prefix_routing: bool | None = None,
    shutdown_timeout: float = 5.0,
    admission: Admission | None = None,
    request_log: RequestLog | None = None,
) -> ServerHandle:
    """Serve functions on `sock` (an already listening socket) or on host:port.

    Binds to 127.0.0.1 by default; port 0 picks a free port (see `handle.port`).
    `prefix_routing` defaults to True when there is more than one function. `admission`
    (the process's shared counters by default) caps connections and request bodies.
    """
    table = _as_mapping(functions)
    if not table:
        raise ValueError("start_server needs at least one function")
    if prefix_routing is None:
        prefix_routing = len(table) > 1
    elif not prefix_routing and len(table) > 1:
        raise ValueError("several functions need prefix routing")
    handle = ServerHandle(
        functions=table,
        registry=registry_for(table.values()),
        host=host,
        port=port,
        prefix_routing=prefix_routing,
        admission=admission or shared_admission(),
        request_log=request_log,
    )
    server = AdmittingServer(handle.handle, handle.admission, access_log=None)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        if sock is not None:
            site: web.BaseSite = web.SockSite(runner, sock)
        else:
            site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    handle.runner = runner
    bound = _bound_address(runner)
    if bound is not None:
        handle.host, handle.port = bound
    log.info("serving functions=%s address=%s:%d", ",".join(table), handle.host, handle.port)
    if any(function.isolated is not None for function in table.values()):
        keep_spare()
    return handle


def _bound_address(runner: web.ServerRunner) -> tuple[str, int] | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return str(address[0]), int(address[1])
    return None
