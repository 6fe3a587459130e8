"""Request admission: what a connection or a request may take before a function sees it.

A node agent serves many tenants' functions from one process, so nothing a client does
may grow without bound: each server takes at most ``per_server_connections`` and the
process ``max_connections``; a request's head must arrive within ``header_timeout_s`` of
the connection opening (or of the previous response), its body within ``body_timeout_s``;
and the bodies being read or held by all requests of the process together stay within
``body_budget_bytes``. The server checks the function's queue room first and reserves
the declared body size before it reads a byte of the body, so a refused request never
costs its upload. Every refusal that can still be answered carries ``X-Wasmop-Reason``
(docs/abi.md lists them).
"""

from __future__ import annotations

import asyncio
import resource
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from wasmop.runtime.abi import Fault, fault_body
from wasmop.wellknown import REASON_HEADER


def _default_max_connections() -> int:
    """Half the file descriptors this process may open, at most 4096."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(64, min(4096, soft // 2))


@dataclass(frozen=True)
class AdmissionSettings:
    max_connections: int = field(default_factory=_default_max_connections)  # whole process
    per_server_connections: int = 256  # one function server (one Pod)
    header_timeout_s: float = 10.0  # request head, from connection open or last response
    body_timeout_s: float = 30.0  # whole body, from the end of the head
    body_budget_bytes: int = 64 * 2**20  # request bodies in memory, whole process

    def __post_init__(self) -> None:
        for name in ("max_connections", "per_server_connections", "body_budget_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.header_timeout_s <= 0 or self.body_timeout_s <= 0:
            raise ValueError("timeouts must be positive")


class Admission:
    """The process-wide counters every server of the process shares (thread-safe)."""

    def __init__(self, settings: AdmissionSettings | None = None) -> None:
        self.settings = settings or AdmissionSettings()
        self._lock = threading.Lock()
        self.connections = 0
        self.body_bytes = 0
        self.refused: dict[str, int] = {}

    def open_connection(self, server_connections: int) -> bool:
        """Take a connection slot; False when the process or the server is full."""
        with self._lock:
            if (
                self.connections >= self.settings.max_connections
                or server_connections >= self.settings.per_server_connections
            ):
                reason = Fault.CONNECTION_LIMIT.value
                self.refused[reason] = self.refused.get(reason, 0) + 1
                return False
            self.connections += 1
            return True

    def close_connection(self) -> None:
        with self._lock:
            self.connections -= 1

    def reserve_body(self, size: int) -> bool:
        """Reserve ``size`` bytes of the body budget; False (nothing taken) if it is spent."""
        with self._lock:
            if self.body_bytes + size > self.settings.body_budget_bytes:
                return False
            self.body_bytes += size
            return True

    def release_body(self, size: int) -> None:
        with self._lock:
            self.body_bytes -= size

    def count_refusal(self, reason: str) -> None:
        with self._lock:
            self.refused[reason] = self.refused.get(reason, 0) + 1


LINGER_S = 1.0

_SHARED: Admission | None = None
_SHARED_LOCK = threading.Lock()


def shared_admission() -> Admission:
    """The process's admission counters, created with the defaults on first use."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = Admission()
        return _SHARED


_CONNECTION_REFUSAL = (
    "HTTP/1.1 503 Service Unavailable\r\n"
    f"{REASON_HEADER}: {Fault.CONNECTION_LIMIT.value}\r\n"
    "Retry-After: 1\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: {length}\r\n"
    "Connection: close\r\n\r\n"
    "{body}"
)


class AdmittingServer(web.Server):
    """aiohttp's low-level server with a connection cap and a header-read deadline.

    The deadline is aiohttp's keep-alive timeout, which runs from the moment a connection
    opens (and again after each response) until a complete request head has arrived: a
    client that sends nothing, or only part of a head, is disconnected when it passes.
    """

    def __init__(self, handler: Any, admission: Admission, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", admission.settings.header_timeout_s)
        # After refusing a request whose body was not read, aiohttp reads and discards the
        # rest for a while so the client sees the answer; not for its default 10 s.
        kwargs.setdefault("lingering_time", LINGER_S)
        super().__init__(handler, **kwargs)
        self.admission = admission
        self._admitted: set[Any] = set()

    def connection_made(self, handler: Any, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if self.admission.open_connection(len(self._admitted)):
            self._admitted.add(handler)
            return
        body = fault_body(Fault.CONNECTION_LIMIT, "too many connections to this server")
        refusal = _CONNECTION_REFUSAL.format(length=len(body), body=body.decode())
        transport.write(refusal.encode())
        transport.close()

    def connection_lost(self, handler: Any, exc: BaseException | None) -> None:
        super().connection_lost(handler, exc)
        if handler in self._admitted:
            self._admitted.discard(handler)
            self.admission.close_connection()
