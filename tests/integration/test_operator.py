"""The operator end to end: WasmFunctions become Ready, roll out, scale, stay valid,
clean up and survive an operator restart, all on the real embedded cluster."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from support import (
    OPERATOR_NAMESPACE,
    gateway_get,
    kill_operator,
    module_configmap,
    operator_log,
    operator_pod,
    wait_for,
)
from wasmop.bench.process_sampler import gateway_pid, operator_pid
from wasmop.cluster import manager
from wasmop.cluster.layout import repo_root
from wasmop.cluster.settings import ClusterSettings
from wasmop.operator.owned_objects import ANNOTATION_VERSION
from wasmop.wellknown import API_VERSION, FUNCTION_KIND, FUNCTION_LABEL, GROUP, VERSION
from wasmop.wellknown import FUNCTION_PLURAL as PLURAL

pytestmark = pytest.mark.integration

FUNCTIONS = repo_root() / "functions" / "build"
MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def wasm_function(name: str, configmap: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": FUNCTION_KIND,
        "metadata": {"name": name},
        "spec": {"module": {"configMapRef": {"name": configmap}}, **spec},
    }


class Functions:
    """Thin helper over the CustomObjectsApi for one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )

    def get(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def wait_phase(
        self, name: str, phase: str, timeout: float = 60.0, **expect: Any
    ) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(name)
            if status.get("phase") != phase:
                return None
            if any(status.get(k) != v for k, v in expect.items()):
                return None
            return status

        return wait_for(reached, timeout=timeout, what=f"{name} {phase} {expect}")


def gateway(path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    port = ClusterSettings().gateway_port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# A scaling metric: average CPU at half the Pods' request.
CPU_AT_HALF_REQUEST = {
    "type": "Resource",
    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
}


@contextlib.contextmanager
def fib_load(namespace: str, seconds: float) -> Iterator[None]:
    """Two clients calling fib through the gateway while the block runs (at most
    ``seconds``: load loops are bounded in time)."""
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            gateway(f"/{namespace}/fib/?n=27")

    workers = [threading.Thread(target=load) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def tracked_functions() -> float:
    """How many functions the operator keeps state for (its phase gauge, summed)."""
    port = ClusterSettings().operator_metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    prefix = "wasmop_operator_functions{"
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def events_for(core: client.CoreV1Api, namespace: str, name: str) -> list[client.CoreV1Event]:
    return core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind=WasmFunction,involvedObject.name={name}"
    ).items


@pytest.fixture
def fns(api: client.ApiClient, namespace: str) -> Functions:
    core = client.CoreV1Api(api)
    for name in ("hello", "echo", "sha256", "fib", "badimport"):
        module_configmap(core, namespace, f"wasm-{name}", FUNCTIONS / f"{name}.wasm")
    return Functions(api, namespace)


def test_function_becomes_ready_and_serves(fns: Functions, api: client.ApiClient) -> None:
    fns.create(wasm_function("hello", "wasm-hello", replicas=2))
    status = fns.wait_phase("hello", "Ready", readyReplicas=2)
    assert status["readyText"] == "2/2"
    assert status["url"].endswith(f"/{fns.namespace}/hello")
    timings = status["timings"]
    for key in (
        "acceptedAt",
        "validatedAt",
        "deploymentCreatedAt",
        "firstReplicaReadyAt",
        "allReadyAt",
    ):
        assert MILLIS.match(timings[key]), (key, timings[key])
    assert timings["acceptedAt"] <= timings["validatedAt"] <= timings["deploymentCreatedAt"]
    assert timings["deploymentCreatedAt"] <= timings["firstReplicaReadyAt"] <= timings["allReadyAt"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Validated"]["status"] == "True"
    assert conditions["Available"]["status"] == "True"
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])
    # Ready counts ready Pods (the operator's Pod watch); the gateway routes by the
    # EndpointSlices the controller manager writes after them, which can trail by more
    # than the gateway's 5 s wait while that controller's watches recover from an API
    # server restart (the node tests before this one restart it).
    wait_for(
        lambda: gateway(f"/{fns.namespace}/hello/") == (200, b"Hello, world!\n"),
        timeout=30,
        what="hello routable through the gateway",
    )
    # The embedded cluster runs the operator with --service-mode headless (no kube-proxy).
    service = client.CoreV1Api(api).read_namespaced_service("hello", fns.namespace)
    assert service.spec.cluster_ip == "None"
    # What `kubectl get wf` prints (the printer columns over this status).
    listing = subprocess.run(
        [sys.executable, "-m", "wasmop", "kubectl", "get", "wf", "hello", "-n", fns.namespace],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    header, row = listing.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "PHASE", "READY"]
    assert row.split()[:3] == ["hello", "Ready", "2/2"]


def test_version_change_rolls_out_without_failures_and_rolls_back(
    fns: Functions, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    fns.create(
        wasm_function("hello", "wasm-hello", replicas=2, version="1.0.0", revisionHistoryLimit=2)
    )
    fns.wait_phase("hello", "Ready", readyReplicas=2)
    failures: list[tuple[int, bytes]] = []
    sent = 0
    stop = threading.Event()

    def steady_load() -> None:
        nonlocal sent
        while not stop.is_set() and sent < 5000:  # bounded in count and time
            status, body = gateway(f"/{fns.namespace}/hello/")
            sent += 1
            if status != 200:
                failures.append((status, body))
            time.sleep(0.02)

    loader = threading.Thread(target=steady_load)
    loader.start()
    try:
        wait_for(lambda: sent >= 10, what="steady load before the rollout")
        fns.patch("hello", {"version": "2.0.0"})
        fns.wait_phase(
            "hello", "Ready", currentRevision=2, updatedReplicas=2, readyReplicas=2, replicas=2
        )
        fns.patch("hello", {"version": "1.0.0"})
        status = fns.wait_phase(
            "hello", "Ready", currentRevision=1, updatedReplicas=2, readyReplicas=2, replicas=2
        )
        rolled_back_at = sent
        wait_for(lambda: sent >= rolled_back_at + 10, what="steady load after the rollback")
    finally:
        stop.set()
        loader.join()
    assert failures == [], f"{len(failures)} of {sent} requests failed: {failures[:3]}"
    assert [r["version"] for r in status["revisions"]] == ["2.0.0", "1.0.0"]
    assert any(e.reason == "RolledBack" for e in events_for(core, fns.namespace, "hello"))

    # New modules: ConfigMaps of revisions beyond the history limit are removed.
    fns.patch("hello", {"module": {"configMapRef": {"name": "wasm-echo"}}, "version": "3.0.0"})
    fns.wait_phase("hello", "Ready", currentRevision=3, updatedReplicas=2, readyReplicas=2)
    fns.patch("hello", {"module": {"configMapRef": {"name": "wasm-sha256"}}, "version": "4.0.0"})
    status = fns.wait_phase("hello", "Ready", currentRevision=4, updatedReplicas=2, readyReplicas=2)
    kept = {r["configMap"] for r in status["revisions"]}
    assert len(status["revisions"]) == 2

    def module_configmaps() -> set[str]:
        """The module ConfigMaps left after a resync (it deletes shared ones no revision
        names, once past their grace)."""
        resync()
        items = core.list_namespaced_config_map(
            fns.namespace, label_selector="app.kubernetes.io/component=module"
        ).items
        return {cm.metadata.name for cm in items}

    wait_for(lambda: module_configmaps() == kept, timeout=60, interval=2,
             what=f"only {kept} left")  # fmt: skip


def test_no_request_fails_through_rollouts_scale_ins_and_a_refused_rollout(
    fns: Functions, api: client.ApiClient
) -> None:
    """Steady concurrent load on two functions (issue 12): a rollout, a scale-out and a
    scale-in, and a rollout to a module the operator refuses. Pods that go away drain
    (endpoint terminating, preStop sleep, in-flight requests finish), the gateway retries
    what a Pod going away cut off, and a freed address is not reused at once: no request
    fails and none is answered by the wrong function."""
    core = client.CoreV1Api(api)
    fns.create(wasm_function("hello", "wasm-hello", replicas=2, version="1.0.0"))
    fns.create(wasm_function("other", "wasm-echo", replicas=2))
    fns.wait_phase("hello", "Ready", readyReplicas=2)
    fns.wait_phase("other", "Ready", readyReplicas=2)
    wait_for(lambda: gateway(f"/{fns.namespace}/other/")[0] == 200, what="other routable")
    hello_body = b"Hello, world!\n"
    failures: list[tuple[str, int, bytes]] = []
    sent = [0]
    stop = threading.Event()

    def steady_load(function: str) -> None:
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline and sent[0] < 40_000:
            status, body = gateway(f"/{fns.namespace}/{function}/")
            sent[0] += 1
            misrouted = (body == hello_body) != (function == "hello")
            if status != 200 or misrouted:
                failures.append((function, status, body[:200]))
            time.sleep(0.01)

    def settled(name: str, replicas: int, **expect: Any) -> None:
        fns.wait_phase(
            name, "Ready", timeout=90, readyReplicas=replicas, updatedReplicas=replicas,
            replicas=replicas, **expect,
        )  # fmt: skip
        wait_for(
            lambda: (
                not [
                    p
                    for p in core.list_namespaced_pod(fns.namespace).items
                    if p.metadata.deletion_timestamp
                ]
            ),
            timeout=60,
            what="every Pod that went away gone (drained)",
        )

    loaders = [
        threading.Thread(target=steady_load, args=(f,)) for f in ("hello",) * 3 + ("other",) * 2
    ]
    for loader in loaders:
        loader.start()
    try:
        wait_for(lambda: sent[0] >= 50, what="steady load before the changes")
        fns.patch("hello", {"version": "2.0.0"})
        settled("hello", 2, currentRevision=2)
        fns.patch("other", {"replicas": 3})
        fns.patch("hello", {"replicas": 3})
        settled("other", 3)
        settled("hello", 3)
        fns.patch("hello", {"replicas": 2})
        settled("hello", 2)
        fns.patch(
            "hello", {"module": {"configMapRef": {"name": "wasm-badimport"}}, "version": "3.0.0"}
        )
        refused = fns.wait_phase("hello", "Invalid")
        assert refused["currentRevision"] == 2, "stays on the revision it had"
        deployment = client.AppsV1Api(api).read_namespaced_deployment("hello", fns.namespace)
        assert deployment.spec.template.metadata.annotations[ANNOTATION_VERSION] == "2.0.0"
        fns.patch("hello", {"module": {"configMapRef": {"name": "wasm-hello"}}, "version": "2.0.0"})
        settled("hello", 2, currentRevision=2)
        done_at = sent[0]
        wait_for(lambda: sent[0] >= done_at + 50, what="steady load after the changes")
    finally:
        stop.set()
        for loader in loaders:
            loader.join()
    assert failures == [], f"{len(failures)} of {sent[0]} requests failed: {failures[:3]}"


def test_kubectl_scale_changes_replicas(fns: Functions, api: client.ApiClient) -> None:
    fns.create(wasm_function("hello", "wasm-hello", replicas=1))
    fns.wait_phase("hello", "Ready")
    fns.custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, fns.namespace, PLURAL, "hello", {"spec": {"replicas": 3}}
    )
    fns.wait_phase("hello", "Ready", readyReplicas=3, desiredReplicas=3)
    scale = fns.custom.get_namespaced_custom_object_scale(
        GROUP, VERSION, fns.namespace, PLURAL, "hello"
    )
    assert scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == f"{FUNCTION_LABEL}=hello"


def test_a_scale_changes_the_deployment_alone(
    fns: Functions,
    cluster,  # type: ignore[no-untyped-def]
) -> None:
    """A change of replicas (the gateway's activation, the autoscaler, kubectl scale) is
    one apply of the Deployment: no apply of the Service, no HPA, no listing of
    ConfigMaps (each cost a request of a busy API server per function woken)."""
    from wasmop.bench import audit

    fns.create(wasm_function("hello", "wasm-hello", replicas=1))
    fns.wait_phase("hello", "Ready")
    time.sleep(1.0)  # the creation's own reconciles and status writes are done
    tail = audit.AuditTail(cluster.layout.audit_log)
    fns.custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, fns.namespace, PLURAL, "hello", {"spec": {"replicas": 2}}
    )
    fns.wait_phase("hello", "Ready", readyReplicas=2, desiredReplicas=2)
    time.sleep(2.5)  # the audit log is written in batches of a second
    requests = [
        (r.verb, r.resource)
        for r in tail.read(reads=True)
        if r.actor == "operator" and r.namespace == fns.namespace
        and r.resource not in ("wasmfunctions/status", "events")
    ]  # fmt: skip
    writes = [(verb, resource) for verb, resource in requests if verb not in ("get", "list")]
    assert writes == [("patch", "deployments")], requests
    assert not [resource for verb, resource in requests if verb == "list"], requests


