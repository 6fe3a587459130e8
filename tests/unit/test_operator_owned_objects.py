"""The manifests a WasmFunction owns, and the conventions the node agent relies on."""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest
from wasmop.operator.owned_objects import (
    ANNOTATION_DIGEST,
    ANNOTATION_REVISION,
    MAX_CONFIGMAP_BYTES,
    MODULE_KEY,
    MODULE_KEY_GZ,
    ModuleTooLarge,
    build_configmap,
    build_deployment,
    build_hpa,
    build_module_configmap,
    build_service,
    configmap_name,
    gateway_url,
    is_own_module_configmap,
    module_digest,
    pack_module,
    selector_string,
    unpack_module,
)
from wasmop.operator.spec import RuntimeSpec, WasmFunction, WasmRuntime, resolve
from wasmop.wellknown import API_VERSION, FUNCTION_LABEL, RUNTIME_LABEL, ZONE_LABEL

MODULE = b"\0asm\1\0\0\0" + b"\x01\x02\x03" * 2000  # compresses well


def make_function(**spec: object) -> WasmFunction:
    return WasmFunction.from_body(
        {
            "metadata": {"name": "fib", "namespace": "bench", "uid": "uid-42", "generation": 2},
            "spec": {"module": {"configMapRef": {"name": "wasm-fib"}}, "version": "1.0.0", **spec},
        }
    )


def deployment(revision: int = 3, **spec: object) -> dict:
    fn = make_function(**spec)
    rt = WasmRuntime(name="default", spec=RuntimeSpec.parse({}))
    return build_deployment(resolve(fn, rt), pack_module(MODULE), revision=revision)


def test_pack_module_compresses_deterministically() -> None:
    bundle = pack_module(MODULE)
    assert bundle.compressed
    assert bundle.key == MODULE_KEY_GZ
    assert bundle.digest == hashlib.sha256(MODULE).hexdigest()
    assert bundle.size == len(MODULE)
    assert pack_module(MODULE).data == bundle.data  # same bytes every time (mtime 0)
    assert unpack_module(bundle.key, bundle.data) == MODULE


def test_pack_module_keeps_incompressible_modules_plain() -> None:
    noise = os.urandom(4096)
    bundle = pack_module(noise)
    assert bundle.key == MODULE_KEY
    assert bundle.data == noise
    assert pack_module(MODULE, compress=False).key == MODULE_KEY


def test_module_too_large_for_a_configmap() -> None:
    with pytest.raises(ModuleTooLarge, match=r"spec\.module\.url"):
        pack_module(os.urandom(MAX_CONFIGMAP_BYTES + 1))
    # A big but compressible module fits once gzipped.
    assert pack_module(b"\0" * (2 * MAX_CONFIGMAP_BYTES)).compressed


