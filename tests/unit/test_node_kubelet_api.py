"""The node's kubelet API without a cluster: who may call it (the kubelet's mapping to
nodes/<subresource>, TokenReview and SubjectAccessReview, their caches) and the figures
it serves (/metrics/resource as metrics-server parses it, /stats/summary)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from wasmop.node.kubelet_auth import (
    AuthError,
    KubeletAuth,
    User,
    request_attributes,
    user_from_certificate,
)
from wasmop.node.stats import (
    ContainerUsage,
    NodeUsage,
    RateTracker,
    resource_metrics,
    summary,
)


@pytest.mark.parametrize(
    ("method", "path", "verb", "subresources"),
    [
        ("GET", "/metrics/resource", "get", ("metrics",)),
        ("GET", "/stats/summary", "get", ("stats",)),
        ("GET", "/containerLogs/ns/p/c", "get", ("proxy",)),
        ("GET", "/pods", "get", ("pods", "proxy")),
        ("GET", "/healthz", "get", ("healthz", "proxy")),
        ("POST", "/exec/ns/p/c", "create", ("proxy",)),
        ("GET", "/metricsfoo", "get", ("proxy",)),  # a prefix is not a path segment
    ],
)
def test_requests_map_to_node_subresources_as_the_kubelets_do(
    method: str, path: str, verb: str, subresources: tuple[str, ...]
) -> None:
    attributes = request_attributes(method, path, "wasm-node-1")
    assert (attributes.verb, attributes.subresources) == (verb, subresources)


def test_a_verified_certificate_names_the_user_and_groups() -> None:
    peercert = {
        "subject": (
            (("organizationName", "system:nodes"),),
            (("commonName", "system:node:wasm-node-1"),),
        )
    }
    assert user_from_certificate(peercert) == User("system:node:wasm-node-1", ("system:nodes",))
    assert user_from_certificate(None) is None
    assert user_from_certificate({}) is None


class FakeReviews:
    """Stands in for the API server's answers to TokenReview and SubjectAccessReview
    (the pure decision logic under test is the node's: what it asks and caches)."""

    def __init__(self, tokens: dict[str, str], allowed: set[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.allowed = allowed
        self.calls: list[str] = []

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(body["kind"])
        if body["kind"] == "TokenReview":
            user = self.tokens.get(body["spec"]["token"])
            if user is None:
                return {"status": {"authenticated": False}}
            return {"status": {"authenticated": True, "user": {"username": user}}}
        attributes = body["spec"]["resourceAttributes"]
        assert (attributes["resource"], attributes["name"]) == ("nodes", "n1")
        key = (body["spec"]["user"], attributes["subresource"])
        return {"status": {"allowed": key in self.allowed}}


def test_tokens_and_certificates_are_reviewed_and_answers_cached() -> None:
    reviews = FakeReviews(
        {"good": "system:serviceaccount:ns:reader"},
        {("system:serviceaccount:ns:reader", "metrics"), ("system:metrics-server", "metrics")},
    )
    auth = KubeletAuth("n1", reviews.create)

    async def scenario() -> None:
        user = await auth.check("GET", "/metrics/resource", None, "Bearer good")
        assert user.name == "system:serviceaccount:ns:reader"
        await auth.check("GET", "/metrics/resource", None, "Bearer good")
        assert reviews.calls == ["TokenReview", "SubjectAccessReview"]  # second one cached
        cert = {"subject": ((("commonName", "system:metrics-server"),),)}
        assert (await auth.check("GET", "/metrics/resource", cert, "")).name == (
            "system:metrics-server"
        )
        with pytest.raises(AuthError) as denied:
            await auth.check("GET", "/containerLogs/ns/p/c", None, "Bearer good")
        assert denied.value.status == 403
        assert denied.value.message == (
            "Forbidden (user=system:serviceaccount:ns:reader, verb=get, resource=nodes,"
            " subresource(s)=['proxy'])\n"
        )
        for header in ("", "Basic abc", "Bearer wrong", "Bearer "):
            with pytest.raises(AuthError) as anonymous:
                await auth.check("GET", "/metrics/resource", None, header)
            assert anonymous.value.status == 401

    asyncio.run(scenario())


def usage(pod: str, cpu: float, memory: int, **extra: Any) -> ContainerUsage:
    return ContainerUsage("ns", pod, f"uid-{pod}", "function", cpu, memory, 1000.0, 990.0, **extra)


NODE = NodeUsage("n1", 12.5, 50_000_000, 900.0, memory_capacity_bytes=4 * 2**30)


def test_resource_metrics_have_what_metrics_server_requires() -> None:
    text = resource_metrics(NODE, [usage("a", 0.25, 1_000_000)], now=2000.0)
    lines = {line.rsplit(" ", 2)[0]: line.rsplit(" ", 2)[1:] for line in text.splitlines()}
    labels = 'container="function",namespace="ns",pod="a"'
    assert lines[f"container_cpu_usage_seconds_total{{{labels}}}"] == ["0.250000000", "2000000"]
    assert lines[f"container_memory_working_set_bytes{{{labels}}}"] == ["1000000", "2000000"]
    assert lines[f"container_start_time_seconds{{{labels}}}"][0] == "1000.000000000"
    assert lines['pod_cpu_usage_seconds_total{namespace="ns",pod="a"}'][0] == "0.250000000"
    assert lines["node_cpu_usage_seconds_total"][0] == "12.500000000"
    assert lines["node_memory_working_set_bytes"][0] == "50000000"


def test_summary_reports_cpu_rates_from_the_previous_sample() -> None:
    rates = RateTracker()
    first = summary(NODE, [usage("a", 1.0, 10)], rates, now=2000.0)
    assert "usageNanoCores" not in first["pods"][0]["containers"][0]["cpu"]
    later = NodeUsage("n1", 14.5, 50_000_000, 900.0)
    second = summary(later, [usage("a", 1.5, 10)], rates, now=2002.0)
    container = second["pods"][0]["containers"][0]
    assert container["cpu"]["usageNanoCores"] == 250_000_000
    assert container["cpu"]["usageCoreNanoSeconds"] == 1_500_000_000
    assert container["memory"]["workingSetBytes"] == 10
    assert second["pods"][0]["podRef"] == {"name": "a", "namespace": "ns", "uid": "uid-a"}
    assert second["node"]["cpu"]["usageNanoCores"] == 1_000_000_000
    assert second["node"]["nodeName"] == "n1"


async def test_a_log_follower_that_goes_away_ends_its_stream_quietly(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``kubectl logs -f`` interrupted: the next line finds the connection closed. The
    stream ends there, without an error and a traceback in the node's log."""
    import logging
    from types import SimpleNamespace

    from aiohttp.test_utils import TestClient, TestServer
    from wasmop.node.container_logs import ContainerLog, LogLimits
    from wasmop.node.daemon import kubelet_app
    from wasmop.supervision import TaskSupervisor

    log = ContainerLog(tmp_path / "function", LogLimits())
    log.start_instance(0)
    log.write("stdout", "first\n")
    container = SimpleNamespace(name="function", restart_count=0, reason="", state="running")
    worker = SimpleNamespace(log=log, container=container, namespace="ns", name="pod")
    agent = SimpleNamespace(
        name="n", fault_token="t", workers={}, tasks=TaskSupervisor("test"),
        find_worker=lambda namespace, name: worker,
    )  # fmt: skip
    client = TestClient(TestServer(kubelet_app(agent, None)))  # type: ignore[arg-type]
    await client.start_server()
    try:
        response = await client.get("/containerLogs/ns/pod/function?follow=true")
        assert b"first" in await response.content.readline()
        response.close()  # the follower goes away
        with caplog.at_level(logging.ERROR):
            for i in range(5):  # the node writes on; the stream finds nobody to write to
                log.write("stdout", f"line {i}\n")
                log.flush()
                await asyncio.sleep(0.1)
    finally:
        log.end_instance()
        await client.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