def test_autoscaler_scales_out_under_load_and_back_in(
    fns: Functions, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    scaling = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "metrics": [CPU_AT_HALF_REQUEST],
        "behavior": {
            "scaleUp": {"stabilizationWindowSeconds": 0},
            "scaleDown": {"stabilizationWindowSeconds": 5},
        },
    }
    fns.create(
        wasm_function(
            "fib", "wasm-fib", replicas=1, scaling=scaling,
            resources={"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}},
        )
    )  # fmt: skip
    fns.wait_phase("fib", "Ready")
    with fib_load(fns.namespace, seconds=90):
        status = wait_for(
            lambda: (s := fns.status("fib")).get("desiredReplicas", 1) > 1 and s,
            timeout=60, what="a scale-out decision",
        )  # fmt: skip
    assert "cpu" in status["scaling"]["lastScaleReason"]
    assert fns.get("fib")["spec"]["replicas"] > 1
    wait_for(lambda: fns.get("fib")["spec"]["replicas"] == 1, timeout=60, what="scale back in")

    # Events are posted in the background, so the last one may trail the scale-in itself.
    def reasons() -> set[str]:
        return {e.reason for e in events_for(core, fns.namespace, "fib")}

    wait_for(lambda: {"ScaledUp", "ScaledDown"} <= reasons(), timeout=10, what="both events")


def function_pods(core: client.CoreV1Api, namespace: str, name: str) -> list[str]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"{FUNCTION_LABEL}={name}").items
    return [p.metadata.name for p in pods]