def test_configmap() -> None:
    fn = make_function()
    bundle = pack_module(MODULE)
    cm = build_configmap(fn, bundle)
    name = f"fib-{bundle.digest[:12]}"
    assert configmap_name("fib", bundle.digest) == name
    assert cm["metadata"]["name"] == name
    assert cm["metadata"]["namespace"] == "bench"
    assert cm["immutable"] is True
    assert cm["metadata"]["labels"]["wasm.bits-dissertation.io/digest"] == bundle.digest[:12]
    assert cm["metadata"]["labels"][FUNCTION_LABEL] == "fib"
    assert cm["metadata"]["annotations"][ANNOTATION_DIGEST] == f"sha256:{bundle.digest}"
    assert gzip.decompress(base64.b64decode(cm["binaryData"][MODULE_KEY_GZ])) == MODULE
    [owner] = cm["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": API_VERSION,
        "kind": "WasmFunction",
        "name": "fib",
        "uid": "uid-42",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_deployment_shape() -> None:
    dep = deployment()
    meta, spec = dep["metadata"], dep["spec"]
    assert (dep["apiVersion"], dep["kind"], meta["name"], meta["namespace"]) == (
        "apps/v1",
        "Deployment",
        "fib",
        "bench",
    )
    assert meta["ownerReferences"][0]["controller"] is True
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "wasmop"
    assert meta["labels"]["app.kubernetes.io/name"] == "fib"
    assert spec["replicas"] == 1
    assert spec["selector"] == {"matchLabels": {FUNCTION_LABEL: "fib"}}
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
    }
    assert spec["revisionHistoryLimit"] == 5
    assert spec["progressDeadlineSeconds"] == 600
    template = spec["template"]
    # The selector's labels must be on the pods, the revision label too (but not selected on).
    labels = template["metadata"]["labels"]
    assert labels[FUNCTION_LABEL] == "fib"
    assert labels["wasm.bits-dissertation.io/revision"] == "3"
    assert template["metadata"]["annotations"][ANNOTATION_REVISION] == "3"
    pod = template["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {RUNTIME_LABEL: "wasmtime"}
    # One node's failure should not take every replica: spread, but never refuse to place.
    [spread] = pod["topologySpreadConstraints"]
    assert (spread["topologyKey"], spread["whenUnsatisfiable"]) == (
        "kubernetes.io/hostname",
        "ScheduleAnyway",
    )
    assert spread["labelSelector"] == spec["selector"]


def test_tolerations() -> None:
    tolerations = deployment(placement={"tolerationSeconds": 15})["spec"]["template"]["spec"][
        "tolerations"
    ]
    assert {
        "key": RUNTIME_LABEL,
        "operator": "Equal",
        "value": "wasmtime",
        "effect": "NoSchedule",
    } in tolerations
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        assert {
            "key": key,
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 15,
        } in tolerations


def test_pods_tolerate_only_their_runtime_s_taint() -> None:
    """Wasm nodes taint themselves ``RUNTIME_LABEL=<runtime>:NoSchedule``: a function's Pods
    tolerate that one value, not every wasm runtime's nodes, and no NoExecute taint unless
    placement.tolerationSeconds says (the cluster's default applies)."""
    tolerations = deployment()["spec"]["template"]["spec"]["tolerations"]
    assert tolerations == [
        {"key": RUNTIME_LABEL, "operator": "Equal", "value": "wasmtime", "effect": "NoSchedule"}
    ]
    # A runtime selecting its nodes by other labels: the selector pins the Pods already.
    fn = make_function()
    rt = WasmRuntime(name="pool", spec=RuntimeSpec.parse({"nodeSelector": {"pool": "wasm"}}))
    pod = build_deployment(resolve(fn, rt), pack_module(MODULE), revision=1)["spec"]["template"]
    assert pod["spec"]["tolerations"] == [
        {"key": RUNTIME_LABEL, "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_the_runtime_selector_cannot_be_overridden_by_placement() -> None:
    """A tenant's placement narrows the runtime's nodes, never replaces its selector."""
    fn = make_function(
        placement={
            "zone": "core",
            "nodeSelector": {RUNTIME_LABEL: "other-runtime", "tier": "core", "disk": "ssd"},
        }
    )
    rt = WasmRuntime(
        name="edge",
        spec=RuntimeSpec.parse(
            {"nodeSelector": {RUNTIME_LABEL: "wasmtime", "tier": "edge", ZONE_LABEL: "edge-a"}}
        ),
    )
    pod = build_deployment(resolve(fn, rt), pack_module(MODULE), revision=1)["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {
        RUNTIME_LABEL: "wasmtime",
        "tier": "edge",
        ZONE_LABEL: "edge-a",
        "disk": "ssd",
    }


def test_container() -> None:
    dep = deployment(
        resources={"requests": {"cpu": "250m"}},
        limits={"timeoutMilliseconds": 750, "memory": "32Mi", "outputSize": "1Mi", "fuel": 10**9},
        healthCheck={"periodSeconds": 3, "timeoutSeconds": 2},
        capabilities={"env": [{"name": "APP_MODE", "value": "fast"}]},
    )
    [container] = dep["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "function"
    assert container["image"] == "wasmop/runtime:0.1.0"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "128Mi"},
    }
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    assert readiness["httpGet"]["path"] == "/readyz"
    assert liveness["httpGet"]["path"] == "/healthz"
    assert readiness["httpGet"]["port"] == "http"
    assert (readiness["periodSeconds"], readiness["timeoutSeconds"]) == (3, 2)
    env = {e["name"]: e["value"] for e in container["env"]}
    digest = module_digest(MODULE)
    assert env["WASMOP_TIMEOUT_MS"] == "750"
    assert env["WASMOP_MEMORY_BYTES"] == str(32 * 2**20)
    assert env["WASMOP_OUTPUT_BYTES"] == str(2**20)
    assert env["WASMOP_FUEL"] == str(10**9)
    assert env["WASMOP_MODULE_PATH"] == "/module/module.wasm.gz"
    assert env["WASMOP_MODULE_SHA256"] == digest
    assert env["WASMOP_FUNCTION"] == "fib"
    assert env["WASMOP_REVISION"] == "3"
    assert env["WASMOP_GUEST_ENV"] == "APP_MODE"
    assert env["APP_MODE"] == "fast"
    assert "simd" in env["WASMOP_FEATURES"].split(",")
    assert container["volumeMounts"] == [
        {"name": "module", "mountPath": "/module", "readOnly": True}
    ]
    # A Pod being deleted keeps serving until the gateway has stopped sending it requests.
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 2}}}
    [volume] = dep["spec"]["template"]["spec"]["volumes"]
    assert volume["configMap"]["name"] == f"fib-{digest[:12]}"
    assert volume["configMap"]["items"] == [{"key": "module.wasm.gz", "path": "module.wasm.gz"}]


