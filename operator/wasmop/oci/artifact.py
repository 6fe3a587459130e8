"""The WebAssembly OCI artifact: which manifests hold a module, and how one is pushed.

The layout is CNCF TAG Runtime's wasm artifact: an OCI image manifest whose config has
media type ``application/vnd.wasm.config.v0+json`` and whose one layer,
``application/wasm``, is the module's bytes as they are (not compressed). Other tools
ship modules in near variants, accepted when there is exactly one module to take:

* runwasi's component layer, ``application/vnd.bytecodealliance.wasm.component.layer.v0+wasm``
  (a component: the runtime then says it runs core modules only);
* Spin's ``application/vnd.wasm.content.layer.v1+wasm`` layer, whatever its config;
* an image index with exactly one manifest for platform ``wasm`` (``wasip1``/``wasi``).

Everything here is pure: bytes of a manifest in, a descriptor or an :class:`ArtifactError`
with a reason out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONFIG_MEDIA_TYPE",
    "LAYER_MEDIA_TYPE",
    "MANIFEST_ACCEPT",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "WASM_LAYER_TYPES",
    "ArtifactError",
    "Descriptor",
    "Selection",
    "select_module",
    "sha256_digest",
    "wasm_artifact",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
# Sent as Accept on every manifest request, so a registry does not convert what it holds.
MANIFEST_ACCEPT = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))

CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"
LAYER_MEDIA_TYPE = "application/wasm"
COMPONENT_LAYER_TYPE = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"
SPIN_LAYER_TYPE = "application/vnd.wasm.content.layer.v1+wasm"
WASM_LAYER_TYPES = (LAYER_MEDIA_TYPE, COMPONENT_LAYER_TYPE, SPIN_LAYER_TYPE)
WASM_ARCHITECTURE = "wasm"
WASM_OS = ("wasip1", "wasi", "wasip2")
# A manifest is small; anything larger is not one (containerd's limit is 4 MiB too).
MAX_MANIFEST_BYTES = 4 * 2**20


class ArtifactError(Exception):
    """The manifest holds no single module; ``reason`` is CamelCase for status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about a blob."""

    media_type: str
    digest: str  # "sha256:<hex>"
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any, where: str) -> Descriptor:
        if not isinstance(raw, Mapping):
            raise ArtifactError("InvalidManifest", f"{where} is not an object")
        media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise ArtifactError("InvalidManifest", f"{where} lacks mediaType or digest")
        if not digest.startswith("sha256:") or len(digest) != 71:
            raise ArtifactError(
                "InvalidManifest", f"{where} has digest {digest[:80]!r}; only sha256 is supported"
            )
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ArtifactError("InvalidManifest", f"{where} has no valid size")
        annotations = raw.get("annotations") or {}
        platform = raw.get("platform") or {}
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            annotations=dict(annotations) if isinstance(annotations, Mapping) else {},
            platform=dict(platform) if isinstance(platform, Mapping) else {},
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Selection:
    """What a manifest (or index) points to: a module layer, or a manifest to follow."""

    layer: Descriptor | None = None
    manifest: Descriptor | None = None


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _media_type(document: Mapping[str, Any], header: str | None) -> str:
    """The body's mediaType, else the Content-Type the registry sent (without parameters)."""
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    return (header or "").split(";", 1)[0].strip()


def select_module(data: bytes, content_type: str | None = None) -> Selection:
    """The module layer of a wasm artifact manifest, or the manifest to follow in an index.

    Raises ArtifactError: ``UnsupportedArtifact`` for a manifest of another kind (a
    container image, an unknown media type, no wasm layer), ``AmbiguousArtifact`` when
    several layers or platforms could be the module, ``InvalidManifest`` for malformed
    JSON.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ArtifactError("InvalidManifest", f"the manifest is over {MAX_MANIFEST_BYTES} bytes")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError("InvalidManifest", f"the manifest is not JSON: {exc}") from None
    if not isinstance(document, Mapping):
        raise ArtifactError("InvalidManifest", "the manifest is not a JSON object")
    media_type = _media_type(document, content_type)
    if media_type in INDEX_TYPES:
        return Selection(manifest=_wasm_platform(document))
    if media_type not in MANIFEST_TYPES:
        raise ArtifactError(
            "UnsupportedArtifact",
            f"the registry returned a {media_type or 'untyped'} document, not an OCI image "
            "manifest holding a wasm module",
        )
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise ArtifactError("InvalidManifest", "the manifest has no layers list")
    descriptors = [Descriptor.parse(raw, f"layers[{i}]") for i, raw in enumerate(layers)]
    wasm = [d for d in descriptors if d.media_type in WASM_LAYER_TYPES]
    if len(wasm) == 1:
        return Selection(layer=wasm[0])
    seen = ", ".join(sorted({d.media_type for d in descriptors})) or "none"
    if not wasm:
        raise ArtifactError(
            "UnsupportedArtifact",
            f"the image has no WebAssembly layer ({' or '.join(WASM_LAYER_TYPES)}); its "
            f"layers are: {seen}. Push the module as a wasm artifact (wasmop push, or oras "
            f"push with --config config.json:{CONFIG_MEDIA_TYPE} module.wasm:{LAYER_MEDIA_TYPE})",
        )
    raise ArtifactError(
        "AmbiguousArtifact",
        f"the image has {len(wasm)} WebAssembly layers; a function runs exactly one module",
    )


def _wasm_platform(document: Mapping[str, Any]) -> Descriptor:
    entries = document.get("manifests")
    if not isinstance(entries, list):
        raise ArtifactError("InvalidManifest", "the image index has no manifests list")
    descriptors = [Descriptor.parse(raw, f"manifests[{i}]") for i, raw in enumerate(entries)]
    wasm = [
        d
        for d in descriptors
        if d.platform.get("architecture") == WASM_ARCHITECTURE
        and d.platform.get("os") in WASM_OS
        and d.media_type in MANIFEST_TYPES
    ]
    if len(wasm) == 1:
        return wasm[0]
    if not wasm:
        platforms = sorted(
            {f"{d.platform.get('os', '?')}/{d.platform.get('architecture', '?')}"
             for d in descriptors}
        )  # fmt: skip
        raise ArtifactError(
            "UnsupportedArtifact",
            "the image index has no manifest for platform wasip1/wasm (it has: "
            f"{', '.join(platforms) or 'none'})",
        )
    raise ArtifactError(
        "AmbiguousArtifact", f"the image index has {len(wasm)} manifests for platform wasm"
    )


def wasm_artifact(
    module: bytes, *, created: str, annotations: Mapping[str, str] | None = None
) -> tuple[bytes, bytes]:
    """(config bytes, manifest bytes) of the wasm artifact holding ``module``.

    ``created`` (RFC 3339) is the only input besides the module, so pushing the same
    module with the same timestamp gives the same manifest digest.
    """
    layer = Descriptor(LAYER_MEDIA_TYPE, sha256_digest(module), len(module))
    config = json.dumps(
        {
            "created": created,
            "architecture": WASM_ARCHITECTURE,
            "os": "wasip1",
            "layerDigests": [layer.digest],
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": CONFIG_MEDIA_TYPE,
        "config": Descriptor(CONFIG_MEDIA_TYPE, sha256_digest(config), len(config)).to_json(),
        "layers": [layer.to_json()],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return config, json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
