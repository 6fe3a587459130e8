"""Replays recorded Kubernetes API exchanges from a real HTTP server on 127.0.0.1.

The client under test talks HTTP (or HTTPS) to this server exactly as it talks to a
kube-apiserver: lists come back as JSON bodies, watches as a chunked stream of JSON lines.
The server answers from a script, in order, and records every request it was sent, so a
test can assert what the client asked for (which resourceVersion it resumed from) as
well as what it made of the answers. The bodies and watch lines come from a recording of
the real API server (``tests/unit/data/kube_streams.json``, written by
``scripts/record_kube_streams.py``); tests splice in the faults they need (a garbled
line, a 410, a server that went away).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

RECORDING = Path(__file__).parent / "data" / "kube_streams.json"


def recording() -> dict[str, Any]:
    """The recorded exchanges, by name (see scripts/record_kube_streams.py)."""
    return json.loads(RECORDING.read_text())["exchanges"]


def lines_of(name: str) -> list[str]:
    """The lines of a recorded watch stream."""
    return recording()[name]["response"]["lines"]


def items_of(name: str) -> list[dict[str, Any]]:
    """The objects of a recorded list."""
    return recording()[name]["response"]["body"]["items"]


def list_version(name: str) -> str:
    return recording()[name]["response"]["body"]["metadata"]["resourceVersion"]


def version_of(line: str) -> str:
    """The resourceVersion a watch line carries (an event's object or a bookmark)."""
    return json.loads(line)["object"]["metadata"]["resourceVersion"]


def watch(
    path: str, version: str, lines: list[str], query: dict[str, str] | None = None, **kw: Any
) -> Exchange:
    """A watch from ``version`` answered with ``lines`` (see Exchange for ``kw``)."""
    query = {**(query or {}), "watch": "1", "resourceVersion": version}
    return Exchange(path, query, lines=lines, **kw)


@dataclass
class Exchange:
    """One expected request and the answer to give it."""

    path: str
    query: dict[str, str] = field(default_factory=dict)  # must be a subset of the request's
    method: str = "GET"
    status: int = 200
    body: Any = None  # a JSON answer (list, get, a Status for errors)
    lines: list[str] | None = None  # a watch stream, one line per chunk
    hold: bool = False  # after the lines, keep the stream open instead of ending it

    @classmethod
    def recorded(cls, name: str, **overrides: Any) -> Exchange:
        """The exchange recorded as ``name``, answered as recorded."""
        entry = recording()[name]
        request, response = entry["request"], entry["response"]
        fields: dict[str, Any] = {
            "path": request["path"],
            "query": dict(request.get("query", {})),
            "method": request.get("method", "GET"),
            "status": response["status"],
            "body": response.get("body"),
            "lines": response.get("lines"),
        }
        fields.update(overrides)
        return cls(**fields)


@dataclass(frozen=True)
class Seen:
    """A request the server received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: str = ""


class ReplayServer:
    """Answers each request with the first unused exchange of ``script`` for the same
    method and path, a watch or a plain request (`_answers`), so the watches and lists of
    one resource are each answered in order while other requests interleave freely. A
    request nothing in the script answers waits until the server closes (as a quiet watch
    would), so a client under test idles instead of spinning."""

    def __init__(self, script: list[Exchange], tls: ssl.SSLContext | None = None) -> None:
        self.script = list(script)
        self.scripted = len(script)  # how many requests the script answers
        self.tls = tls
        self.seen: list[Seen] = []
        self.mismatches: list[str] = []
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._released = asyncio.Event()
        self._site: web.TCPSite | None = None
        self._open: set[asyncio.BaseTransport] = set()
        self.port = 0
        self.url = ""

    async def __aenter__(self) -> ReplayServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await self._listen()
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        return self

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(
            self._runner, "127.0.0.1", self.port, ssl_context=self.tls, reuse_address=True
        )
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def go_away(self) -> None:
        """As an API server that stops: connections cut, new ones refused."""
        assert self._site is not None
        await self._site.stop()
        for transport in list(self._open):
            transport.abort()

    async def come_back(self) -> None:
        """As the API server started again on the same address."""
        await self._listen()

    async def __aexit__(self, *exc: object) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[Seen]:  # noqa: ASYNC109
        """Until ``count`` requests arrived; fails after ``timeout`` seconds."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.seen) >= count), timeout)
        return self.seen

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.text() if request.can_read_body else ""
        seen = Seen(request.method, request.path, dict(request.query), dict(request.headers), body)
        transport = request.transport
        if transport is not None:
            self._open.add(transport)
        try:
            return await self._replay(request, seen)
        finally:
            self._open.discard(transport)  # type: ignore[arg-type]

    async def _replay(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        async with self._arrived:
            self.seen.append(seen)
            self._arrived.notify_all()
        index = next((i for i, e in enumerate(self.script) if _answers(e, seen)), None)
        if index is None:
            await self._released.wait()
            raise web.HTTPServiceUnavailable(text="nothing more to replay")
        expected = self.script.pop(index)
        problem = _mismatch(expected, seen)
        if problem:
            self.mismatches.append(problem)
            return web.Response(status=500, text=f"replay: {problem}")
        if expected.lines is None:
            return web.json_response(expected.body, status=expected.status)
        response = web.StreamResponse(status=expected.status)
        response.content_type = "application/json"
        await response.prepare(request)
        for line in expected.lines:
            await response.write(line.encode() + b"\n")
        if expected.hold:
            await self._released.wait()
        if request.transport is None or request.transport.is_closing():
            return response  # cut meanwhile (go_away, or the client left)
        await response.write_eof()
        return response


def _answers(exchange: Exchange, seen: Seen) -> bool:
    """Same method, path, and kind (a watch or not): as the API server dispatches."""
    watching = "watch" in exchange.query or exchange.lines is not None
    return (exchange.method, exchange.path, watching) == (
        seen.method,
        seen.path,
        seen.query.get("watch") in ("1", "true"),
    )


def _mismatch(expected: Exchange, seen: Seen) -> str:
    wrong = {k: seen.query.get(k) for k, v in expected.query.items() if seen.query.get(k) != v}
    if wrong:
        return f"{seen.path}: expected query {expected.query}, got {seen.query}"
    return ""


def kubeconfig(path: Path, server: str, user: dict[str, Any], cluster: dict[str, Any]) -> Path:
    """A kubeconfig with one context pointing at ``server``."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "replay", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "tester", "user": user}],
        "contexts": [
            {
                "name": "replay",
                "context": {"cluster": "replay", "user": "tester", "namespace": "ns"},
            }
        ],
        "current-context": "replay",
    }
    path.write_text(json.dumps(doc))
    return path


@dataclass(frozen=True)
class TlsFiles:
    """A CA, a serving certificate for 127.0.0.1 and a client certificate, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self) -> ssl.SSLContext:
        """A server that, like kube-apiserver, asks for a client certificate from its CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        context.load_cert_chain(self.server_cert, self.server_key)
        context.verify_mode = ssl.CERT_REQUIRED
        return context


def tls_files(directory: Path) -> TlsFiles:
    """Fresh keys and certificates under ``directory``."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("replay-ca"))
        .issuer_name(name("replay-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    write("ca", ca_key, ca)
    for stem, extensions in (
        (
            "server",
            [
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
            ],
        ),
        ("client", [x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])]),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(f"replay-{stem}"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        write(stem, key, builder.sign(ca_key, hashes.SHA256()))
    return TlsFiles(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