def test_no_guest_env_by_default() -> None:
    [container] = deployment()["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WASMOP_GUEST_ENV"] == ""
    assert "WASMOP_FUEL" not in env
    assert all(name.startswith("WASMOP_") for name in env)


def test_placement_and_runtime_selector() -> None:
    fn = make_function(placement={"zone": "edge-a", "nodeSelector": {"disk": "ssd"}})
    rt = WasmRuntime(
        name="edge",
        spec=RuntimeSpec.parse(
            {
                "nodeSelector": {RUNTIME_LABEL: "wasmtime", "tier": "edge"},
                "engine": {"image": "registry.local/wasmop-runtime:edge"},
            }
        ),
    )
    dep = build_deployment(resolve(fn, rt), pack_module(MODULE), revision=1)
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {
        RUNTIME_LABEL: "wasmtime",
        "tier": "edge",
        "disk": "ssd",
        "topology.kubernetes.io/zone": "edge-a",
    }
    assert pod["containers"][0]["image"] == "registry.local/wasmop-runtime:edge"
    assert (
        dep["spec"]["template"]["metadata"]["labels"]["wasm.bits-dissertation.io/wasmruntime"]
        == "edge"
    )


def test_a_new_revision_changes_the_pod_template() -> None:
    one = deployment(revision=1)["spec"]["template"]
    two = deployment(revision=2)["spec"]["template"]
    version = deployment(revision=1, version="1.0.1")["spec"]["template"]
    assert one != two
    assert one != version
    assert one == deployment(revision=1)["spec"]["template"]


