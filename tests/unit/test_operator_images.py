"""spec.module.image in the operator's pure logic: parsing, the Pod template of an image
function, revisions that keep the digest, and the registry address policy."""

from __future__ import annotations

import pytest
from wasmop.node.podspec import ImageSource, PodSpecError, plan_container
from wasmop.oci.policy import RegistryPolicy
from wasmop.operator.owned_objects import ANNOTATION_IMAGE, ImageModule, build_deployment
from wasmop.operator.spec import RuntimeSpec, SpecError, WasmFunction, WasmRuntime, resolve
from wasmop.operator.status import pinned_image, record_revision
from wasmop.runtime.podenv import from_env

IMAGE = "127.0.0.1:5000/wasm/hello:1.0"
PINNED = "127.0.0.1:5000/wasm/hello@sha256:" + "a" * 64
OTHER_PINNED = "127.0.0.1:5000/wasm/hello@sha256:" + "b" * 64
MODULE_SHA = "c" * 64


def image_function(**module: object) -> WasmFunction:
    return WasmFunction.from_body(
        {
            "metadata": {"name": "hello", "namespace": "ns", "uid": "u1"},
            "spec": {"module": {"image": IMAGE, **module}, "version": "1"},
        }
    )


def test_an_image_source_parses_with_its_pull_secrets() -> None:
    source = image_function(imagePullSecrets=[{"name": "a"}, {"name": "b"}, {"name": "a"}]).spec
    assert source.module.kind == "image"
    assert source.module.image == IMAGE
    assert source.module.pull_secrets == ("a", "b")


@pytest.mark.parametrize(
    ("module", "says"),
    [
        ({"image": IMAGE, "url": "https://x/m.wasm"}, "exactly one"),
        ({"image": IMAGE, "imagePullSecrets": "regcred"}, "expected a list"),
        ({"image": IMAGE, "imagePullSecrets": [{"name": ""}]}, "Secret name is required"),
    ],
)
def test_bad_image_specs(module: dict[str, object], says: str) -> None:
    with pytest.raises(SpecError, match=says):
        WasmFunction.from_body({"metadata": {"name": "x"}, "spec": {"module": module}})


def test_module_size_defaults_to_the_engine_cap_and_can_be_raised() -> None:
    assert RuntimeSpec.parse({}).maximums.module_bytes == 64 * 2**20
    assert RuntimeSpec.parse({"maximums": {"moduleSize": "200Mi"}}).maximums.module_bytes == (
        200 * 2**20
    )


def image_deployment(secrets: tuple[str, ...] = ()) -> dict:
    fn = image_function()
    runtime = WasmRuntime(name="default", spec=RuntimeSpec.parse({}))
    module = ImageModule(PINNED, MODULE_SHA, secrets, 64 * 2**20)
    return build_deployment(resolve(fn, runtime), module, revision=2)


