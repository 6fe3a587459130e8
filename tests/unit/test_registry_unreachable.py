"""A registry that cannot be reached is one generic RegistryUnavailable in status, however
the connection failed: otherwise a tenant naming ``host:port`` images would read from
its function's (or Pod's) status which ports answer, as with module URLs."""

from __future__ import annotations

import asyncio
import socket

from wasmop.oci import ImageReference, RegistryError
from wasmop.oci.client import RegistryClient


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def failure(port: int, timeout_s: float = 5.0) -> RegistryError:
    async with RegistryClient(timeout_s=timeout_s) as client:
        try:
            await client.resolve(ImageReference.parse(f"127.0.0.1:{port}/wasm/a:1"))
        except RegistryError as exc:
            return exc
    raise AssertionError("resolved an image from nowhere")


async def answering(status: int) -> tuple[int, asyncio.Server]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server.sockets[0].getsockname()[1], server


def test_refused_silent_and_failing_registries_read_the_same_in_status() -> None:
    async def main() -> list[tuple[int, RegistryError]]:
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts, never answers: the request times out
        port_503, server = await answering(503)
        try:
            return [
                (port, await failure(port, timeout))
                for port, timeout in (
                    (closed_port(), 5.0),
                    (silent.getsockname()[1], 0.5),
                    (port_503, 5.0),
                )
            ]
        finally:
            silent.close()
            server.close()

    failures = asyncio.run(main())
    shown = set()
    for port, error in failures:
        assert error.reason == "RegistryUnavailable" and error.transient
        shown.add(error.message.replace(str(port), "PORT"))
        assert error.detail  # the cause, for the administrator's log
    assert len(shown) == 1, shown
    text = shown.pop()
    for leak in ("refused", "Errno", "Timeout", "ClientConnector", "503", "Cannot connect"):
        assert leak not in text


def test_a_refused_registry_name_does_not_say_what_it_resolved_to() -> None:
    """A registry host that resolves to a refused address is RegistryNotAllowed; the
    status must not say the address (a tenant would read the platform's internal DNS
    from it), the log does."""
    from wasmop.oci.policy import RegistryPolicy

    async def main() -> RegistryError:
        async with RegistryClient(check=RegistryPolicy().check) as client:
            try:
                await client.resolve(ImageReference.parse(f"localhost:{closed_port()}/wasm/a:1"))
            except RegistryError as exc:
                return exc
        raise AssertionError("reached a refused address")

    error = asyncio.run(main())
    assert error.reason == "RegistryNotAllowed" and not error.transient
    assert "127.0.0.1" not in error.message and "::1" not in error.message
    assert "127.0.0.1" in error.detail or "::1" in error.detail