def test_replicas_strategy_and_override() -> None:
    spec = deployment(replicas=7, scaling={"minReplicas": 1, "maxReplicas": 5})["spec"]
    assert spec["replicas"] == 5
    fn = make_function(replicas=2)
    dep = build_deployment(
        resolve(fn, WasmRuntime(name="default")), pack_module(MODULE), revision=1, replicas=4
    )
    assert dep["spec"]["replicas"] == 4
    recreate = deployment(rollout={"strategy": "Recreate"})["spec"]["strategy"]
    assert recreate == {"type": "Recreate"}
    surge = deployment(rollout={"maxSurge": 1, "maxUnavailable": 0})["spec"]["strategy"]
    assert surge["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_service() -> None:
    svc = build_service(make_function())
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {FUNCTION_LABEL: "fib"}
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "uid-42"
    assert "clusterIP" not in svc["spec"]  # the API server allocates one


def test_headless_service_only_drops_the_cluster_ip() -> None:
    plain, headless = build_service(make_function()), build_service(make_function(), headless=True)
    assert headless["spec"].pop("clusterIP") == "None"
    assert headless == plain


def test_selector_and_url() -> None:
    assert selector_string("fib") == f"{FUNCTION_LABEL}=fib"
    assert (
        gateway_url("http://127.0.0.1:8000/", make_function()) == "http://127.0.0.1:8000/bench/fib"
    )


def test_hpa() -> None:
    fn = make_function(scaling={"engine": "hpa", "minReplicas": 2, "maxReplicas": 6})
    hpa = build_hpa(fn)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": API_VERSION,
        "kind": "WasmFunction",
        "name": "fib",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0] == {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
    }
    assert hpa["spec"]["behavior"]["scaleDown"] == {"stabilizationWindowSeconds": 300}
    with pytest.raises(ValueError, match=r"no spec\.scaling"):
        build_hpa(make_function())


def test_module_configmap_is_shared_by_digest_and_owned_by_no_function() -> None:
    from wasmop.operator.owned_objects import (
        build_module_configmap,
        is_module_configmap,
        module_configmap_name,
    )

    bundle = pack_module(MODULE)
    cm = build_module_configmap("bench", bundle)
    meta = cm["metadata"]
    assert (
        meta["name"] == module_configmap_name(bundle.digest) == f"wasm-module-{bundle.digest[:20]}"
    )
    assert is_module_configmap(meta["name"]) and not is_module_configmap(
        f"fib-{bundle.digest[:12]}"
    )
    assert meta["namespace"] == "bench" and cm["immutable"] is True
    assert "ownerReferences" not in meta and FUNCTION_LABEL not in meta["labels"]
    assert meta["labels"]["app.kubernetes.io/component"] == "module"
    assert meta["annotations"][ANNOTATION_DIGEST] == f"sha256:{bundle.digest}"
    assert gzip.decompress(base64.b64decode(cm["binaryData"][MODULE_KEY_GZ])) == MODULE


CREATED_BY = "wasm.bits-dissertation.io/created-by"
OTHER_BYTES = base64.b64encode(MODULE + b"\0").decode()


def _other_bytes(cm: dict[str, Any]) -> None:
    [key] = cm["binaryData"]
    cm["binaryData"][key] = OTHER_BYTES


FORGERIES: dict[str, Callable[[dict[str, Any]], object]] = {
    "other bytes": _other_bytes,
    "no creator": lambda cm: cm["metadata"]["annotations"].pop(CREATED_BY),
    "an owner": lambda cm: cm["metadata"].update(ownerReferences=[{"uid": "x"}]),
    "another name": lambda cm: cm["metadata"].update(name=cm["metadata"]["name"][:-1] + "x"),
    "mutable": lambda cm: cm.update(immutable=False),
    "data besides": lambda cm: cm.update(data={"notes": "mine"}),
    "another key": lambda cm: cm["binaryData"].update(extra=""),
    "not base64": lambda cm: cm["binaryData"].update({k: "not base64!" for k in cm["binaryData"]}),
}


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_module_configmap_is_the_operator_s_own_only_as_it_made_it(
    compress: bool, forgery: str
) -> None:
    """What the sweep may delete: exactly what build_module_configmap makes. A ConfigMap
    with its name, labels and even annotations but other contents, an owner, or data
    besides the module is someone else's."""
    limits = (64 * 2**20, 100.0)
    made = build_module_configmap("ns", pack_module(MODULE, compress=compress))
    assert is_own_module_configmap(made, *limits)
    forged = copy.deepcopy(made)
    FORGERIES[forgery](forged)
    assert not is_own_module_configmap(forged, *limits)
