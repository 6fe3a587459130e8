"""The node agent's probes cannot be turned on the host, and its failed Event posts are
not hidden (issue 11)."""

from __future__ import annotations

import logging
import socket

import pytest
from aiohttp import web
from wasmop.kube import Kube
from wasmop.kube.client import KubeConfig
from wasmop.kube.events import EventRecorder
from wasmop.node.prober import HttpProber, probe_url


def test_a_probe_path_cannot_change_the_host_it_goes_to() -> None:
    for path in ("@127.0.0.1:2379/health", "//127.0.0.1:2379/x", "?x=1", "/ok#frag", ""):
        url = probe_url("10.244.1.5", 8080, path)
        assert (url.host, url.port, url.scheme) == ("10.244.1.5", 8080, "http"), path
        assert url.path.startswith("/")
        assert not url.user and not url.fragment
    assert str(probe_url("10.244.1.5", 8080, "/healthz?deep=1")) == (
        "http://10.244.1.5:8080/healthz?deep=1"
    )


async def test_probes_do_not_follow_redirects() -> None:
    hits: list[str] = []

    async def handler(request: web.BaseRequest) -> web.Response:
        hits.append(request.path)
        if request.path == "/healthz":
            raise web.HTTPFound(f"http://127.0.0.1:{port}/elsewhere")
        return web.Response(text="reached")

    runner = web.ServerRunner(web.Server(handler))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    prober = HttpProber()
    try:
        ok, detail = await prober.probe(probe_url("127.0.0.1", port, "/healthz"), 2.0)
    finally:
        await prober.close()
        await runner.cleanup()
    assert ok, detail  # 3xx is success, as a kubelet judges it
    assert hits == ["/healthz"]  # and the redirect was not followed


async def test_a_failed_event_post_is_logged_as_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with Kube(KubeConfig(server=f"http://127.0.0.1:{port}")) as kube:
        recorder = EventRecorder(kube, "wasm-node", "node-1")
        pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}}
        with caplog.at_level(logging.WARNING, logger="wasmop.kube.events"):
            recorder.record(pod, "Failed", "boom", warning=True)
            await recorder.drain()
    assert any(
        r.levelno == logging.WARNING and "Failed" in r.getMessage() for r in caplog.records
    ), caplog.text
