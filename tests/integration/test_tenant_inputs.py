"""What a tenant writes, on the real embedded cluster: module URLs the operator will not
fetch, placement that cannot leave the runtime's nodes, module bytes planted under the
operator's names that never run, and ConfigMaps the operator will not delete unless they
are its own."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from support import Tenant, module_configmap, resync, wait_for
from support import tenant_function as function
from wasmop.cluster import manager
from wasmop.cluster.layout import repo_root
from wasmop.operator.app import MODULE_CONFIGMAP_GRACE_S
from wasmop.operator.owned_objects import (
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    build_module_configmap,
    module_configmap_name,
    pack_module,
)
from wasmop.wellknown import (
    API_VERSION,
    FUNCTION_LABEL,
    GROUP,
    RUNTIME_KIND,
    RUNTIME_LABEL,
    RUNTIME_PLURAL,
    VERSION,
    ZONE_LABEL,
)

pytestmark = pytest.mark.integration

HELLO = repo_root() / "functions" / "build" / "hello.wasm"
ECHO = repo_root() / "functions" / "build" / "echo.wasm"


@pytest.fixture
def tenant(api: client.ApiClient, namespace: str) -> Tenant:
    module_configmap(client.CoreV1Api(api), namespace, "wasm-hello", HELLO)
    return Tenant(api, namespace)


def refused(call: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as rejected:
        call()
    assert rejected.value.status == 422, rejected.value.body
    return json.loads(rejected.value.body)


# --------------------------------------------------------------------------- module URLs


def test_module_urls_into_the_platform_are_refused_without_a_word_of_what_is_there(
    tenant: Tenant, cluster
) -> None:  # type: ignore[no-untyped-def]
    """The API server and the registry (loopback), the metadata address, a pod address
    and a name for loopback: the operator does not fetch from them, and status says so
    in one fixed text (before: the operator fetched, and status quoted the HTTP code or
    the connection error)."""
    settings = manager.load_settings(cluster.layout)
    pin = hashlib.sha256(HELLO.read_bytes()).hexdigest()
    targets = {
        "apiserver": f"http://127.0.0.1:{settings.api_port}/version",
        "registry": f"http://127.0.0.1:{settings.registry_port}/v2/",
        "metadata": "http://169.254.169.254/latest/meta-data/iam/",
        "pod": "http://10.244.1.2:8080/",
        "name": f"http://localhost:{settings.api_port}/healthz",
    }
    for name, url in targets.items():
        tenant.create(function(name, module={"url": url, "sha256": pin}))
    messages = set()
    for name in targets:
        tenant.wait_phase(name, "Invalid")
        validated = tenant.condition(name, "Validated")
        assert validated is not None and validated["reason"] == "ModuleURLNotAllowed", validated
        messages.add(validated["message"])
    [message] = messages
    for leak in (str(settings.api_port), "127.0.0.1", "169.254", "10.244", "400", "refused"):
        assert leak not in message


# --------------------------------------------------------------------------- placement


def test_placement_cannot_name_the_runtime_s_labels_or_bad_labels(tenant: Tenant) -> None:
    """CEL and patterns in the CRDs: the runtime's label (the key of the wasm taint) is
    not a tenant's to set, and keys and values must be labels (before: admitted, and the
    Deployment was refused with 422 on every retry)."""
    other_runtime = {"nodeSelector": {RUNTIME_LABEL: "someone-elses"}}
    body = refused(lambda: tenant.create(function("f", placement=other_runtime), dry_run=True))
    assert "set by the WasmRuntime" in body["message"]
    for selector in ({"bad key": "x"}, {"a/b/c": "x"}, {"d" * 64: "x"}, {"disk": "a b"}):
        refused(
            lambda s=selector: tenant.create(
                function("f", placement={"nodeSelector": s}), dry_run=True
            )
        )
    refused(lambda: tenant.create(function("f", placement={"zone": "zone a"}), dry_run=True))
    fine = {"nodeSelector": {"example.com/disk": "ssd", "kubernetes.io/hostname": "wasm-node-1"}}
    tenant.create(function("f", placement=fine), dry_run=True)
    runtime = {
        "apiVersion": API_VERSION,
        "kind": RUNTIME_KIND,
        "metadata": {"name": "bad-selector"},
        "spec": {"nodeSelector": {"bad key": "x"}},
    }
    refused(
        lambda: tenant.custom.create_cluster_custom_object(
            GROUP, VERSION, RUNTIME_PLURAL, runtime, dry_run="All"
        )
    )


@pytest.fixture
def zone_a_runtime(api: client.ApiClient) -> Iterator[str]:
    """A runtime whose nodes are the wasm nodes of zone-a only."""
    custom = client.CustomObjectsApi(api)
    name = f"zone-a-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": API_VERSION,
        "kind": RUNTIME_KIND,
        "metadata": {"name": name},
        "spec": {"nodeSelector": {RUNTIME_LABEL: "wasmtime", ZONE_LABEL: "zone-a"}},
    }
    custom.create_cluster_custom_object(GROUP, VERSION, RUNTIME_PLURAL, body)
    yield name
    custom.delete_cluster_custom_object(GROUP, VERSION, RUNTIME_PLURAL, name)


def test_placement_narrows_the_runtime_and_a_contradiction_is_invalid(
    tenant: Tenant, zone_a_runtime: str
) -> None:
    """A placement outside its runtime's nodes is Invalid (PlacementConflict) with a
    Warning Event (before: placement replaced the runtime's selector, and the Pods landed
    on zone-b); one inside lands only there, tolerating only its runtime's taint."""
    tenant.create(
        function("elsewhere", runtimeRef={"name": zone_a_runtime}, placement={"zone": "zone-b"})
    )
    tenant.create(function("inside", runtimeRef={"name": zone_a_runtime}, replicas=2))
    tenant.wait_phase("elsewhere", "Invalid")
    validated = tenant.condition("elsewhere", "Validated")
    assert validated is not None and validated["reason"] == "PlacementConflict"
    assert f"{ZONE_LABEL}=zone-a" in validated["message"]
    wait_for(lambda: tenant.warning_events("elsewhere"), what="an Invalid Warning Event")
    tenant.wait_phase("inside", "Ready")
    deployment = client.AppsV1Api(tenant.api).read_namespaced_deployment("inside", tenant.namespace)
    pod_spec = deployment.spec.template.spec
    assert pod_spec.node_selector == {RUNTIME_LABEL: "wasmtime", ZONE_LABEL: "zone-a"}
    assert [(t.key, t.operator, t.value) for t in pod_spec.tolerations] == [
        (RUNTIME_LABEL, "Equal", "wasmtime")
    ]
    pods = tenant.core.list_namespaced_pod(
        tenant.namespace, label_selector=f"{FUNCTION_LABEL}=inside"
    )
    nodes = {
        tenant.core.read_node(p.spec.node_name).metadata.labels[ZONE_LABEL] for p in pods.items
    }
    assert nodes == {"zone-a"}


