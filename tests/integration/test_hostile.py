"""The hostile corpus on real node agents of the embedded cluster, and a compile bomb at
the operator (issue 11): each module is contained with its documented status, hello on
the same nodes keeps answering, no agent goes down, and a bomb delays no other function."""

from __future__ import annotations

import base64
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes import client
from support import wait_for
from wasmop.bench.deploy import plain_deployment
from wasmop.bench.hostile import DENSE_BOMB, HOSTILE_LIMITS, compile_bomb, corpus
from wasmop.cluster import manager
from wasmop.cluster.layout import repo_root
from wasmop.wellknown import API_VERSION, FUNCTION_KIND, GROUP, REASON_HEADER, VERSION
from wasmop.wellknown import FUNCTION_PLURAL as PLURAL

pytestmark = pytest.mark.integration

FUNCTIONS = repo_root() / "functions" / "build"
ENGINE_DEFAULTS = "simd,bulk-memory,multi-value"


def http_get(url: str, timeout: float = 30.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            return response.status, response.headers.get(REASON_HEADER) or ""
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code, exc.headers.get(REASON_HEADER) or ""


def configmap(core: client.CoreV1Api, namespace: str, name: str, module: bytes) -> None:
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name),
            binary_data={"module.wasm": base64.b64encode(module).decode()},
        ),
    )


def hostile_deployment(name: str, features: tuple[str, ...]) -> dict[str, Any]:
    manifest = plain_deployment(name, name)
    env = [
        {"name": "WASMOP_MEMORY_BYTES", "value": str(HOSTILE_LIMITS.memory_bytes)},
        {"name": "WASMOP_TIMEOUT_MS", "value": str(int(HOSTILE_LIMITS.timeout_s * 1000))},
        {"name": "WASMOP_OUTPUT_BYTES", "value": str(HOSTILE_LIMITS.output_bytes)},
    ]
    if features:
        env.append({"name": "WASMOP_FEATURES", "value": ",".join((ENGINE_DEFAULTS, *features))})
    manifest["spec"]["template"]["spec"]["containers"][0]["env"] = env
    return manifest


def pod_of(core: client.CoreV1Api, namespace: str, app: str) -> client.V1Pod | None:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return pods[0] if pods else None


def is_ready(pod: client.V1Pod | None) -> bool:
    conditions = (pod.status.conditions or []) if pod is not None else []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def waiting_reason(pod: client.V1Pod | None) -> str | None:
    statuses = (pod.status.container_statuses or []) if pod is not None else []
    waiting = statuses[0].state.waiting if statuses else None
    return waiting.reason if waiting is not None else None


def test_every_hostile_module_is_contained_on_a_node_while_hello_answers(
    api: client.ApiClient, namespace: str, cluster
) -> None:  # type: ignore[no-untyped-def]
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    configmap(core, namespace, "hello", (FUNCTIONS / "hello.wasm").read_bytes())
    apps.create_namespaced_deployment(namespace, plain_deployment("hello", "hello"))
    hello = wait_for(
        lambda: (lambda p: p if is_ready(p) else None)(pod_of(core, namespace, "hello")),
        what="a ready hello Pod",
    )
    answers: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            answers.append(http_get(f"http://{hello.status.pod_ip}:8080/", timeout=10)[0])
            time.sleep(0.05)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    hostiles = corpus()
    try:
        for hostile in hostiles:
            configmap(core, namespace, hostile.name, hostile.module)
            apps.create_namespaced_deployment(
                namespace, hostile_deployment(hostile.name, hostile.features)
            )
        outcomes: dict[str, str] = {}
        for hostile in hostiles:
            if hostile.refused:
                pod = wait_for(
                    lambda h=hostile: (lambda p: p if waiting_reason(p) == h.refused else None)(
                        pod_of(core, namespace, h.name)
                    ),
                    timeout=90,
                    what=f"{hostile.name} refused with {hostile.refused}",
                )
                outcomes[hostile.name] = f"refused {waiting_reason(pod)}"
            else:
                pod = wait_for(
                    lambda h=hostile: (lambda p: p if is_ready(p) else None)(
                        pod_of(core, namespace, h.name)
                    ),
                    timeout=60,
                    what=f"{hostile.name} ready",
                )
                query = f"?{hostile.query}" if hostile.query else ""
                status, reason = http_get(f"http://{pod.status.pod_ip}:8080/{query}")
                outcomes[hostile.name] = f"{status} {reason}"
    finally:
        stop.set()
        asker.join()
    assert outcomes == {h.name: h.expected for h in hostiles}
    assert len(answers) > 20 and set(answers) == {200}, f"hello answered {set(answers)}"
    nodes = client.CoreV1Api(api).list_node().items
    expected = set(manager.load_settings(cluster.layout).node_names())
    for node in nodes:
        if node.metadata.name in expected:
            ready = next(c for c in node.status.conditions if c.type == "Ready")
            assert ready.status == "True", node.metadata.name


def test_a_compile_bomb_is_invalid_at_the_operator_and_delays_no_other(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    configmap(core, namespace, "bomb", compile_bomb(**DENSE_BOMB))
    configmap(core, namespace, "hello", (FUNCTIONS / "hello.wasm").read_bytes())

    def function(name: str, source: str) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": FUNCTION_KIND,
            "metadata": {"name": name},
            "spec": {"module": {"configMapRef": {"name": source}}},
        }

    def status(name: str) -> dict[str, Any]:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return obj.get("status") or {}

    def validated(name: str) -> str | None:
        conditions = status(name).get("conditions") or []
        return next((c["status"] for c in conditions if c["type"] == "Validated"), None)

    create = custom.create_namespaced_custom_object
    create(GROUP, VERSION, namespace, PLURAL, function("bomb", "bomb"))
    time.sleep(0.5)  # the bomb is compiling now
    create(GROUP, VERSION, namespace, PLURAL, function("fine", "hello"))
    wait_for(lambda: validated("fine") == "True", timeout=60, what="fine validated")
    assert validated("bomb") != "False", "the other function waited for the bomb's verdict"
    wait_for(lambda: status("bomb").get("phase") == "Invalid", timeout=60, what="bomb Invalid")
    wait_for(lambda: status("fine").get("phase") == "Ready", timeout=60, what="fine Ready")
    condition = next(c for c in status("bomb")["conditions"] if c["type"] == "Validated")
    assert condition["status"] == "False"
    assert "CompileTimeout" in condition["message"], condition