def test_pods_of_an_image_name_its_digest_and_mount_no_configmap() -> None:
    template = image_deployment()["spec"]["template"]
    container = template["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["WASMOP_MODULE_IMAGE"] == PINNED
    assert env["WASMOP_MODULE_SHA256"] == MODULE_SHA
    assert env["WASMOP_MAX_MODULE_BYTES"] == str(64 * 2**20)
    assert "WASMOP_MODULE_PATH" not in env and "WASMOP_REGISTRY_AUTH" not in env
    assert template["spec"]["volumes"] == [] and container["volumeMounts"] == []
    assert template["metadata"]["annotations"][ANNOTATION_IMAGE] == PINNED


def test_pull_secrets_are_secret_volumes_the_node_and_the_runtime_image_can_read() -> None:
    deployment = image_deployment(("regcred", "other"))
    spec = deployment["spec"]["template"]["spec"]
    assert [v["secret"]["secretName"] for v in spec["volumes"]] == ["regcred", "other"]
    assert all(v["secret"]["items"][0]["key"] == ".dockerconfigjson" for v in spec["volumes"])
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    paths = env["WASMOP_REGISTRY_AUTH"].split(",")
    assert len(paths) == 2
    # What the node agent reads back from the Pod: the image and the Secrets to use.
    pod = {"metadata": {"name": "p"}, "spec": spec}
    plan = plan_container(pod)
    assert plan.module == ImageSource(PINNED, ("regcred", "other"))
    environment = from_env(plan.env, "p")
    assert environment.module_image == PINNED and environment.module_digest == MODULE_SHA
    assert environment.registry_auth == tuple(paths)
    assert environment.max_module_bytes == 64 * 2**20


def test_a_registry_auth_path_outside_a_secret_volume_is_refused() -> None:
    spec = image_deployment(("regcred",))["spec"]["template"]["spec"]
    spec["containers"][0]["volumeMounts"] = []
    with pytest.raises(PodSpecError) as caught:
        plan_container({"metadata": {"name": "p"}, "spec": spec})
    assert caught.value.reason == "RegistryAuthNotMounted"


def test_a_resolved_tag_is_kept_in_the_revision_and_found_again() -> None:
    first = record_revision(
        (), None, digest=MODULE_SHA, version="1", config_map="", now="t1",
        image=PINNED, source=IMAGE,
    )  # fmt: skip
    assert first.current.to_status()["image"] == PINNED
    assert pinned_image(first.history, IMAGE, "1") == PINNED
    assert pinned_image(first.history, IMAGE, "2") is None  # a new version resolves again
    assert pinned_image(first.history, "127.0.0.1:5000/wasm/other:1.0", "1") is None
    # The tag moved and version 2 rolled it out; then version 1 again: its old digest.
    second = record_revision(
        first.history, 1, digest="d" * 64, version="2", config_map="", now="t2",
        image=OTHER_PINNED, source=IMAGE,
    )  # fmt: skip
    assert pinned_image(second.history, IMAGE, "1") == PINNED
    back = record_revision(
        second.history, 2, digest=MODULE_SHA, version="1", config_map="", now="t3",
        image=PINNED, source=IMAGE,
    )  # fmt: skip
    assert back.rolled_back and back.current.revision == 1
    assert back.config_maps_to_delete == ()  # an image revision has no ConfigMap


def test_the_same_module_from_a_configmap_and_from_an_image_are_two_revisions() -> None:
    cm = record_revision((), None, digest=MODULE_SHA, version="1", config_map="cm", now="t")
    image = record_revision(
        cm.history, 1, digest=MODULE_SHA, version="1", config_map="", now="t",
        image=PINNED, source=IMAGE,
    )  # fmt: skip
    assert image.changed and image.current.revision == 2


@pytest.mark.parametrize(
    ("host", "port", "address", "allowed"),
    [
        ("127.0.0.1", 5000, "127.0.0.1", True),  # trusted by the administrator
        ("127.0.0.1", 6443, "127.0.0.1", False),  # the API server on the same host
        ("ghcr.io", 443, "140.82.112.33", True),
        ("evil.example", 443, "10.0.0.1", False),
        ("evil.example", 443, "169.254.169.254", False),
        ("evil.example", 443, "::ffff:127.0.0.1", False),
        ("evil.example", 443, "fd00::1", False),
        ("registry.local", 5000, "10.1.2.3", True),
    ],
)
def test_registry_policy(host: str, port: int, address: str, allowed: bool) -> None:
    policy = RegistryPolicy.of(["127.0.0.1:5000", "registry.local"])
    assert (policy.check(host, port, address) is None) == allowed


@pytest.mark.parametrize(
    "text",
    [
        IMAGE,
        PINNED,
        "localhost:5000/a:b",
        "localhost/a:b",
        "ghcr.io/org/app@sha256:" + "f" * 64,
        "registry-1.example.com:8443/a/b/c:v1.2.3_rc-1",
        "[::1]:5000/x:1",
        "docker.io/library/alpine:3",
        "alpine:3",
        "wasm/sqlite:1",
        "127.0.0.1:5000/wasm/sqlite",
        "127.0.0.1:5000/Wasm/sqlite:1",
        "127.0.0.1:5000/wasm/sqlite:-1",
        "127.0.0.1:5000/wasm@sha256:abc",
        "127.0.0.1:5000//wasm:1",
    ],
)
def test_the_crd_accepts_exactly_the_references_the_operator_parses(text: str) -> None:
    import re
    from pathlib import Path

    import yaml
    from wasmop.oci.reference import ImageReference, ReferenceError

    crd = yaml.safe_load(
        (Path(__file__).parents[2] / "operator/config/crds/wasmfunctions.yaml").read_text()
    )
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    image = schema["properties"]["spec"]["properties"]["module"]["properties"]["image"]
    # The schema's pattern, and its CEL rule that a tag or a digest is given.
    by_schema = bool(re.fullmatch(image["pattern"], text)) and (
        "@sha256:" in text or re.search(r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", text) is not None
    )
    try:
        ImageReference.parse(text)
        parsed = True
    except ReferenceError:
        parsed = False
    assert by_schema == parsed