def wait_idle(fns: Functions, core: client.CoreV1Api, name: str, timeout: float = 60.0) -> None:
    """Idle: phase Idle, no replica desired, and no Pod left (terminating ones gone)."""
    fns.wait_phase(name, "Idle", timeout=timeout, desiredReplicas=0)
    wait_for(lambda: not function_pods(core, fns.namespace, name), timeout=30, what="no Pods")
    assert core.read_namespaced_service(name, fns.namespace).metadata.name == name


def concurrent_requests(path: str, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    results: list[tuple[int, dict[str, str], bytes]] = [(0, {}, b"")] * n

    def one(i: int) -> None:
        results[i] = gateway_get(path, timeout=30)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_an_idle_function_goes_to_zero_and_every_held_request_is_answered(
    fns: Functions, api: client.ApiClient
) -> None:
    """minReplicas 0: idle for scaleToZeroAfterSeconds, the function goes to zero Pods
    (phase Idle, the Service stays); a burst of requests is held by the gateway while
    it activates the function, and every one is answered."""
    core = client.CoreV1Api(api)
    scaling = {
        "minReplicas": 0,
        "maxReplicas": 2,
        "scaleToZeroAfterSeconds": 2,
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "1000"},
                },
            }
        ],
    }
    fns.create(wasm_function("hello", "wasm-hello", replicas=1, scaling=scaling))
    fns.wait_phase("hello", "Ready")
    wait_idle(fns, core, "hello")
    assert fns.get("hello")["spec"]["replicas"] == 0

    results = concurrent_requests(f"/{fns.namespace}/hello/", 10)
    assert [(status, body) for status, _, body in results] == [(200, b"Hello, world!\n")] * 10
    assert any(headers.get("X-Wasmop-Cold-Start") == "true" for _, headers, _ in results)
    activation = fns.status("hello")["activation"]
    assert activation["activations"] >= 1
    assert MILLIS.match(activation["lastActivationTime"])
    assert MILLIS.match(activation["lastScaleToZeroTime"])

    def reasons() -> set[str]:
        return {e.reason for e in events_for(core, fns.namespace, "hello")}

    wait_for(lambda: {"Activated", "ScaledToZero"} <= reasons(), timeout=10, what="events")
    wait_idle(fns, core, "hello")  # and idle again


def test_kubectl_scale_to_zero_then_a_request_activates_the_function(
    fns: Functions, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    fns.create(wasm_function("hello", "wasm-hello", replicas=1))
    fns.wait_phase("hello", "Ready")
    fns.custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, fns.namespace, PLURAL, "hello", {"spec": {"replicas": 0}}
    )
    wait_idle(fns, core, "hello")
    status, headers, body = gateway_get(f"/{fns.namespace}/hello/")
    assert (status, body) == (200, b"Hello, world!\n")
    assert headers.get("X-Wasmop-Cold-Start") == "true"
    assert "hold;dur=" in headers["Server-Timing"]
    assert fns.get("hello")["spec"]["replicas"] == 1  # the gateway's patch, kept


