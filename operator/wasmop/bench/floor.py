"""The load generator's floor: a trivial HTTP endpoint on loopback.

Locust on the same two cores as the cluster adds milliseconds of its own to every
request it times. Sending the same load to an endpoint that does nothing (answers ``ok``
to any path, in its own process, on 127.0.0.1) measures that part alone, so a reader can
tell how much of a latency figure is the harness. The endpoint is aiohttp, like the
gateway, without routing, upstream or logging.

    python -m wasmop.bench.floor [--port 0]      # prints "listening on 127.0.0.1:<port>"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator

from aiohttp import web

HOST = "127.0.0.1"
READY_PREFIX = "listening on "


async def _ok(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def serve(port: int = 0) -> None:
    """Answer every request with 200 ``ok`` until SIGTERM or SIGINT."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"{READY_PREFIX}{HOST}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


@contextlib.contextmanager
def floor_endpoint() -> Iterator[str]:
    """A trivial endpoint in a process of its own for the duration of the block; yields
    its base URL (``http://127.0.0.1:<port>``). The process's first line names its port
    (it binds a free one); if it dies first, that line is empty and this fails."""
    process = subprocess.Popen(
        [sys.executable, "-m", "wasmop.bench.floor"],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith(READY_PREFIX):
            raise RuntimeError(f"the floor endpoint did not start (said {line!r})")
        yield f"http://{line[len(READY_PREFIX) :].strip()}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
