"""The OCI client against a real distribution registry (no cluster needed): push, pull by
digest, oras compatibility, the content store, and every pull error with its reason."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_support import (
    Registry,
    TokenService,
    free_port,
    push_container_image,
    running_registry,
)
from wasmop.oci import DockerConfig, ImageReference, RegistryClient, RegistryError
from wasmop.oci.artifact import OCI_INDEX, OCI_MANIFEST, sha256_digest
from wasmop.oci.cache import ContentStore
from wasmop.runtime.workloads import ensure_built, load_manifest

CREATED = "2026-12-01T00:00:00Z"
LIMIT = 64 * 2**20


@pytest.fixture(scope="module")
def modules() -> dict[str, bytes]:
    built = ensure_built(load_manifest())
    return {name: built[name].wasm_path.read_bytes() for name in ("hello", "echo")}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def ref(registry: Registry, path: str) -> ImageReference:
    return ImageReference.parse(f"{registry.address}/{path}")


async def test_push_then_pull_by_tag_and_by_digest(
    registry: Registry, modules: dict[str, bytes]
) -> None:
    tagged = ref(registry, "wasm/hello:1.0")
    async with RegistryClient() as client:
        digest = await client.push_module(tagged, modules["hello"], created=CREATED)
        again = await client.push_module(tagged, modules["hello"], created=CREATED)
        pulled = await client.pull(tagged, LIMIT)
        pinned = await client.pull(tagged.pinned(digest), LIMIT)
    assert again == digest  # same module, same time: same artifact
    assert pulled.image.digest == digest and pulled.data == modules["hello"]
    assert pulled.image.layer.digest == sha256_digest(modules["hello"])
    assert pinned.data == modules["hello"]
    assert str(pulled.image.pinned) == f"{registry.address}/wasm/hello@{digest}"


def test_wasmop_push_prints_the_pinned_reference(
    registry: Registry, modules: dict[str, bytes], tmp_path: Path
) -> None:
    wasm = tmp_path / "echo.wasm"
    wasm.write_bytes(modules["echo"])
    result = subprocess.run(
        [sys.executable, "-m", "wasmop", "push", str(wasm), f"{registry.address}/wasm/echo:2"],
        capture_output=True,
        text=True,
        check=True,
    )
    pinned = ImageReference.parse(result.stdout.strip())
    assert pinned.repository == "wasm/echo" and pinned.digest is not None
    not_wasm = tmp_path / "x.wasm"
    not_wasm.write_bytes(b"hello")
    refused = subprocess.run(
        [sys.executable, "-m", "wasmop", "push", str(not_wasm), f"{registry.address}/wasm/x:1"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "not a WebAssembly binary" in refused.stderr


async def test_what_oras_pushes_is_accepted(
    registry: Registry, modules: dict[str, bytes], tmp_path: Path
) -> None:
    import oras.client

    (tmp_path / "module.wasm").write_bytes(modules["hello"])
    (tmp_path / "config.json").write_text('{"architecture":"wasm","os":"wasip1"}')
    target = f"{registry.address}/wasm/hello-oras:1"
    response = oras.client.OrasClient(insecure=True).push(
        target=target,
        files=[f"{tmp_path / 'module.wasm'}:application/wasm"],
        manifest_config=f"{tmp_path / 'config.json'}:application/vnd.wasm.config.v0+json",
        disable_path_validation=True,
    )
    assert response.status_code == 201
    async with RegistryClient() as client:
        pulled = await client.pull(ImageReference.parse(target), LIMIT)
    assert pulled.data == modules["hello"]
    assert pulled.image.layer.annotations.get("org.opencontainers.image.title") == "module.wasm"


async def test_an_index_with_one_wasm_platform_resolves_to_its_module(
    registry: Registry, modules: dict[str, bytes]
) -> None:
    tagged = ref(registry, "wasm/multi:1")
    async with RegistryClient() as client:
        manifest_digest = await client.push_module(
            ref(registry, "wasm/multi:wasm-only"), modules["hello"], created=CREATED
        )
        size = len(json.dumps(await _manifest_json(client, tagged, manifest_digest)))
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": manifest_digest,
                        "size": size,
                        "platform": {"os": "wasip1", "architecture": "wasm"},
                    }
                ],
            }
        ).encode()
        index_digest = await client.push_manifest(tagged, index, OCI_INDEX)
        pulled = await client.pull(tagged, LIMIT)
    assert pulled.image.digest == index_digest  # the index is what the tag pins
    assert pulled.data == modules["hello"]


async def _manifest_json(client: RegistryClient, image: ImageReference, digest: str) -> object:
    data, _, _ = await client._manifest(image, digest)
    return json.loads(data)


async def test_the_content_store_serves_a_pinned_module_without_the_registry(
    tmp_path: Path, modules: dict[str, bytes]
) -> None:
    store = ContentStore(tmp_path / "store")
    with running_registry(tmp_path / "reg") as reg:
        async with RegistryClient() as client:
            digest = await client.push_module(ref(reg, "wasm/hello:1"), modules["hello"],
                                              created=CREATED)  # fmt: skip
            pinned = ref(reg, "wasm/hello:1").pinned(digest)
            await client.pull(pinned, LIMIT, store)
    # The registry is gone; the node still has what it pulled, verified.
    async with RegistryClient() as client:
        pulled = await client.pull(pinned, LIMIT, store)
        assert pulled.data == modules["hello"]
        with pytest.raises(RegistryError) as caught:
            await client.pull(ref(reg, "wasm/hello:1"), LIMIT, store)  # a tag must ask
    assert caught.value.reason == "RegistryUnavailable" and caught.value.transient


# --------------------------------------------------------------------------- errors


async def test_unknown_tag(registry: Registry) -> None:
    async with RegistryClient() as client:
        with pytest.raises(RegistryError) as caught:
            await client.resolve(ref(registry, "wasm/hello:no-such-tag"))
    assert caught.value.reason == "ImageNotFound" and caught.value.transient
    assert "MANIFEST_UNKNOWN" in caught.value.message


async def test_registry_down() -> None:
    async with RegistryClient() as client:
        with pytest.raises(RegistryError) as caught:
            await client.resolve(ImageReference.parse(f"127.0.0.1:{free_port()}/wasm/a:1"))
    assert caught.value.reason == "RegistryUnavailable" and caught.value.transient


async def test_a_container_image_is_the_wrong_media_type(registry: Registry) -> None:
    tagged = ref(registry, "library/not-wasm:1")
    async with RegistryClient() as client:
        await push_container_image(client, tagged)
        with pytest.raises(RegistryError) as caught:
            await client.resolve(tagged)
    assert caught.value.reason == "UnsupportedArtifact" and not caught.value.transient


async def test_a_tampered_blob_is_refused(tmp_path: Path, modules: dict[str, bytes]) -> None:
    with running_registry(tmp_path) as reg:
        tagged = ref(reg, "wasm/tampered:1")
        async with RegistryClient() as client:
            await client.push_module(tagged, modules["hello"], created=CREATED)
            blob = reg.blob_file(sha256_digest(modules["hello"]))
            original = blob.read_bytes()
            blob.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # one bit flipped
            with pytest.raises(RegistryError) as caught:
                await client.pull(tagged, LIMIT)
    assert caught.value.reason == "DigestMismatch" and not caught.value.transient


async def test_a_blob_over_the_limit_is_refused_before_it_is_read(
    registry: Registry, modules: dict[str, bytes]
) -> None:
    tagged = ref(registry, "wasm/hello:1.0")
    async with RegistryClient() as client:
        await client.push_module(tagged, modules["hello"], created=CREATED)
        with pytest.raises(RegistryError) as caught:
            await client.pull(tagged, len(modules["hello"]) - 1)
    assert caught.value.reason == "ModuleTooLarge" and not caught.value.transient


async def test_credentials_from_a_docker_config(tmp_path: Path, modules: dict[str, bytes]) -> None:
    with running_registry(tmp_path, users={"alice": "wonderland"}) as reg:
        tagged = ref(reg, "private/hello:1")

        def config(password: str) -> DockerConfig:
            auth = base64.b64encode(f"alice:{password}".encode()).decode()
            return DockerConfig.parse(json.dumps({"auths": {reg.address: {"auth": auth}}}))

        async with RegistryClient(credentials=config("wonderland")) as client:
            await client.push_module(tagged, modules["hello"], created=CREATED)
            assert (await client.pull(tagged, LIMIT)).data == modules["hello"]
        for credentials in (None, config("guess")):
            async with RegistryClient(credentials=credentials) as client:
                with pytest.raises(RegistryError) as caught:
                    await client.resolve(tagged)
            assert caught.value.reason == "RegistryUnauthorized" and caught.value.transient


async def test_bearer_tokens_from_a_token_service(
    tmp_path: Path, modules: dict[str, bytes]
) -> None:
    """The registry answers 401 with a Bearer challenge; the client gets a token for the
    repository's scope from the realm with its credentials, and uses it."""
    users = {"bob": "builder"}
    with TokenService(users) as tokens, running_registry(tmp_path, token=tokens) as reg:
        tagged = ref(reg, "team/hello:1")
        auth = base64.b64encode(b"bob:builder").decode()
        config = DockerConfig.parse(json.dumps({"auths": {reg.address: {"auth": auth}}}))
        async with RegistryClient(credentials=config) as client:
            await client.push_module(tagged, modules["hello"], created=CREATED)
            assert (await client.pull(tagged, LIMIT)).data == modules["hello"]
        assert tokens.issued >= 2  # one for push, one for pull (different scopes)
        async with RegistryClient() as client:
            with pytest.raises(RegistryError) as caught:
                await client.resolve(tagged)
        assert caught.value.reason == "RegistryUnauthorized"
        assert tokens.refused >= 1