@contextlib.contextmanager
def operator_stopped(apps: client.AppsV1Api, core: client.CoreV1Api) -> Iterator[None]:
    """The operator's Deployment at 0 replicas while inside (no operator Pod left), back
    at 1 and ready afterwards."""

    def scale(replicas: int) -> None:
        apps.patch_namespaced_deployment_scale(
            "wasmop-operator", OPERATOR_NAMESPACE, {"spec": {"replicas": replicas}}
        )

    scale(0)
    try:
        wait_for(
            lambda: not core.list_namespaced_pod(
                OPERATOR_NAMESPACE, label_selector="app.kubernetes.io/component=operator"
            ).items,
            timeout=90, what="no operator Pod",
        )  # fmt: skip
        yield
    finally:
        scale(1)
        operator_pod(core)


def test_the_gateway_scales_an_idle_functions_deployment_without_the_operator(
    fns: Functions, api: client.ApiClient
) -> None:
    """The gateway's activation patches the Deployment's scale beside the function's, so
    the first Pod does not wait for the operator: with the operator stopped, a request
    for an idle function is answered. The operator, back, agrees with the activation (1
    replica); it restores 1 over a Deployment taken back to 0 meanwhile (an idle
    scale-down's apply that crossed the activation), and still scales the function to
    zero afterwards over the gateway's write of the replicas."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    fns.create(wasm_function("hello", "wasm-hello", replicas=1))
    fns.wait_phase("hello", "Ready")
    fns.custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, fns.namespace, PLURAL, "hello", {"spec": {"replicas": 0}}
    )
    wait_idle(fns, core, "hello")

    def deployment_replicas() -> int:
        return apps.read_namespaced_deployment("hello", fns.namespace).spec.replicas or 0

    with operator_stopped(apps, core):
        status, headers, body = gateway_get(f"/{fns.namespace}/hello/", timeout=60)
        assert (status, body) == (200, b"Hello, world!\n"), headers
        assert headers.get("X-Wasmop-Cold-Start") == "true"
        assert deployment_replicas() == 1
        assert fns.get("hello")["spec"]["replicas"] == 1
        # The crossing scale-down lands after the activation: the Deployment back at 0.
        apps.patch_namespaced_deployment_scale("hello", fns.namespace, {"spec": {"replicas": 0}})
        wait_for(lambda: not function_pods(core, fns.namespace, "hello"), timeout=60,
                 what="no Pods")  # fmt: skip
    wait_for(lambda: deployment_replicas() == 1, timeout=60, what="the operator's 1 replica")
    fns.wait_phase("hello", "Ready")
    status, _, body = gateway_get(f"/{fns.namespace}/hello/", timeout=30)
    assert (status, body) == (200, b"Hello, world!\n")

    fns.custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, fns.namespace, PLURAL, "hello", {"spec": {"replicas": 0}}
    )
    wait_idle(fns, core, "hello")
    assert deployment_replicas() == 0


def test_scale_to_zero_after_an_activation_is_one_apply_of_the_deployment(
    fns: Functions, api: client.ApiClient, cluster
) -> None:  # type: ignore[no-untyped-def]
    """The gateway's activation writes the Deployment's replicas (a conflict for the
    operator's server-side apply): the operator, which has seen the Deployment controlled
    by the function, takes them back with one forced apply, not a refused apply, a get
    and a forced one."""
    from wasmop.bench import audit

    core = client.CoreV1Api(api)
    fns.create(wasm_function("hello", "wasm-hello", replicas=1))
    fns.wait_phase("hello", "Ready")

    def to_zero() -> None:
        fns.custom.patch_namespaced_custom_object_scale(
            GROUP, VERSION, fns.namespace, PLURAL, "hello", {"spec": {"replicas": 0}}
        )
        wait_idle(fns, core, "hello")

    to_zero()
    status, _, body = gateway_get(f"/{fns.namespace}/hello/", timeout=30)
    assert (status, body) == (200, b"Hello, world!\n")
    fns.wait_phase("hello", "Ready", readyReplicas=1)
    time.sleep(1.0)  # the activation's own reconcile is done
    tail = audit.AuditTail(cluster.layout.audit_log)
    to_zero()
    time.sleep(2.5)  # the audit log is written in batches of a second
    requests = [
        (r.verb, r.resource)
        for r in tail.read(reads=True)
        if r.actor == "operator" and r.namespace == fns.namespace
        and r.resource == "deployments"
    ]  # fmt: skip
    assert requests == [("patch", "deployments")], requests


def test_a_request_held_past_the_bound_gets_503_with_its_reason(
    fns: Functions, api: client.ApiClient
) -> None:
    """A function whose Pod can never run (no node matches its placement): the held
    request is answered after the gateway's activation timeout (15 s), not lost."""
    core = client.CoreV1Api(api)
    fns.create(
        wasm_function(
            "hello", "wasm-hello", replicas=0,
            placement={"nodeSelector": {"wasmop.test/nowhere": "true"}},
        )
    )  # fmt: skip
    wait_idle(fns, core, "hello")
    started = time.monotonic()
    status, headers, body = gateway_get(f"/{fns.namespace}/hello/", timeout=60)
    waited = time.monotonic() - started
    assert status == 503, body
    assert headers["X-Wasmop-Reason"] == "ActivationTimeout"
    assert b"no ready replica within 15 s" in body
    assert 14 < waited < 30
    assert fns.get("hello")["spec"]["replicas"] == 1  # it was activated; the Pod is Pending


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (
            {"module": {"configMapRef": {"name": "a"}, "url": "https://example.invalid/m.wasm"}},
            "spec.module",
        ),
        (
            {
                "module": {"configMapRef": {"name": "a"}},
                "scaling": {"minReplicas": 3, "maxReplicas": 2},
            },
            "spec.scaling",
        ),
        ({"module": {"configMapRef": {"name": "a"}}, "replicas": -1}, "spec.replicas"),
        (
            {
                "module": {"configMapRef": {"name": "a"}},
                "scaling": {"engine": "hpa", "minReplicas": 0, "maxReplicas": 2},
            },
            "spec.scaling.minReplicas",
        ),
        (
            {
                "module": {"configMapRef": {"name": "a"}},
                "scaling": {"maxReplicas": 2, "predictive": {"model": "SeasonalNaive"}},
            },
            "spec.scaling.predictive.seasonSeconds",
        ),
    ],
)
def test_schema_and_cel_reject_bad_specs(fns: Functions, spec: dict[str, Any], field: str) -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": FUNCTION_KIND,
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    with pytest.raises(ApiException) as rejected:
        fns.create(body)
    assert rejected.value.status == 422
    assert field in rejected.value.body


