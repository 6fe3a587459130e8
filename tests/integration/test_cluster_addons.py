"""The cluster services beside the control plane: the OCI registry on 127.0.0.1 and
metrics-server behind the API server's aggregation layer."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import pytest
from kubernetes import client
from support import wait_for
from wasmop.cluster import addons, manager

pytestmark = pytest.mark.integration


def registry_request(
    cluster,  # type: ignore[no-untyped-def]
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request to the registry's HTTP API; (status, headers, body), errors included."""
    settings = manager.load_settings(cluster.layout)
    url = path if path.startswith("http") else f"http://{settings.registry_address}{path}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def push_blob(cluster, repo: str, data: bytes, digest: str) -> int:  # type: ignore[no-untyped-def]
    """Upload in two steps, as the distribution spec's monolithic POST-then-PUT."""
    status, headers, _ = registry_request(cluster, "POST", f"/v2/{repo}/blobs/uploads/")
    assert status == 202, status
    location = headers["Location"]
    separator = "&" if "?" in location else "?"
    status, _, _ = registry_request(
        cluster,
        "PUT",
        f"{location}{separator}digest={digest}",
        data,
        {"Content-Type": "application/octet-stream"},
    )
    return status


def test_registry_blob_round_trip_survives_a_restart(cluster) -> None:  # type: ignore[no-untyped-def]
    repo = f"wasmop-test/blob-{uuid.uuid4().hex[:8]}"
    data = os.urandom(64 * 1024)
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert push_blob(cluster, repo, data, digest) == 201
    status, headers, _ = registry_request(cluster, "HEAD", f"/v2/{repo}/blobs/{digest}")
    assert status == 200 and int(headers["Content-Length"]) == len(data)
    assert headers["Docker-Content-Digest"] == digest

    manager.control(cluster.layout, "restart", name=addons.REGISTRY)
    status, _, body = registry_request(cluster, "GET", f"/v2/{repo}/blobs/{digest}")
    assert status == 200 and body == data
    assert any(cluster.layout.registry_data.rglob("data")), "stored under the state dir"


def test_registry_refuses_a_blob_that_does_not_match_its_digest(cluster) -> None:  # type: ignore[no-untyped-def]
    repo = f"wasmop-test/tampered-{uuid.uuid4().hex[:8]}"
    claimed = f"sha256:{hashlib.sha256(b'what was promised').hexdigest()}"
    assert push_blob(cluster, repo, b"something else", claimed) == 400
    status, _, _ = registry_request(cluster, "HEAD", f"/v2/{repo}/blobs/{claimed}")
    assert status == 404


def test_metrics_api_is_registered_and_reached_through_the_aggregator(
    api: client.ApiClient, cluster
) -> None:  # type: ignore[no-untyped-def]
    registration = client.ApiregistrationV1Api(api)

    def available() -> client.V1APIServiceCondition | None:
        service = registration.read_api_service(addons.METRICS_APISERVICE)
        conditions = service.status.conditions or []
        return next((c for c in conditions if c.type == "Available" and c.status == "True"), None)

    condition = wait_for(available, timeout=60, interval=0.5, what="metrics APIService Available")
    assert condition.reason == "Passed"
    spec = registration.read_api_service(addons.METRICS_APISERVICE).spec
    assert (spec.service.namespace, spec.service.name) == ("kube-system", "metrics-server")
    # Discovery and a list, proxied by the API server to metrics-server as the admin
    # (front-proxy client certificate, X-Remote-User): metrics-server authorized them.
    custom = client.CustomObjectsApi(api)
    discovery = custom.get_api_resources(addons.METRICS_GROUP, addons.METRICS_VERSION)
    assert {r.name for r in discovery.resources} >= {"nodes", "pods"}
    nodes = custom.list_cluster_custom_object(addons.METRICS_GROUP, addons.METRICS_VERSION, "nodes")
    assert nodes["kind"] == "NodeMetricsList"


def test_metrics_api_reports_unavailable_while_metrics_server_is_down(
    api: client.ApiClient, cluster
) -> None:  # type: ignore[no-untyped-def]
    registration = client.ApiregistrationV1Api(api)

    def condition(status: str) -> client.V1APIServiceCondition | None:
        service = registration.read_api_service(addons.METRICS_APISERVICE)
        conditions = service.status.conditions or []
        return next((c for c in conditions if c.type == "Available" and c.status == status), None)

    manager.control(cluster.layout, "stop", name=addons.METRICS_SERVER)
    try:
        down = wait_for(lambda: condition("False"), timeout=60, interval=0.5, what="Unavailable")
        assert down.reason in {"FailedDiscoveryCheck", "ServiceNotFound", "MissingEndpoints"}
    finally:
        manager.control(cluster.layout, "start", name=addons.METRICS_SERVER)
    wait_for(lambda: condition("True"), timeout=60, interval=0.5, what="Available again")


def test_cluster_status_lists_the_services_and_the_metrics_api(cluster) -> None:  # type: ignore[no-untyped-def]
    settings = manager.load_settings(cluster.layout)
    out = subprocess.run(
        [sys.executable, "-m", "wasmop", "cluster", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "WASMOP_STATE_DIR": str(cluster.layout.root)},
    )
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert "running" in lines["registry"]
    assert f"http://{settings.registry_address}" in lines["registry"]
    assert f"https://127.0.0.1:{settings.metrics_server_port}" in lines["metrics-server"]
    assert lines[addons.METRICS_APISERVICE].split()[1] in {"True", "False"}
