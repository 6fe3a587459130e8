"""The autoscaler's request figures from the gateway: rates per Service, and nothing kept
for a Service the gateway no longer reports (its memory stays bounded under churn)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from wasmop.operator.node_index import NodeIndex
from wasmop.operator.scaling import MetricsCollector


async def test_rates_per_service_and_deleted_services_forgotten() -> None:
    answers: list[dict[str, Any]] = [
        {"services": [{"namespace": "ns", "service": "a", "requests": 10, "inFlight": 1},
                      {"namespace": "ns", "service": "b", "requests": 5, "inFlight": 0}]},
        {"services": [{"namespace": "ns", "service": "a", "requests": 30, "inFlight": 2},
                      {"namespace": "ns", "service": "b", "requests": 5, "inFlight": 0}]},
        {"services": [{"namespace": "ns", "service": "a", "requests": 40, "inFlight": 0}]},
    ]  # fmt: skip

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(answers.pop(0))

    app = web.Application()
    app.add_routes([web.get("/-/stats", stats)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    collector = MetricsCollector(NodeIndex(), f"http://127.0.0.1:{port}")
    try:
        await collector._scrape_gateway()
        assert collector.rps == {}  # one count is no rate yet
        await collector._scrape_gateway()
        assert collector.rps[("ns", "a")] > 0 and collector.rps[("ns", "b")] == 0
        assert collector.in_flight[("ns", "a")] == 2
        await collector._scrape_gateway()
        assert set(collector.rps) == set(collector.in_flight) == {("ns", "a")}
        assert set(collector._counts) == set(collector.rates) == {("ns", "a")}
    finally:
        await collector.close()
        await runner.cleanup()
