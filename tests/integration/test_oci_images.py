"""WasmFunctions whose module is an OCI image, on the real embedded cluster and its
registry: pushed with ``wasmop push`` (or oras), resolved by the operator, pulled by the
nodes by digest; tags that move, rollbacks, and every error with its reason and Event."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from registry_support import push_container_image
from support import wait_for
from test_operator import FUNCTIONS, Functions, events_for, gateway
from wasmop.bench.deploy import module_variant
from wasmop.cluster import addons, manager
from wasmop.oci import ImageReference, RegistryClient
from wasmop.oci.artifact import sha256_digest
from wasmop.wellknown import API_VERSION, FUNCTION_KIND, FUNCTION_LABEL

pytestmark = pytest.mark.integration


def registry(cluster) -> str:  # type: ignore[no-untyped-def]
    return manager.load_settings(cluster.layout).registry_address


def push(path: Path, ref: str) -> str:
    """``wasmop push``, as a user runs it; returns the pinned reference it prints."""
    result = subprocess.run(
        [sys.executable, "-m", "wasmop", "push", str(path), ref],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout.strip()


def distinct(module: bytes, tmp_path: Path) -> Path:
    """A variant of the module with its own digest, so a test that tampers with a blob
    touches nothing another test uses."""
    path = tmp_path / f"{uuid.uuid4().hex[:8]}.wasm"
    path.write_bytes(module_variant(module, uuid.uuid4().hex))
    return path


def image_function(name: str, image: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": FUNCTION_KIND,
        "metadata": {"name": name},
        "spec": {"module": {"image": image}, **spec},
    }


def pods_env(core: client.CoreV1Api, namespace: str, name: str) -> list[dict[str, str]]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"{FUNCTION_LABEL}={name}").items
    return [
        {e.name: e.value for e in pod.spec.containers[0].env or []}
        for pod in pods
        if pod.metadata.deletion_timestamp is None
    ]


def wait_event(core: client.CoreV1Api, namespace: str, name: str, reason: str) -> Any:
    return wait_for(
        lambda: next((e for e in events_for(core, namespace, name) if e.reason == reason), None),
        timeout=60,
        what=f"Event {reason} for {name}",
    )


@pytest.fixture
def fns(api: client.ApiClient, namespace: str) -> Functions:
    return Functions(api, namespace)


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


# --------------------------------------------------------------------------- acceptance


def test_sqlite_from_the_registry_is_ready_and_answers(
    cluster,
    fns: Functions,
    core: client.CoreV1Api,  # type: ignore[no-untyped-def]
) -> None:
    tagged = f"{registry(cluster)}/wasm/sqlite:3.53.2"
    pinned = push(FUNCTIONS / "sqlite.wasm", tagged)
    fns.create(image_function("sqlite", tagged, version="3.53.2", replicas=2))
    status = fns.wait_phase("sqlite", "Ready", timeout=90, readyReplicas=2)
    code, body = gateway(f"/{fns.namespace}/sqlite/")
    assert code == 200 and json.loads(body)["sqlite_version"] == "3.53.2"

    [revision] = status["revisions"]
    assert revision["image"] == pinned and revision["source"] == tagged
    module_sha = hashlib.sha256((FUNCTIONS / "sqlite.wasm").read_bytes()).hexdigest()
    assert revision["digest"] == module_sha and revision["configMap"] == ""
    for env in pods_env(core, fns.namespace, "sqlite"):
        assert env["WASMOP_MODULE_IMAGE"] == pinned  # Pods pull the digest, not the tag
        assert env["WASMOP_MODULE_SHA256"] == module_sha
    assert not core.list_namespaced_config_map(
        fns.namespace, label_selector=f"{FUNCTION_LABEL}=sqlite"
    ).items, "an image needs no module ConfigMap"
    pulled = [e for e in core.list_namespaced_event(fns.namespace).items if e.reason == "Pulled"]
    assert pulled, "nodes report their pulls"


def test_a_20_mib_module_works_the_same_way(
    cluster,
    fns: Functions,  # type: ignore[no-untyped-def]
) -> None:
    tagged = f"{registry(cluster)}/wasm/bulk:1"
    push(FUNCTIONS / "bulk.wasm", tagged)
    fns.create(image_function("bulk", tagged, version="1"))
    fns.wait_phase("bulk", "Ready", timeout=120)
    code, body = gateway(f"/{fns.namespace}/bulk/?offset=1000000")
    assert code == 200
    assert json.loads(body) == {
        "bytes": 20971520,
        "offset": 1000000,
        "hex": "e1ce0e08e04ecca9ca85d9f5d18b6210",
    }


def test_a_moved_tag_rolls_out_with_a_new_version_and_a_rollback_keeps_the_old_digest(
    cluster,
    fns: Functions,
    core: client.CoreV1Api,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    tagged = f"{registry(cluster)}/wasm/moving-{uuid.uuid4().hex[:6]}:stable"
    first = push(FUNCTIONS / "hello.wasm", tagged)
    fns.create(image_function("app", tagged, version="1"))
    fns.wait_phase("app", "Ready", currentRevision=1)
    assert gateway(f"/{fns.namespace}/app/")[1] == b"Hello, world!\n"

    second = push(FUNCTIONS / "echo.wasm", tagged)  # the tag moves
    assert second != first
    fns.patch("app", {"version": "2"})
    status = fns.wait_phase("app", "Ready", currentRevision=2, updatedReplicas=1)
    assert status["revisions"][-1]["image"] == second
    code, body = gateway(f"/{fns.namespace}/app/")
    assert code == 200 and body != b"Hello, world!\n"  # echo answers now

    fns.patch("app", {"version": "1"})  # back, though the tag still names echo
    status = fns.wait_phase("app", "Ready", currentRevision=1, updatedReplicas=1)
    assert status["revisions"][-1]["image"] == first
    wait_for(
        lambda: (
            all(e["WASMOP_MODULE_IMAGE"] == first for e in pods_env(core, fns.namespace, "app"))
            and gateway(f"/{fns.namespace}/app/")[1] == b"Hello, world!\n"
        ),
        timeout=60,
        what="the old digest serving again",
    )
    assert wait_event(core, fns.namespace, "app", "RolledBack")


def test_what_oras_pushes_runs(
    cluster,
    fns: Functions,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    import oras.client

    module = tmp_path / "module.wasm"
    module.write_bytes((FUNCTIONS / "hello.wasm").read_bytes())
    config = tmp_path / "config.json"
    config.write_text('{"architecture":"wasm","os":"wasip1"}')
    tagged = f"{registry(cluster)}/wasm/hello-oras:1"
    oras.client.OrasClient(insecure=True).push(
        target=tagged,
        files=[f"{module}:application/wasm"],
        manifest_config=f"{config}:application/vnd.wasm.config.v0+json",
        disable_path_validation=True,
    )
    fns.create(image_function("oras", tagged))
    fns.wait_phase("oras", "Ready")
    assert gateway(f"/{fns.namespace}/oras/")[1] == b"Hello, world!\n"


# --------------------------------------------------------------------------- errors


def assert_refused(
    fns: Functions, core: client.CoreV1Api, name: str, phase: str, reason: str
) -> dict[str, Any]:
    def refused() -> dict[str, Any] | None:
        status = fns.status(name)
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        held = conditions.get("Validated" if phase == "Invalid" else "Available", {})
        return status if status.get("phase") == phase and held.get("reason") == reason else None

    status = wait_for(refused, timeout=60, what=f"{name} {phase} with {reason}")
    assert wait_event(core, fns.namespace, name, reason).type == "Warning"
    return status


def test_an_unknown_tag_is_pending_and_retried_until_it_is_pushed(
    cluster,
    fns: Functions,
    core: client.CoreV1Api,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    tagged = f"{registry(cluster)}/wasm/later-{uuid.uuid4().hex[:6]}:1"
    fns.create(image_function("later", tagged))
    status = assert_refused(fns, core, "later", "Pending", "ImageNotFound")
    available = next(c for c in status["conditions"] if c["type"] == "Available")
    assert "retrying in" in available["message"]
    push(FUNCTIONS / "hello.wasm", tagged)
    fns.wait_phase("later", "Ready", timeout=90)  # the back-off retry finds it


def test_a_container_image_is_invalid(
    cluster,
    fns: Functions,
    core: client.CoreV1Api,  # type: ignore[no-untyped-def]
) -> None:
    ref = ImageReference.parse(f"{registry(cluster)}/library/not-wasm:1")

    async def push() -> None:
        async with RegistryClient() as registry_client:
            await push_container_image(registry_client, ref)

    asyncio.run(push())
    fns.create(image_function("container", str(ref)))
    status = assert_refused(fns, core, "container", "Invalid", "UnsupportedArtifact")
    validated = next(c for c in status["conditions"] if c["type"] == "Validated")
    assert "no WebAssembly layer" in validated["message"]


def test_a_tampered_blob_is_refused(
    cluster,
    fns: Functions,
    core: client.CoreV1Api,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    wasm = distinct((FUNCTIONS / "hello.wasm").read_bytes(), tmp_path)
    tagged = f"{registry(cluster)}/wasm/tampered-{uuid.uuid4().hex[:6]}:1"
    push(wasm, tagged)
    digest = sha256_digest(wasm.read_bytes()).removeprefix("sha256:")
    blob = cluster.layout.registry_data / "docker/registry/v2/blobs/sha256" / digest[:2] / digest
    data = (blob / "data").read_bytes()
    (blob / "data").write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    fns.create(image_function("tampered", tagged))
    assert_refused(fns, core, "tampered", "Invalid", "DigestMismatch")


def test_a_module_above_the_runtime_s_module_size_is_refused_before_download(
    cluster,
    api: client.ApiClient,
    fns: Functions,
    core: client.CoreV1Api,  # type: ignore[no-untyped-def]
) -> None:
    custom = client.CustomObjectsApi(api)
    runtime = f"small-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": API_VERSION,
        "kind": "WasmRuntime",
        "metadata": {"name": runtime},
        "spec": {"maximums": {"moduleSize": "1Mi"}},
    }
    custom.create_cluster_custom_object(API_VERSION.split("/")[0], "v1alpha1", "wasmruntimes", body)
    try:
        tagged = f"{registry(cluster)}/wasm/bulk:1"
        push(FUNCTIONS / "bulk.wasm", tagged)
        fns.create(image_function("big", tagged, runtimeRef={"name": runtime}))
        status = assert_refused(fns, core, "big", "Invalid", "ModuleTooLarge")
        validated = next(c for c in status["conditions"] if c["type"] == "Validated")
        assert "moduleSize" in validated["message"]
    finally:
        custom.delete_cluster_custom_object(
            API_VERSION.split("/")[0], "v1alpha1", "wasmruntimes", runtime
        )


def test_registry_down_is_pending_and_recovers(
    cluster,
    fns: Functions,
    core: client.CoreV1Api,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    tagged = f"{registry(cluster)}/wasm/outage-{uuid.uuid4().hex[:6]}:1"
    push(distinct((FUNCTIONS / "hello.wasm").read_bytes(), tmp_path), tagged)
    manager.control(cluster.layout, "stop", name=addons.REGISTRY)
    try:
        fns.create(image_function("outage", tagged))
        assert_refused(fns, core, "outage", "Pending", "RegistryUnavailable")
    finally:
        manager.control(cluster.layout, "start", name=addons.REGISTRY)
    fns.wait_phase("outage", "Ready", timeout=90)


@pytest.mark.parametrize(
    "image",
    [
        "127.0.0.1:6443/kube/apiserver:1",  # the API server, on loopback
        "169.254.169.254/latest/meta-data:1",  # a cloud's metadata service
        "10.244.1.1:10250/node/daemon:1",  # a node daemon inside our namespaces
    ],
)
def test_registries_outside_the_policy_are_refused_without_a_request(
    fns: Functions, core: client.CoreV1Api, image: str
) -> None:
    name = f"ssrf-{hashlib.sha256(image.encode()).hexdigest()[:6]}"
    fns.create(image_function(name, image))
    status = assert_refused(fns, core, name, "Invalid", "RegistryNotAllowed")
    validated = next(c for c in status["conditions"] if c["type"] == "Validated")
    assert "not a public unicast address" in validated["message"]


# --------------------------------------------------------------------------- credentials


def test_pull_secrets_reach_only_the_operator_a_namespace_grants_and_the_pod_s_node(
    cluster,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """A private registry (htpasswd users), a dockerconfigjson Secret for it, the
    operator's own identity and a node's: the operator reads the Secret only once the
    namespace grants it that one Secret; the node reads it for a Pod bound to it that
    mounts it, and pulls with it. (The cluster's own components trust only the cluster's
    registry, so the operator and node code run here, with the test registry trusted.)"""
    from registry_support import running_registry
    from wasmop.kube import Kube, KubeConfig
    from wasmop.node.function_loader import FunctionLoader
    from wasmop.node.images import NodeImages
    from wasmop.node.podspec import plan_container
    from wasmop.oci import DockerConfig
    from wasmop.oci.cache import ContentStore
    from wasmop.oci.policy import RegistryPolicy
    from wasmop.operator.images import ImageResolver, ImageUnavailable
    from wasmop.operator.owned_objects import ImageModule, build_deployment
    from wasmop.operator.spec import RuntimeSpec, WasmFunction, WasmRuntime, resolve

    hello = (FUNCTIONS / "hello.wasm").read_bytes()
    with running_registry(tmp_path / "private", users={"alice": "wonderland"}) as private:
        auths = {private.address: {"username": "alice", "password": "wonderland"}}
        config = json.dumps({"auths": auths})
        tagged = ImageReference.parse(f"{private.address}/team/hello:1")

        async def push() -> str:
            async with RegistryClient(credentials=DockerConfig.parse(config)) as c:
                return str(tagged.pinned(await c.push_module(tagged, hello, created="t")))

        pinned = asyncio.run(push())
        for name in ("regcred", "other"):
            core.create_namespaced_secret(
                namespace,
                client.V1Secret(
                    metadata=client.V1ObjectMeta(name=name),
                    type="kubernetes.io/dockerconfigjson",
                    string_data={".dockerconfigjson": config},
                ),
            )
        policy = RegistryPolicy.of([private.address])
        runtime = WasmRuntime("default", RuntimeSpec.parse({}))

        def function(secret: str) -> WasmFunction:
            return WasmFunction.from_body(
                {
                    "metadata": {"name": "private", "namespace": namespace},
                    "spec": {
                        "module": {"image": str(tagged), "imagePullSecrets": [{"name": secret}]}
                    },
                }
            )

        async def as_operator(secret: str) -> bytes | None:
            kubeconfig = KubeConfig.from_file(cluster.layout.kubeconfig_for("operator"))
            async with Kube(kubeconfig) as kube:
                resolver = ImageResolver(kube, policy)
                try:
                    resolved = await resolver.resolve(
                        function(secret), runtime, (), lambda digest: False
                    )
                finally:
                    await resolver.close()
            assert resolved.module.image == pinned
            return resolved.data

        with pytest.raises(ImageUnavailable) as caught:
            asyncio.run(as_operator("regcred"))
        assert caught.value.reason == "PullSecretNotReadable" and not caught.value.permanent
        assert "--resource-name=regcred" in caught.value.message
        rbac = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "wasmop-pull-regcred"},
                "rules": [
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
                     "resourceNames": ["regcred"]}
                ],
            },
        )  # fmt: skip
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "wasmop-pull-regcred"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                            "name": "wasmop-pull-regcred"},
                "subjects": [{"kind": "ServiceAccount", "name": "wasmop-operator",
                              "namespace": "wasm-operators"}],
            },
        )  # fmt: skip
        granted = wait_for(
            lambda: _try(lambda: asyncio.run(as_operator("regcred"))), timeout=30, what="grant"
        )
        assert granted == hello
        with pytest.raises(ImageUnavailable) as caught:
            asyncio.run(as_operator("other"))  # the grant is for that one Secret
        assert caught.value.reason == "PullSecretNotReadable"

        # The node side: a Pod bound to wasm-node-1 that mounts regcred, as the operator
        # writes it; the node's identity reads the Secret through the Node authorizer.
        fn = function("regcred")
        deployment = build_deployment(
            resolve(fn, runtime), ImageModule(pinned, hashlib.sha256(hello).hexdigest(),
                                              ("regcred",)), revision=1,
        )  # fmt: skip
        pod_spec = deployment["spec"]["template"]["spec"]
        node = manager.load_settings(cluster.layout).node_names()[0]
        pod = {"metadata": {"name": "private-pod"}, "spec": {**pod_spec, "nodeName": node}}
        core.create_namespaced_pod(namespace, pod)

        async def as_node() -> Any:
            kubeconfig = KubeConfig.from_file(cluster.layout.kubeconfig_for(f"node-{node}"))
            async with Kube(kubeconfig) as kube:
                images = NodeImages(ContentStore(tmp_path / "content"), policy)
                loader = FunctionLoader(kube, images=images)
                try:
                    function = await loader.load(namespace, "private-pod", plan_container(pod))
                    digest = function.digest
                    await function.aclose()
                    return digest, images.fetched
                finally:
                    loader.close()
                    await images.close()

        digest, fetched = asyncio.run(as_node())
        assert digest == hashlib.sha256(hello).hexdigest() and fetched == 1


def _try(call: Any) -> Any:
    from wasmop.operator.images import ImageUnavailable

    try:
        return call()
    except ImageUnavailable:
        return None