@pytest.mark.parametrize(
    ("name", "spec", "reason"),
    [
        (
            "forbidden-env",
            {"capabilities": {"env": [{"name": "AWS_SECRET", "value": "x"}]}},
            "CapabilityNotAllowed",
        ),
        ("too-slow", {"limits": {"timeoutMilliseconds": 120000}}, "LimitAboveMaximum"),
        (
            "bad-import",
            {"module": {"configMapRef": {"name": "wasm-badimport"}}},
            "ModuleIncompatible",
        ),
    ],
)
def test_operator_marks_invalid_and_keeps_serving_others(
    fns: Functions, api: client.ApiClient, name: str, spec: dict[str, Any], reason: str
) -> None:
    core = client.CoreV1Api(api)
    fns.create(
        {
            **wasm_function(name, "wasm-hello"),
            "spec": {**wasm_function(name, "wasm-hello")["spec"], **spec},
        }
    )
    fns.create(wasm_function("fine", "wasm-hello"))
    status = fns.wait_phase(name, "Invalid")
    validated = next(c for c in status["conditions"] if c["type"] == "Validated")
    assert validated["status"] == "False" and validated["reason"] == reason
    assert validated["message"]
    wait_for(
        lambda: any(
            e.reason == "Invalid" and e.type == "Warning"
            for e in events_for(core, fns.namespace, name)
        ),
        what="a Warning event",
    )
    fns.wait_phase("fine", "Ready")
    assert (
        not client.AppsV1Api(api)
        .list_namespaced_deployment(fns.namespace, label_selector=f"{FUNCTION_LABEL}={name}")
        .items
    )


def test_functions_carry_no_bookkeeping_of_kopf(fns: Functions) -> None:
    """The handlers are watch-event handlers: kopf writes no progress or diff-base
    annotations and no finalizer on a WasmFunction, autoscaled ones included (each would
    be another write per function). A spec change is still seen and rolled out."""
    scaling = {
        "minReplicas": 1,
        "maxReplicas": 2,
        "metrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                        "averageUtilization": 80}},
            }
        ],
    }  # fmt: skip
    fns.create(wasm_function("hello", "wasm-hello"))
    fns.create(wasm_function("fib", "wasm-fib", scaling=scaling,
                             resources={"requests": {"cpu": "100m"}}))  # fmt: skip
    fns.wait_phase("hello", "Ready")
    fns.wait_phase("fib", "Ready")
    fns.patch("hello", {"version": "2.0.0"})
    fns.wait_phase("hello", "Ready", currentRevision=2)
    time.sleep(6)  # an autoscaler pass or more
    for name in ("hello", "fib"):
        meta = fns.get(name)["metadata"]
        assert not meta.get("finalizers"), meta.get("finalizers")
        kopf_keys = [k for k in meta.get("annotations") or {} if "kopf" in k or "last-handled" in k]
        assert kopf_keys == [], kopf_keys


def test_a_finalizer_left_by_an_earlier_operator_is_released(fns: Functions) -> None:
    """Earlier operators ran a kopf daemon per autoscaled function, which added kopf's
    finalizer; this one has no handler that would remove it, so it drops it at once and
    the function can still be deleted."""
    body = wasm_function("hello", "wasm-hello")
    body["metadata"]["finalizers"] = ["wasm.bits-dissertation.io/operator"]
    fns.create(body)
    wait_for(lambda: not fns.get("hello")["metadata"].get("finalizers"), what="finalizer gone")
    fns.wait_phase("hello", "Ready")
    fns.delete("hello")

    def deleted() -> bool:
        try:
            fns.get("hello")
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(deleted, what="the function deleted")


def test_the_default_runtimes_status_is_not_rewritten_at_rest(fns: Functions) -> None:
    """The operator writes a WasmRuntime's status when it changes, not again on the event
    of its own write (each write is one more event for every watcher)."""
    fns.create(wasm_function("hello", "wasm-hello"))
    fns.wait_phase("hello", "Ready")
    time.sleep(2)

    def version() -> str:
        runtime = fns.custom.get_cluster_custom_object(GROUP, VERSION, "wasmruntimes", "default")
        return str(runtime["metadata"]["resourceVersion"])

    before = version()
    time.sleep(5)
    assert version() == before