# --------------------------------------------------------------------------- module bytes


def test_a_module_planted_under_the_module_configmap_s_name_never_runs(tenant: Tenant) -> None:
    """Other bytes (echo's) under the name the operator gives hello's shared ConfigMap:
    the function waits (ResourceConflict), and the nodes refuse to compile bytes other
    than the digest the Pods pin (ModuleDigestMismatch; before: the node ran echo)."""
    genuine = pack_module(HELLO.read_bytes())
    other = pack_module(ECHO.read_bytes(), compress=genuine.compressed)
    planted = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=module_configmap_name(genuine.digest)),
        binary_data={genuine.key: base64.b64encode(other.data).decode()},
        immutable=True,
    )
    tenant.core.create_namespaced_config_map(tenant.namespace, planted)
    tenant.create(function("victim"))
    wait_for(
        lambda: (
            (c := tenant.condition("victim", "Available")) and c["reason"] == "ResourceConflict"
        ),
        what="victim waiting on ResourceConflict",
    )

    def waiting_reasons() -> set[str]:
        pods = tenant.core.list_namespaced_pod(
            tenant.namespace, label_selector=f"{FUNCTION_LABEL}=victim"
        ).items
        assert not [p for p in pods if p.status.phase == "Running"], "the planted module runs"
        return {
            s.state.waiting.reason
            for p in pods
            for s in p.status.container_statuses or []
            if s.state.waiting is not None
        }

    wait_for(lambda: "ModuleDigestMismatch" in waiting_reasons(), what="the node's refusal")


# --------------------------------------------------------------------------- module ConfigMaps


def test_the_sweep_deletes_only_module_configmaps_the_operator_made(tenant: Tenant) -> None:
    """The resync deletes a shared module ConfigMap no function names: the operator's own
    (hello's, once its function is gone), never a tenant's that carries the same labels
    and a module ConfigMap's name, with or without the operator's annotations (before:
    deleted for its name and labels alone)."""
    tenant.create(function("hello"))
    tenant.wait_phase("hello", "Ready")
    [revision] = tenant.status("hello")["revisions"]
    ours = revision["configMap"]
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: "module"}
    echo = pack_module(ECHO.read_bytes())
    forged_meta = build_module_configmap(tenant.namespace, echo)["metadata"]
    lookalikes = {
        # The tenant's settings under a module ConfigMap's name and labels.
        "wasm-module-0123456789abcdef0123": client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="wasm-module-0123456789abcdef0123", labels=labels),
            data={"settings": "mine"},
        ),
        # Every label and annotation the operator sets, and other bytes than they name.
        forged_meta["name"]: client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=forged_meta["name"],
                labels=forged_meta["labels"],
                annotations=forged_meta["annotations"],
            ),
            binary_data={echo.key: base64.b64encode(b"\0asm\1\0\0\0 mine").decode()},
            immutable=True,
        ),
    }
    for configmap in lookalikes.values():
        tenant.core.create_namespaced_config_map(tenant.namespace, configmap)
    tenant.delete("hello")
    time.sleep(MODULE_CONFIGMAP_GRACE_S + 1)  # every ConfigMap here is past the grace

    def ours_gone() -> bool:
        resync()
        try:
            tenant.core.read_namespaced_config_map(ours, tenant.namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(ours_gone, timeout=30, interval=2, what="hello's module ConfigMap swept")
    for name in lookalikes:
        assert tenant.core.read_namespaced_config_map(name, tenant.namespace).metadata.name


def test_a_function_s_labelled_configmaps_it_does_not_own_are_never_deleted(
    tenant: Tenant,
) -> None:
    """A ConfigMap with the function's label that the function does not control (the
    tenant's own) survives the sweep a spec update runs (before: deleted by label)."""
    tenant.create(function("hello"))
    tenant.wait_phase("hello", "Ready")
    lookalike = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="tenant-notes", labels={FUNCTION_LABEL: "hello"}),
        data={"notes": "mine"},
    )
    tenant.core.create_namespaced_config_map(tenant.namespace, lookalike)
    tenant.patch("hello", {"replicas": 2})  # the same revision: it sweeps the function's ConfigMaps
    wait_for(lambda: tenant.status("hello").get("readyReplicas") == 2, what="hello at 2")
    resync()
    assert tenant.core.read_namespaced_config_map("tenant-notes", tenant.namespace).data == {
        "notes": "mine"
    }
