"""The gateway's side of scale to zero, as pure bookkeeping: which Services belong to a
WasmFunction, the bounds on held requests, one activation per idle period, and the
counters the autoscaler reads (arrivals, busy seconds, idleness)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from wasmop.gateway.activator import (
    FAILED,
    FROM_ZERO,
    QUEUE_FULL,
    ActivationRefused,
    ActivationSettings,
    Activator,
    scale_from_zero,
)
from wasmop.gateway.endpoints import EndpointTable, owning_function
from wasmop.gateway.server import Gateway, GatewaySettings, ServiceSeries
from wasmop.kube import ApiError, WatchEvent
from wasmop.wellknown import API_VERSION, FUNCTION_KIND


def service(name: str = "hello", owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns"}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {"metadata": meta}


FUNCTION_OWNER = {
    "apiVersion": API_VERSION,
    "kind": FUNCTION_KIND,
    "name": "hello",
    "controller": True,
}


def test_only_a_service_a_wasmfunction_controls_is_activatable() -> None:
    assert owning_function(service(owner=FUNCTION_OWNER)) == "hello"
    assert owning_function(service()) is None
    assert owning_function(service(owner={**FUNCTION_OWNER, "controller": False})) is None
    assert owning_function(service(owner={**FUNCTION_OWNER, "apiVersion": "other.io/v1"})) is None
    table = EndpointTable()
    table.apply_service("ADDED", service(owner=FUNCTION_OWNER))
    table.apply_service("ADDED", service("plain"))
    assert table.functions == {("ns", "hello"): "hello"}
    table.apply_service("DELETED", service(owner=FUNCTION_OWNER))
    assert table.functions == {}


class Scaler:
    """Records activations; answers with ``outcome`` or raises ``error``."""

    def __init__(self, outcome: str = "scaled", error: Exception | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.outcome, self.error = outcome, error

    async def __call__(self, namespace: str, function: str) -> str:
        self.calls.append((namespace, function))
        if self.error is not None:
            raise self.error
        return self.outcome


async def nothing() -> None:
    return None


def test_a_burst_of_held_requests_activates_once_and_is_bounded() -> None:
    async def scenario() -> None:
        scaler = Scaler()
        outcomes: list[str] = []
        activator = Activator(
            scaler,
            ActivationSettings(max_held_per_function=3, max_held=4, repatch_after_s=60),
            nothing,
            lambda ns, svc, outcome: outcomes.append(outcome),
        )
        key = ("ns", "hello")
        with (
            activator.holding(key, "hello"),
            activator.holding(key, "hello"),
            activator.holding(key, "hello"),
        ):
            with pytest.raises(ActivationRefused) as full, activator.holding(key, "hello"):
                pass
            assert full.value.reason == QUEUE_FULL
            with activator.holding(("ns", "other"), "other"):
                # Four held in all: the gateway-wide bound refuses a fifth.
                with pytest.raises(ActivationRefused), activator.holding(("ns", "x"), "x"):
                    pass
                await asyncio.sleep(0.01)
        assert scaler.calls == [("ns", "hello"), ("ns", "other")]
        assert outcomes == ["scaled", "scaled"]
        assert activator.held == 0 and activator.activations == {}

    asyncio.run(scenario())


def test_an_activation_repeats_while_requests_wait_and_stops_with_the_last() -> None:
    async def scenario() -> None:
        scaler = Scaler(outcome="running")
        activator = Activator(scaler, ActivationSettings(repatch_after_s=0.02), nothing)
        with activator.holding(("ns", "hello"), "hello") as activation:
            await asyncio.sleep(0.1)
            assert activation.outcome == "running"
        calls = len(scaler.calls)
        assert calls >= 3
        await asyncio.sleep(0.05)
        assert len(scaler.calls) == calls  # nobody waits: no more patches

    asyncio.run(scenario())


def test_an_activation_patches_again_less_and_less_often() -> None:
    """Repatches are for a function sent back to zero across the request; while its
    Pod is merely slow to come (a loaded API server) each one is one more request to
    that server: after 2 s, then 4, 8 (here 20, 40, 80 ms)."""

    async def scenario() -> None:
        scaler = Scaler(outcome="running")
        activator = Activator(scaler, ActivationSettings(repatch_after_s=0.02), nothing)
        with activator.holding(("ns", "hello"), "hello"):
            await asyncio.sleep(0.25)  # patches at 0, 20, 60, 140 ms (every 20: 13)
        assert 3 <= len(scaler.calls) <= 5, scaler.calls

    asyncio.run(scenario())


def test_a_function_that_cannot_be_activated_fails_its_held_requests_at_once() -> None:
    async def scenario() -> None:
        woken = asyncio.Event()

        async def notify() -> None:
            woken.set()

        scaler = Scaler(error=ActivationRefused(FAILED, "no WasmFunction ns/hello"))
        activator = Activator(scaler, ActivationSettings(), notify)
        with activator.holding(("ns", "hello"), "hello") as activation:
            await asyncio.wait_for(woken.wait(), 1)
            assert activation.failure is not None and activation.failure.reason == FAILED

    asyncio.run(scenario())


def series() -> ServiceSeries:
    registry = CollectorRegistry()
    return ServiceSeries(
        in_flight=Gauge("f", "f", registry=registry),
        latency=Histogram("l", "l", registry=registry),
        retries=Counter("r", "r", registry=registry),
        cold_starts=Counter("c", "c", registry=registry),
        responses=Counter("x", "x", ["code"], registry=registry),
        labels={},
    )


def test_busy_seconds_integrate_requests_in_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("wasmop.gateway.server.time.monotonic", lambda: clock[0])
    s = series()
    s.arrived()  # t=100: one in
    clock[0] = 101.0
    s.arrived()  # t=101: two in
    clock[0] = 102.0
    assert s.busy_seconds(102.0) == pytest.approx(3.0)  # 1 s x 1 + 1 s x 2
    assert s.idle_seconds(102.0) == 0.0  # requests in flight: not idle
    s.left()
    s.left()
    assert s.requests == 2 and s.active == 0
    assert s.busy_seconds(110.0) == pytest.approx(3.0)
    assert s.idle_seconds(110.0) == pytest.approx(8.0)


def slice_of(service_name: str, *addresses: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{service_name}-abc",
            "namespace": "ns",
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "ports": [{"port": 8080}],
        "endpoints": [{"addresses": [a], "targetRef": {"name": "pod"}} for a in addresses],
    }


def test_a_held_request_wakes_for_its_own_service_alone() -> None:
    """Twenty-five functions woken at once: each held request looks at its table entry
    when its own Service's EndpointSlice changes, not at every other slice change too
    (one condition for all made it 50 held requests times every slice event)."""

    async def scenario() -> None:
        gateway = Gateway(kube=None, settings=GatewaySettings(port=0))  # type: ignore[arg-type]
        looks: list[tuple[str, str]] = []
        lookup = gateway.table.lookup

        def counted(namespace: str, service_name: str) -> Any:
            looks.append((namespace, service_name))
            return lookup(namespace, service_name)

        gateway.table.lookup = counted  # type: ignore[method-assign]
        waiting = asyncio.create_task(
            gateway._wait_for_endpoint("ns", "hello", asyncio.get_running_loop().time() + 5)
        )
        await asyncio.sleep(0.01)
        for i in range(20):
            await gateway._slice_changed(WatchEvent("MODIFIED", slice_of("other", f"10.244.1.{i}")))
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert looks == [("ns", "hello")]  # looked once, then slept through the others
        await gateway._slice_changed(WatchEvent("ADDED", slice_of("hello", "10.244.1.99")))
        assert await asyncio.wait_for(waiting, 1) is True

    asyncio.run(scenario())


class PatchRecorder:
    """Answers the activation's two scale patches: each path's error, or success."""

    def __init__(self, errors: dict[str, ApiError]) -> None:
        self.errors = errors
        self.patched: list[tuple[str, Any]] = []

    async def patch(self, path: str, body: Any, **_: Any) -> dict[str, Any]:
        self.patched.append((path, body))
        for suffix, error in self.errors.items():
            if path.startswith(suffix):
                raise error
        return {}


FUNCTION_SCALE = f"/apis/{API_VERSION}/namespaces/ns/wasmfunctions/hello/scale"
DEPLOYMENT_SCALE = "/apis/apps/v1/namespaces/ns/deployments/hello/scale"


def test_an_activation_scales_the_functions_deployment_from_zero_beside_the_function() -> None:
    """Both scale subresources get the same from-zero patch: the Deployment's Pod need
    not wait for the operator's apply."""
    kube = PatchRecorder({})
    assert asyncio.run(scale_from_zero(kube, "ns", "hello")) == "scaled"  # type: ignore[arg-type]
    assert sorted(path for path, _ in kube.patched) == [DEPLOYMENT_SCALE, FUNCTION_SCALE]
    assert {json.dumps(body) for _, body in kube.patched} == {json.dumps(list(FROM_ZERO))}


@pytest.mark.parametrize("status", [403, 404, 409, 500])
def test_the_deployments_patch_failing_leaves_the_outcome_to_the_functions(status: int) -> None:
    kube = PatchRecorder({DEPLOYMENT_SCALE: ApiError(status, "Nope", "refused")})
    assert asyncio.run(scale_from_zero(kube, "ns", "hello")) == "scaled"  # type: ignore[arg-type]
    kube = PatchRecorder({FUNCTION_SCALE: ApiError(422, "Invalid", "test failed")})
    assert asyncio.run(scale_from_zero(kube, "ns", "hello")) == "running"  # type: ignore[arg-type]
    kube = PatchRecorder({FUNCTION_SCALE: ApiError(404, "NotFound", "gone")})
    with pytest.raises(ActivationRefused):
        asyncio.run(scale_from_zero(kube, "ns", "hello"))  # type: ignore[arg-type]
