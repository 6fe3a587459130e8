"""The gateway's endpoint bookkeeping: EndpointSlices in, a balancing choice out."""

from __future__ import annotations

from typing import Any

from wasmop.gateway.endpoints import EndpointTable, parse_slice


def endpoint_slice(*addresses: str, ready: bool = True, name: str = "hello-abc") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"kubernetes.io/service-name": "hello"},
        },
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {
                "addresses": [address],
                "conditions": {"ready": ready},
                "targetRef": {"name": f"pod-{address.rsplit('.', 1)[1]}"},
            }
            for address in addresses
        ],
    }


def test_slice_without_port_has_no_endpoints() -> None:
    assert parse_slice({"ports": [], "endpoints": [{"addresses": ["10.0.0.1"]}]}) == []


def test_terminating_endpoints_are_not_ready() -> None:
    obj = endpoint_slice("10.0.0.1")
    obj["endpoints"][0]["conditions"] = {"ready": True, "terminating": True}
    [endpoint] = parse_slice(obj)
    assert not endpoint.ready


def test_least_in_flight_wins_and_ties_alternate() -> None:
    table = EndpointTable()
    table.apply_slice("ADDED", endpoint_slice("10.0.0.1", "10.0.0.2"))
    entry = table.lookup("ns", "hello")
    assert entry is not None
    first, second = entry.choose(), entry.choose()
    assert first is not None and second is not None
    assert {first.address, second.address} == {"10.0.0.1", "10.0.0.2"}
    first.in_flight += 1
    assert entry.choose() is second
    assert entry.choose(exclude={second.address}) is first


def test_a_request_in_flight_across_an_update_releases_its_own_count() -> None:
    """The object a request incremented is the one the table keeps, so the count returns
    to zero instead of sticking at one after every EndpointSlice change under load."""
    table = EndpointTable()
    table.apply_slice("ADDED", endpoint_slice("10.0.0.1"))
    entry = table.lookup("ns", "hello")
    assert entry is not None
    serving = entry.choose()
    assert serving is not None
    serving.in_flight += 1
    table.apply_slice("MODIFIED", endpoint_slice("10.0.0.1", "10.0.0.2"))
    serving.in_flight -= 1
    assert [e.in_flight for e in entry.ready()] == [0, 0]


def test_not_ready_endpoints_are_never_chosen() -> None:
    table = EndpointTable()
    table.apply_slice("ADDED", endpoint_slice("10.0.0.1", ready=False))
    entry = table.lookup("ns", "hello")
    assert entry is not None and entry.choose() is None
    table.apply_slice("DELETED", endpoint_slice())
    assert entry.ready() == []