def test_functions_of_one_module_share_its_configmap_until_the_last_is_gone(
    fns: Functions, api: client.ApiClient
) -> None:
    """One module ConfigMap per module and namespace, not one per function; the resync
    deletes it once no function's revision names it (after a grace of 30 s)."""
    core = client.CoreV1Api(api)
    for name in ("one", "two"):
        fns.create(wasm_function(name, "wasm-hello"))
    for name in ("one", "two"):
        fns.wait_phase(name, "Ready")
    shared = {fns.status(n)["revisions"][0]["configMap"] for n in ("one", "two")}
    assert len(shared) == 1
    [name] = shared
    assert name.startswith("wasm-module-")
    core.read_namespaced_config_map(name, fns.namespace)
    fns.delete("one")
    time.sleep(31)  # past the grace
    resync()
    core.read_namespaced_config_map(name, fns.namespace)  # "two" still runs it
    fns.delete("two")  # no finalizer: gone at once, and the resync lists it no more
    resync()

    def gone() -> bool:
        try:
            core.read_namespaced_config_map(name, fns.namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, timeout=10, what="the shared module ConfigMap deleted")


def burst_of_twenty(fns: Functions, cluster: Any, prefix: str) -> tuple[list[str], list[Any]]:
    """Twenty functions of wasm-hello created at once and Ready: their names, and the
    audit log's records (the operator's reads among them) from just before to after."""
    from concurrent.futures import ThreadPoolExecutor

    from wasmop.bench import audit

    tail = audit.AuditTail(cluster.layout.audit_log)
    names = [f"{prefix}-{i:02d}" for i in range(20)]
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(lambda n: fns.create(wasm_function(n, "wasm-hello")), names))
    for name in names:
        fns.wait_phase(name, "Ready", timeout=120)
    time.sleep(2.5)  # the audit log is written in batches of a second
    return names, list(tail.read(reads=True))


def test_a_burst_of_one_module_creates_its_configmap_once(
    fns: Functions,
    cluster,  # type: ignore[no-untyped-def]
) -> None:
    """Twenty functions of one module created at once: one create of the shared module
    ConfigMap, and no read of it back. (Each reconcile of a burst used to create it
    before any had recorded it: refused as conflicts, each followed by a read of the
    whole object to check its bytes.)"""
    names, audited = burst_of_twenty(fns, cluster, "burst")
    [configmap] = {fns.status(n)["revisions"][0]["configMap"] for n in names}
    requests = [
        r
        for r in audited
        if r.actor == "operator" and r.resource == "configmaps" and r.name in ("", configmap)
        and r.namespace == fns.namespace and r.verb in ("create", "get")
    ]  # fmt: skip
    creates = [r for r in requests if r.verb == "create"]
    assert [(r.code, r.verb) for r in creates] == [(201, "create")], requests
    assert not [r for r in requests if r.verb == "get" and r.name == configmap], requests


def test_a_burst_takes_its_module_source_from_the_watch(
    fns: Functions,
    cluster,  # type: ignore[no-untyped-def]
) -> None:
    """Twenty functions of one ConfigMap source created at once: the operator reads the
    source from its watch of the namespace's ConfigMaps, never with a GET of it. (Each
    reconcile used to GET it, sharing a read only while one was in flight, and the
    Deployment applies of a burst went out in clumps behind those reads.)"""
    _, audited = burst_of_twenty(fns, cluster, "src")
    requests = [
        (r.verb, r.name)
        for r in audited
        if r.actor == "operator" and r.resource == "configmaps" and r.namespace == fns.namespace
    ]
    assert ("watch", "") in requests, requests
    assert ("get", "wasm-hello") not in requests, requests


def test_a_changed_module_source_rolls_its_functions_out(
    fns: Functions, api: client.ApiClient
) -> None:
    """Replacing the bytes of a source ConfigMap reconciles the functions that name it:
    a new revision with the new module's digest, Ready (the watch's MODIFIED event;
    before the watch, the change waited for the function's next spec change)."""
    core = client.CoreV1Api(api)
    fns.create(wasm_function("changing", "wasm-hello"))
    fns.wait_phase("changing", "Ready")
    echo = (FUNCTIONS / "echo.wasm").read_bytes()
    core.patch_namespaced_config_map(
        "wasm-hello", fns.namespace,
        {"binaryData": {"module.wasm": base64.b64encode(echo).decode()}},
    )  # fmt: skip

    def rolled_out() -> bool:
        status = fns.status("changing")
        current = [r for r in status.get("revisions", []) if r["revision"] == status.get(
            "currentRevision")]  # fmt: skip
        return (
            status.get("phase") == "Ready"
            and bool(current)
            and current[0]["digest"] == hashlib.sha256(echo).hexdigest()
        )

    wait_for(rolled_out, timeout=60, what="a revision of the new module, Ready")
    assert len(fns.status("changing")["revisions"]) == 2


def resync() -> dict[str, Any]:
    """One resync pass of the operator now (its metrics port's ``POST /-/resync``)."""
    port = ClusterSettings().operator_metrics_port
    request = urllib.request.Request(f"http://127.0.0.1:{port}/-/resync", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=60) as response:
        return dict(json.loads(response.read()))


def test_resync_repairs_a_deleted_service(fns: Functions, api: client.ApiClient) -> None:
    """No event tells the operator its Service is gone (it watches no Services): the
    periodic resync (every 60 s) puts it back."""
    core = client.CoreV1Api(api)
    fns.create(wasm_function("hello", "wasm-hello"))
    fns.wait_phase("hello", "Ready")
    uid = core.read_namespaced_service("hello", fns.namespace).metadata.uid
    core.delete_namespaced_service("hello", fns.namespace)

    def recreated() -> bool:
        try:
            return core.read_namespaced_service("hello", fns.namespace).metadata.uid != uid
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    wait_for(recreated, timeout=90, what="the resync to recreate the Service")
    wait_for(
        lambda: gateway(f"/{fns.namespace}/hello/") == (200, b"Hello, world!\n"),
        what="the function to answer through the recreated Service",
    )


