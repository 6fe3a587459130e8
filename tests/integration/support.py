"""Helpers shared by the integration tests: waiting for the cluster to converge,
putting a built module where a Pod or WasmFunction can find it, asking the gateway, and a
tenant's view of its namespace."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from wasmop.cluster.layout import StateLayout
from wasmop.cluster.settings import ClusterSettings
from wasmop.node import fault_client
from wasmop.wellknown import API_VERSION, FUNCTION_KIND, FUNCTION_PLURAL, GROUP, VERSION

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """The first truthy value of ``predicate``; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def module_configmap(core: client.CoreV1Api, namespace: str, name: str, wasm: Path) -> None:
    """A ConfigMap holding a module under ``module.wasm``, as the samples expect."""
    data = base64.b64encode(wasm.read_bytes()).decode()
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=name), binary_data={"module.wasm": data}
        ),
    )


def gateway_get(path: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one GET through the gateway."""
    port = ClusterSettings().gateway_port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def tenant_function(name: str, **spec: Any) -> dict[str, Any]:
    """A WasmFunction of hello's module (ConfigMap wasm-hello) unless ``spec`` says."""
    spec.setdefault("module", {"configMapRef": {"name": "wasm-hello"}})
    metadata = {"name": name}
    return {"apiVersion": API_VERSION, "kind": FUNCTION_KIND, "metadata": metadata, "spec": spec}


class Tenant:
    """A namespace and the WasmFunctions written there, through one client."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def create(self, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, FUNCTION_PLURAL, body,
            dry_run="All" if dry_run else None,
        )  # fmt: skip

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, FUNCTION_PLURAL, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.namespace, FUNCTION_PLURAL, name
        )

    def status(self, name: str) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, FUNCTION_PLURAL, name
        )
        return found.get("status") or {}

    def condition(self, name: str, ctype: str) -> dict[str, Any] | None:
        conditions = self.status(name).get("conditions", [])
        return next((c for c in conditions if c["type"] == ctype), None)

    def wait_phase(self, name: str, phase: str, timeout: float = 60.0) -> dict[str, Any]:
        return wait_for(
            lambda: (s := self.status(name)).get("phase") == phase and s,
            timeout=timeout,
            what=f"{name} {phase}",
        )

    def warning_events(self, name: str) -> list[client.CoreV1Event]:
        events = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        )
        return [e for e in events.items if e.type == "Warning"]


def resync() -> None:
    """One resync pass of the operator now (its metrics port's ``POST /-/resync``)."""
    port = ClusterSettings().operator_metrics_port
    request = urllib.request.Request(f"http://127.0.0.1:{port}/-/resync", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def audit_events(path: Path) -> list[dict[str, Any]]:
    """The audit log's events, one per complete line. Split at "\n" only: a request's
    text may hold U+2028 and other separators JSON strings carry raw (the spec property
    suite sends them), where str.splitlines would split too; the last line may be half
    written."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n")[:-1]]


OPERATOR_NAMESPACE = "wasm-operators"
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"


def operator_pod(core: client.CoreV1Api) -> client.V1Pod:
    """The operator's ready Pod (the embedded cluster runs one replica)."""

    def ready() -> client.V1Pod | None:
        for pod in core.list_namespaced_pod(
            OPERATOR_NAMESPACE, label_selector=OPERATOR_SELECTOR
        ).items:
            conditions = pod.status.conditions or []
            if pod.metadata.deletion_timestamp is None and any(
                c.type == "Ready" and c.status == "True" for c in conditions
            ):
                return pod
        return None

    return wait_for(ready, timeout=120, what="a ready operator Pod")


def kill_operator(core: client.CoreV1Api, layout: StateLayout) -> client.V1Pod:
    """kill -9 of the operator's container through its node's fault API; the node
    restarts it. Returns the Pod as it was before."""
    pod = operator_pod(core)
    fault_client.post(
        layout.run, pod.spec.node_name, "/faults/crash",
        {"namespace": OPERATOR_NAMESPACE, "pod": pod.metadata.name},
    )  # fmt: skip
    return pod


def operator_log(pod: str) -> str:
    """The operator container's log as ``kubectl logs`` reads it."""
    done = subprocess.run(
        [sys.executable, "-m", "wasmop", "kubectl", "logs", "-n", OPERATOR_NAMESPACE, pod],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout
