"""WebAssembly modules in OCI registries, as the wasm ecosystem ships them.

:mod:`.reference` parses image references, :mod:`.artifact` knows the wasm artifact
layout (which layer of a manifest is the module, how to build one), :mod:`.auth` reads
Docker config credentials and registry challenges, :mod:`.client` talks to a registry
(resolve, pull by digest, push), :mod:`.cache` is a node's content-addressed store of
pulled modules, and :mod:`.cli` is ``wasmop push``.
"""

from wasmop.oci.artifact import ArtifactError, Descriptor
from wasmop.oci.auth import AuthConfigError, Credentials, DockerConfig
from wasmop.oci.client import PulledModule, RegistryClient, RegistryError, ResolvedImage
from wasmop.oci.reference import ImageReference, ReferenceError

__all__ = [
    "ArtifactError",
    "AuthConfigError",
    "Credentials",
    "Descriptor",
    "DockerConfig",
    "ImageReference",
    "PulledModule",
    "ReferenceError",
    "RegistryClient",
    "RegistryError",
    "ResolvedImage",
]
