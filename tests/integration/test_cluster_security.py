"""The control plane's hardening, checked against the running cluster: etcd only over TLS
with a client certificate from its own CA, Secrets encrypted at rest, the kubelet client
certificate without cluster-admin, credentials owner-only, Secret reads audited."""

from __future__ import annotations

import base64
import json
import ssl
import stat
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from kubernetes import client
from support import audit_events, wait_for
from wasmop.cluster import addons, encryption, manager
from wasmop.cluster.pki import PKI

pytestmark = pytest.mark.integration


def etcd_context(pki: PKI, client_cert: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.etcd_ca_cert))
    if client_cert:
        context.load_cert_chain(*map(str, pki.pair(client_cert)))
    return context


def etcd_range(cluster, key: str, client_cert: str | None) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """One key read straight from etcd through its JSON gateway (no API server)."""
    settings = manager.load_settings(cluster.layout)
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    request = urllib.request.Request(f"{settings.etcd_url}/v3/kv/range", data=body)
    context = etcd_context(PKI(cluster.layout.pki), client_cert)
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return list(json.load(response).get("kvs", []))


def test_etcd_refuses_clients_without_an_etcd_certificate(cluster) -> None:  # type: ignore[no-untyped-def]
    # The API server's etcd client reads the default namespace: the control case.
    [kv] = etcd_range(cluster, "/registry/namespaces/default", "apiserver-etcd-client")
    assert base64.b64decode(kv["key"]) == b"/registry/namespaces/default"
    # No certificate, and the cluster admin's certificate (cluster CA, not etcd CA).
    for refused in (None, "admin"):
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            etcd_range(cluster, "/registry/namespaces/default", refused)
    # Plain HTTP gets no data either.
    settings = manager.load_settings(cluster.layout)
    plain = settings.etcd_url.replace("https://", "http://")
    with pytest.raises((urllib.error.HTTPError, ConnectionError, urllib.error.URLError)):
        urllib.request.urlopen(f"{plain}/health", timeout=10)


def test_secrets_are_ciphertext_in_etcd(api: client.ApiClient, namespace: str, cluster) -> None:  # type: ignore[no-untyped-def]
    core = client.CoreV1Api(api)
    plaintext = f"plaintext-{uuid.uuid4().hex}"
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="s"), string_data={"k": plaintext}),
    )
    assert base64.b64decode(core.read_namespaced_secret("s", namespace).data["k"]).decode() == (
        plaintext
    )
    [kv] = etcd_range(cluster, f"/registry/secrets/{namespace}/s", "apiserver-etcd-client")
    stored = base64.b64decode(kv["value"])
    assert stored.startswith(encryption.CIPHERTEXT_PREFIX)
    assert plaintext.encode() not in stored
    assert base64.b64encode(plaintext.encode()) not in stored


def test_a_secret_read_is_audited_without_its_body(
    api: client.ApiClient, namespace: str, cluster
) -> None:  # type: ignore[no-untyped-def]
    core = client.CoreV1Api(api)
    name = f"audited-{uuid.uuid4().hex[:8]}"
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data={"k": "v"}),
    )
    core.read_namespaced_secret(name, namespace)

    def recorded() -> dict[str, Any] | None:
        for event in audit_events(cluster.layout.audit_log):
            ref = event.get("objectRef", {})
            if (
                event["verb"] == "get"
                and ref.get("resource") == "secrets"
                and ref.get("name") == name
                and event["stage"] == "ResponseComplete"
            ):
                return event
        return None

    event = wait_for(recorded, timeout=15, interval=0.25, what="the audit event of the read")
    assert event["level"] == "Metadata"
    assert event["user"]["username"] == "wasmop-admin"
    assert event["objectRef"]["namespace"] == namespace
    assert "requestObject" not in event and "responseObject" not in event


def test_kubelet_client_certificate_has_the_kubelet_api_only(cluster) -> None:  # type: ignore[no-untyped-def]
    pki = PKI(cluster.layout.pki)
    settings = manager.load_settings(cluster.layout)
    conf = client.Configuration()
    conf.host = settings.api_url
    conf.ssl_ca_cert = str(pki.ca_cert)
    conf.cert_file, conf.key_file = map(str, pki.pair("apiserver-kubelet-client"))

    def allowed(verb: str, resource: str, subresource: str = "") -> bool:
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb, resource=resource, subresource=subresource or None
                )
            )
        )
        with client.ApiClient(conf) as as_kubelet_client:
            answer = client.AuthorizationV1Api(as_kubelet_client).create_self_subject_access_review(
                review
            )
        return bool(answer.status.allowed)

    assert allowed("get", "nodes", "proxy")
    assert allowed("get", "nodes", "log")
    assert allowed("get", "nodes", "metrics")
    assert not allowed("list", "secrets")
    assert not allowed("create", "pods")
    assert not allowed("delete", "nodes")


def test_credential_files_of_the_running_cluster_are_owner_only(cluster) -> None:  # type: ignore[no-untyped-def]
    layout = cluster.layout
    credentials = [
        *layout.pki.glob("*.key"),
        *layout.pki.glob("*.secret"),
        layout.encryption_config,
        addons.registry_config_file(layout),
        *layout.config.glob("*.kubeconfig"),
        layout.admin_kubeconfig,
        *layout.run.glob("node-*.json"),  # the node agents' fault-API tokens
    ]
    assert layout.kubeconfig_for("operator") in credentials  # written by bootstrap
    modes = {str(p.relative_to(layout.root)): stat.S_IMODE(p.stat().st_mode) for p in credentials}
    assert modes == dict.fromkeys(modes, 0o600)
    assert stat.S_IMODE(layout.pki.stat().st_mode) == 0o700
