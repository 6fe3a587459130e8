"""Helpers shared by the integration tests: waiting for the cluster to converge,
putting a built module where a Pod or WasmFunction can find it, and asking the gateway."""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kubernetes import client
from wasmop.cluster.settings import ClusterSettings

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
