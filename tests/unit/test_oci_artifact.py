"""The wasm OCI artifact layout, image references and registry credentials: pure logic."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from wasmop.oci.artifact import (
    CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    OCI_INDEX,
    OCI_MANIFEST,
    ArtifactError,
    select_module,
    sha256_digest,
    wasm_artifact,
)
from wasmop.oci.auth import AuthConfigError, DockerConfig, parse_challenges
from wasmop.oci.reference import ImageReference, ReferenceError

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


def layer(media_type: str, digest: str = DIGEST, size: int = 10) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def manifest(*layers: dict[str, object], config_type: str = CONFIG_MEDIA_TYPE) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": layer(config_type, OTHER, 2),
            "layers": list(layers),
        }
    ).encode()


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("127.0.0.1:5000/wasm/sqlite:3.53.2", "127.0.0.1:5000", "wasm/sqlite", "3.53.2", None),
        (f"ghcr.io/org/app@{DIGEST}", "ghcr.io", "org/app", None, DIGEST),
        (f"localhost:5000/a:v1@{DIGEST}", "localhost:5000", "a", "v1", DIGEST),
        ("docker.io/alpine:3", "docker.io", "library/alpine", "3", None),
        ("[::1]:5000/x/y:z", "[::1]:5000", "x/y", "z", None),
        ("registry.example.com/a__b/c-d.e:1_0", "registry.example.com", "a__b/c-d.e", "1_0", None),
    ],
)
def test_references_parse(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = ImageReference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("alpine:3", "name the registry"),
        ("wasm/sqlite:1", "not a registry host"),
        ("127.0.0.1:5000/wasm/sqlite", "give a tag"),
        ("127.0.0.1:5000/Wasm/sqlite:1", "not a valid repository"),
        ("127.0.0.1:5000/wasm/sqlite:-bad", "not a valid tag"),
        ("127.0.0.1:5000/wasm@sha512:" + "a" * 128, "sha256"),
        ("127.0.0.1:5000/wasm@sha256:ABC", "sha256"),
        ("127.0.0.1:99999/wasm:1", "out of range"),
        ("127.0.0.1:5000", "name the registry and the repository"),
        ("", "empty"),
    ],
)
def test_bad_references_say_why(text: str, says: str) -> None:
    with pytest.raises(ReferenceError, match=says):
        ImageReference.parse(text)


def test_pinned_reference_and_api_base() -> None:
    ref = ImageReference.parse("127.0.0.1:5000/wasm/sqlite:3.53.2")
    assert str(ref.pinned(DIGEST)) == f"127.0.0.1:5000/wasm/sqlite@{DIGEST}"
    assert ref.api_base == "http://127.0.0.1:5000"  # plain HTTP only on loopback
    assert ImageReference.parse("ghcr.io/o/a:1").api_base == "https://ghcr.io"
    assert ImageReference.parse("10.0.0.5:5000/o/a:1").api_base == "https://10.0.0.5:5000"
    assert ImageReference.parse("docker.io/o/a:1").api_base == "https://registry-1.docker.io"
    assert str(ImageReference.parse(str(ref))) == str(ref)


# --------------------------------------------------------------------------- layout


def test_the_artifact_wasmop_pushes_is_the_tag_runtime_layout() -> None:
    module = b"\0asm\x01\0\0\0"
    config, body = wasm_artifact(module, created="2026-12-01T00:00:00Z")
    document = json.loads(body)
    assert document["mediaType"] == OCI_MANIFEST
    assert document["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    assert document["config"]["digest"] == sha256_digest(config)
    assert json.loads(config) == {
        "architecture": "wasm",
        "created": "2026-12-01T00:00:00Z",
        "layerDigests": [sha256_digest(module)],
        "os": "wasip1",
    }
    assert document["layers"] == [
        {"mediaType": LAYER_MEDIA_TYPE, "digest": sha256_digest(module), "size": len(module)}
    ]
    assert select_module(body).layer.digest == sha256_digest(module)
    # Same module, same time: same manifest, so a re-push changes nothing.
    assert wasm_artifact(module, created="2026-12-01T00:00:00Z")[1] == body


@pytest.mark.parametrize(
    "media_type",
    [
        "application/wasm",
        "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
        "application/vnd.wasm.content.layer.v1+wasm",
    ],
)
def test_each_wasm_layer_type_is_the_module(media_type: str) -> None:
    selected = select_module(manifest(layer(media_type))).layer
    assert selected is not None and selected.media_type == media_type


def test_a_spin_application_with_one_module_and_data_layers_is_unambiguous() -> None:
    body = manifest(
        layer("application/vnd.wasm.content.layer.v1+data", OTHER),
        layer("application/vnd.wasm.content.layer.v1+wasm"),
        config_type="application/vnd.fermyon.spin.application.v1+config",
    )
    assert select_module(body).layer.digest == DIGEST


def test_a_container_image_is_the_wrong_media_type() -> None:
    body = manifest(
        layer("application/vnd.oci.image.layer.v1.tar+gzip"),
        config_type="application/vnd.oci.image.config.v1+json",
    )
    with pytest.raises(ArtifactError, match="no WebAssembly layer") as caught:
        select_module(body)
    assert caught.value.reason == "UnsupportedArtifact"
    assert "tar+gzip" in caught.value.message


def test_two_modules_are_ambiguous() -> None:
    body = manifest(layer("application/wasm"), layer("application/wasm", OTHER))
    with pytest.raises(ArtifactError) as caught:
        select_module(body)
    assert caught.value.reason == "AmbiguousArtifact"


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"not json", None, "InvalidManifest"),
        (b"[]", None, "InvalidManifest"),
        (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), None, "UnsupportedArtifact"),
        (
            json.dumps({"mediaType": OCI_MANIFEST, "layers": [{"mediaType": "application/wasm"}]}),
            None,
            "InvalidManifest",
        ),
        (
            json.dumps(
                {"mediaType": OCI_MANIFEST, "layers": [layer("application/wasm", "md5:ab")]}
            ),
            None,
            "InvalidManifest",
        ),
        (
            json.dumps({"mediaType": OCI_MANIFEST, "layers": [layer("application/wasm", size=-1)]}),
            None,
            "InvalidManifest",
        ),
    ],
)
def test_malformed_manifests(body: bytes | str, content_type: str | None, reason: str) -> None:
    data = body.encode() if isinstance(body, str) else body
    with pytest.raises(ArtifactError) as caught:
        select_module(data, content_type)
    assert caught.value.reason == reason


def test_media_type_from_the_header_when_the_body_has_none() -> None:
    body = json.dumps({"schemaVersion": 2, "layers": [layer("application/wasm")]}).encode()
    assert select_module(body, f"{OCI_MANIFEST}; charset=utf-8").layer is not None


def index(*platforms: tuple[str, str]) -> bytes:
    entries = [
        {**layer(OCI_MANIFEST, "sha256:" + f"{i:x}" * 64), "platform": {"os": o, "architecture": a}}
        for i, (o, a) in enumerate(platforms, start=1)
    ]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()


def test_an_index_leads_to_its_one_wasm_manifest() -> None:
    selected = select_module(index(("linux", "amd64"), ("wasip1", "wasm"))).manifest
    assert selected is not None and selected.digest == "sha256:" + "2" * 64


@pytest.mark.parametrize(
    ("platforms", "reason"),
    [
        ((("linux", "amd64"), ("linux", "arm64")), "UnsupportedArtifact"),
        ((("wasip1", "wasm"), ("wasi", "wasm")), "AmbiguousArtifact"),
    ],
)
def test_an_index_without_exactly_one_wasm_manifest(
    platforms: tuple[tuple[str, str], ...], reason: str
) -> None:
    with pytest.raises(ArtifactError) as caught:
        select_module(index(*platforms))
    assert caught.value.reason == reason


# --------------------------------------------------------------------------- credentials


def dockerconfig(auths: dict[str, object]) -> bytes:
    return json.dumps({"auths": auths}).encode()


def test_docker_config_credentials_by_registry() -> None:
    encoded = base64.b64encode(b"alice:s3cret:with:colons").decode()
    config = DockerConfig.parse(
        dockerconfig(
            {
                "127.0.0.1:5000": {"auth": encoded},
                "https://ghcr.io/v1/": {"username": "bob", "password": "pw"},
                "https://index.docker.io/v1/": {"auth": base64.b64encode(b"c:d").decode()},
            }
        )
    )
    first = config.for_registry("127.0.0.1:5000")
    assert first is not None and (first.username, first.password) == ("alice", "s3cret:with:colons")
    assert config.for_registry("ghcr.io").username == "bob"
    assert config.for_registry("docker.io").username == "c"
    assert config.for_registry("quay.io") is None
    assert "s3cret" not in repr(first)
    assert first.basic() == "Basic " + encoded


def test_merged_configs_take_the_first_secret_naming_a_registry() -> None:
    one = DockerConfig.parse(dockerconfig({"r.io": {"username": "a", "password": "1"}}))
    two = DockerConfig.parse(dockerconfig({"r.io": {"username": "b", "password": "2"}}))
    assert DockerConfig.merged([one, two]).for_registry("r.io").username == "a"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"{", "not valid JSON"),
        (b"[1]", "not a JSON object"),
        (dockerconfig({"r.io": {"auth": "!!!"}}), "not base64"),
        (dockerconfig({"r.io": {"auth": base64.b64encode(b"nocolon").decode()}}), "not base64"),
        (dockerconfig({"r.io": {"identitytoken": "t"}}), "identity token"),
        (dockerconfig({"r.io": {"username": "a"}}), "no username and password"),
    ],
)
def test_bad_credentials_say_why_without_quoting_secrets(data: bytes, says: str) -> None:
    with pytest.raises(AuthConfigError, match=says) as caught:
        DockerConfig.parse(data)
    assert "nocolon" not in str(caught.value)


def test_challenges() -> None:
    bearer, basic = parse_challenges(
        'Bearer realm="https://auth.example/token",service="reg",'
        'scope="repository:a/b:pull,push", Basic realm="x \\"y\\""'
    )
    assert bearer.scheme == "bearer"
    assert bearer.params == {
        "realm": "https://auth.example/token",
        "service": "reg",
        "scope": "repository:a/b:pull,push",
    }
    assert (basic.scheme, basic.params) == ("basic", {"realm": 'x "y"'})
    assert parse_challenges("") == []


def test_sha256_digest() -> None:
    assert sha256_digest(b"x") == "sha256:" + hashlib.sha256(b"x").hexdigest()