def test_delete_removes_everything_owned(fns: Functions, api: client.ApiClient) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    before = tracked_functions()
    fns.create(wasm_function("hello", "wasm-hello", replicas=2))
    fns.wait_phase("hello", "Ready", readyReplicas=2)
    selector = f"{FUNCTION_LABEL}=hello"
    fns.delete("hello")
    # Functions have no finalizer; the operator lets go of them on the watch's DELETED.
    wait_for(lambda: tracked_functions() <= before, what="the operator to forget the function")

    def gone() -> bool:
        return not (
            apps.list_namespaced_deployment(fns.namespace, label_selector=selector).items
            or core.list_namespaced_service(fns.namespace, label_selector=selector).items
            or core.list_namespaced_pod(fns.namespace, label_selector=selector).items
            or core.list_namespaced_config_map(fns.namespace, label_selector=selector).items
        )

    wait_for(gone, what="Deployment, Service, Pods and ConfigMaps deleted")


def test_operator_killed_mid_deployment_of_20(
    fns: Functions, api: client.ApiClient, cluster
) -> None:  # type: ignore[no-untyped-def]
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    names = [f"f{i:02d}" for i in range(20)]
    for name in names[:10]:
        fns.create(wasm_function(name, "wasm-hello"))
    killed = kill_operator(core, cluster.layout)  # its node restarts it
    for name in names[10:]:
        fns.create(wasm_function(name, "wasm-hello"))
    for name in names:
        fns.wait_phase(name, "Ready", timeout=120, readyReplicas=1)
    # The same Pod: its container restarted (exit 137), as a kubelet restarts it.
    after = core.read_namespaced_pod(killed.metadata.name, killed.metadata.namespace)
    [status] = after.status.container_statuses
    assert status.restart_count == killed.status.container_statuses[0].restart_count + 1
    assert status.last_state.terminated.exit_code == 137
    deployments = apps.list_namespaced_deployment(fns.namespace).items
    assert sorted(d.metadata.name for d in deployments) == names
    assert len(apps.list_namespaced_replica_set(fns.namespace).items) == 20
    assert len(core.list_namespaced_service(fns.namespace).items) == 20
    pods = [
        p
        for p in core.list_namespaced_pod(fns.namespace).items
        if not p.metadata.deletion_timestamp
    ]
    assert len(pods) == 20
    modules = core.list_namespaced_config_map(
        fns.namespace, label_selector="app.kubernetes.io/component=module"
    )
    assert len(modules.items) == 1  # one module: one ConfigMap, shared by the 20


def test_everything_converges_after_an_api_server_restart_mid_watch(
    fns: Functions, api: client.ApiClient, cluster
) -> None:  # type: ignore[no-untyped-def]
    """kube-apiserver stopped and started again under every watch (issue 12): the node
    agents', the gateway's and the operator's watches resume or relist without their
    processes restarting, and what is created afterwards becomes Ready and routable."""
    core = client.CoreV1Api(api)
    fns.create(wasm_function("before", "wasm-hello"))
    fns.wait_phase("before", "Ready", readyReplicas=1)
    settings = manager.load_settings(cluster.layout)
    watchers = [*settings.node_names(), settings.system_node_name]
    pids = {n: c["pid"] for n, c in manager.control(cluster.layout, "status")["components"].items()}
    pods = (operator_pid(), gateway_pid())  # the processes of their Pods
    manager.control(cluster.layout, "restart", name="kube-apiserver")
    fns.create(wasm_function("after", "wasm-hello", replicas=2))
    fns.wait_phase("after", "Ready", timeout=90, readyReplicas=2)
    wait_for(
        lambda: gateway(f"/{fns.namespace}/after/") == (200, b"Hello, world!\n"),
        timeout=30,
        what="the new function routable through the gateway",
    )
    assert gateway(f"/{fns.namespace}/before/") == (200, b"Hello, world!\n")
    # A Pod deleted after the restart is noticed by its node and replaced.
    [pod] = core.list_namespaced_pod(fns.namespace, label_selector=f"{FUNCTION_LABEL}=before").items
    core.delete_namespaced_pod(pod.metadata.name, fns.namespace)
    wait_for(
        lambda: [
            p.metadata.name
            for p in core.list_namespaced_pod(
                fns.namespace, label_selector=f"{FUNCTION_LABEL}=before"
            ).items
            if p.metadata.name != pod.metadata.name
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ],
        timeout=60,
        what="a replacement Pod Ready",
    )
    # The components recovered in place and say they are healthy. (With the API server
    # away longer than the node monitor grace period, the node lifecycle controller marks
    # the Nodes Unknown once it is back; the agents see that and report Ready again.)
    now = manager.control(cluster.layout, "status")["components"]
    assert {n: now[n]["pid"] for n in watchers} == {n: pids[n] for n in watchers}
    assert (operator_pid(), gateway_pid()) == pods
    assert gateway("/healthz") == (200, b"ok")

    def not_ready() -> list[tuple[str, str]]:
        return [
            (node.metadata.name, ready.message)
            for node in core.list_node().items
            for ready in node.status.conditions
            if ready.type == "Ready" and ready.status != "True"
        ]

    try:
        wait_for(lambda: not not_ready(), timeout=20, what="every Node Ready")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; not Ready: {not_ready()}") from None


def test_operator_serviceaccount_cannot_read_secrets(api: client.ApiClient) -> None:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user="system:serviceaccount:wasm-operators:wasmop-operator",
            resource_attributes=client.V1ResourceAttributes(verb="list", resource="secrets"),
        )
    )
    result = client.AuthorizationV1Api(api).create_subject_access_review(review)
    assert result.status.allowed is False
    review.spec.resource_attributes = client.V1ResourceAttributes(
        verb="patch", group=GROUP, resource=PLURAL, subresource="status"
    )
    assert (
        client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed is True
    )