async def test_an_address_check_refuses_before_connecting(registry: Registry) -> None:
    seen: list[tuple[str, int, str]] = []

    def refuse(host: str, port: int, address: str) -> str | None:
        seen.append((host, port, address))
        return "not on the allow-list"

    async with RegistryClient(check=refuse) as client:
        with pytest.raises(RegistryError) as caught:
            await client.resolve(ref(registry, "wasm/hello:1.0"))
    assert caught.value.reason == "RegistryNotAllowed" and not caught.value.transient
    host, port = registry.address.split(":")
    assert seen == [(host, int(port), host)]


def test_sha256_helper_matches_hashlib() -> None:
    assert sha256_digest(b"") == "sha256:" + hashlib.sha256(b"").hexdigest()


# --------------------------------------------------------------------------- the operator's side


async def test_the_operator_resolves_a_tag_once_per_spec(
    tmp_path: Path, modules: dict[str, bytes]
) -> None:
    """A tag resolves to its digest once; the same image and version again (a resync, a
    rollback) take the digest from the revision without asking the registry, even after
    the tag moved and with the registry gone."""
    from wasmop.oci.policy import RegistryPolicy
    from wasmop.operator.images import ImageResolver
    from wasmop.operator.spec import RuntimeSpec, WasmFunction, WasmRuntime
    from wasmop.operator.status import record_revision

    runtime = WasmRuntime("default", RuntimeSpec.parse({}))

    def function(image: str, version: str) -> WasmFunction:
        body = {"metadata": {"name": "f", "namespace": "ns"},
                "spec": {"module": {"image": image}, "version": version}}  # fmt: skip
        return WasmFunction.from_body(body)

    with running_registry(tmp_path) as reg:
        tagged = str(ref(reg, "wasm/app:stable"))
        resolver = ImageResolver(None, RegistryPolicy.of([reg.address]))  # type: ignore[arg-type]
        async with RegistryClient() as client:
            first = await client.push_module(ref(reg, "wasm/app:stable"), modules["hello"],
                                             created=CREATED)  # fmt: skip
            v1 = await resolver.resolve(function(tagged, "1"), runtime, (), lambda d: False)
            assert v1.data == modules["hello"] and v1.module.image.endswith(first)
            history = record_revision(
                (), None, digest=v1.module.digest, version="1", config_map="", now="t",
                image=v1.module.image, source=tagged,
            ).history  # fmt: skip
            await client.push_module(ref(reg, "wasm/app:stable"), modules["echo"],
                                     created=CREATED)  # fmt: skip
            v2 = await resolver.resolve(function(tagged, "2"), runtime, history, lambda d: False)
            assert v2.data == modules["echo"], "a new version resolves the moved tag"
    try:
        # The registry is gone: version 1 again is the digest it had, and known.
        back = await resolver.resolve(function(tagged, "1"), runtime, history, lambda d: True)
        assert back.module.image == v1.module.image and back.data is None
    finally:
        await resolver.close()