def test_operator_runs_as_its_serviceaccount(cluster) -> None:  # type: ignore[no-untyped-def]
    audit = cluster.layout.audit_log.read_text().splitlines()
    writers = {
        line.split('"username":"', 1)[1].split('"', 1)[0]
        for line in audit
        if PLURAL in line and '"patch"' in line
    }
    assert "system:serviceaccount:wasm-operators:wasmop-operator" in writers


def test_hpa_engine_scales_out_under_load_and_back_in(
    fns: Functions, api: client.ApiClient
) -> None:
    """``engine: hpa``: the upstream HPA controller, reading metrics-server (which reads
    the nodes' kubelet API), scales the function out on CPU under load and back in after;
    it reads the memory metric too."""
    scaling = {
        "engine": "hpa",
        "minReplicas": 1,
        "maxReplicas": 3,
        "metrics": [
            CPU_AT_HALF_REQUEST,
            {
                "type": "Resource",
                "resource": {
                    "name": "memory",
                    "target": {"type": "AverageValue", "averageValue": "500Mi"},
                },
            },
        ],
        "behavior": {
            "scaleUp": {"stabilizationWindowSeconds": 0},
            "scaleDown": {"stabilizationWindowSeconds": 0},
        },
    }
    fns.create(
        wasm_function(
            "fib", "wasm-fib", scaling=scaling,
            resources={"requests": {"cpu": "50m"}, "limits": {"cpu": "1"}},
        )
    )  # fmt: skip
    fns.wait_phase("fib", "Ready")
    hpas = client.AutoscalingV2Api(api)
    hpa = hpas.read_namespaced_horizontal_pod_autoscaler("fib", fns.namespace)
    assert hpa.spec.scale_target_ref.kind == FUNCTION_KIND

    def current(resource: str) -> Any:
        status = hpas.read_namespaced_horizontal_pod_autoscaler("fib", fns.namespace).status
        for metric in status.current_metrics or []:
            if metric.resource is not None and metric.resource.name == resource:
                return metric.resource.current
        return None

    # Figures reach the HPA once metrics-server has two scrapes of the new Pod.
    memory = wait_for(lambda: current("memory"), timeout=90, interval=1, what="HPA memory")
    assert memory.average_value is not None
    with fib_load(fns.namespace, seconds=150):
        wait_for(
            lambda: fns.get("fib")["spec"]["replicas"] > 1, timeout=150, interval=1,
            what="the HPA to scale the function out",
        )  # fmt: skip
        # The HPA scales its target before it writes the figures of that pass into its
        # own status: read them once they are there, while the load lasts.
        cpu = wait_for(
            lambda: (c := current("cpu")) is not None and c.average_utilization > 50 and c,
            timeout=30, interval=1, what="the HPA's CPU figure above its target",
        )  # fmt: skip
    assert cpu.average_utilization > 50
    wait_for(
        lambda: fns.get("fib")["spec"]["replicas"] == 1, timeout=150, interval=1,
        what="the HPA to scale the function back in",
    )  # fmt: skip
    events = client.CoreV1Api(api).list_namespaced_event(
        fns.namespace, field_selector="involvedObject.kind=HorizontalPodAutoscaler"
    )
    assert {"SuccessfulRescale"} <= {e.reason for e in events.items}


def test_two_operator_replicas_hand_over_through_peering(
    fns: Functions, api: client.ApiClient, cluster
) -> None:  # type: ignore[no-untyped-def]
    """A second replica with a higher priority takes over (the first pauses); when it
    stops, the first resumes. Functions created in either period become Ready."""
    import os
    import signal
    import socket

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    log_path = cluster.layout.logs / "operator-second.log"
    first = operator_pod(client.CoreV1Api(api)).metadata.name
    offset = len(operator_log(first))
    settings = manager.load_settings(cluster.layout)
    with log_path.open("wb") as log_file:
        second = subprocess.Popen(
            [
                sys.executable, "-m", "wasmop", "operator", "run",
                "--kubeconfig", str(cluster.layout.kubeconfig_for("operator")),
                "--metrics-port", str(free_port()), "--health-port", str(free_port()),
                "--gateway-url", f"http://127.0.0.1:{settings.gateway_port}",
                "--priority", str(10**7),
            ],
            stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: "Pausing" in operator_log(first)[offset:],
            timeout=30,
            what="the operator Pod to pause for the higher-priority replica",
        )
        fns.create(wasm_function("during", "wasm-hello"))
        fns.wait_phase("during", "Ready")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert second.returncode == 0, log_path.read_text()[-2000:]
    wait_for(
        lambda: "Resuming" in operator_log(first)[offset:],
        timeout=70,
        what="the operator Pod to resume",
    )
    fns.create(wasm_function("after", "wasm-hello"))
    fns.wait_phase("after", "Ready")
    os.unlink(log_path)


def test_real_cluster_install_manifests_are_accepted(cluster) -> None:  # type: ignore[no-untyped-def]
    """The operator and gateway Deployments for real clusters pass the API server's
    validation and admission (server-side dry run: nothing is created)."""
    manifest = repo_root() / "operator" / "config" / "operators" / "operator.yaml"
    kubectl = [sys.executable, "-m", "wasmop", "kubectl"]
    result = subprocess.run(
        [*kubectl, "apply", "--dry-run=server", "-f", str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # The embedded cluster runs them already (its system node): then they are "configured".
    for applied in ("deployment.apps/wasmop-operator", "service/wasmop-gateway"):
        assert re.search(f"{applied} (created|configured) \\(server dry run\\)", result.stdout), (
            result.stdout
        )
