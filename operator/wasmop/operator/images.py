"""``spec.module.image`` on the operator's side: from a reference to a digest Pods pull.

A tag is resolved once per spec: the digest goes into the revision (``status.revisions``,
with the reference it came from), and while the spec names the same image and version
that digest is used again, so resyncs send nothing to the registry and a rollback to an
earlier version returns to the digest it ran, even after the tag moved. A reference that
pins a digest is used as it is.

The module is fetched (by digest, verified, within the runtime's ``moduleSize``) only
when its verdict is not known yet; what is known about a pinned image (its layer and the
module's digest) is remembered, so a resync of a validated function costs no request.
Pull credentials come from the dockerconfigjson Secrets the spec names, read with a
``get`` on each (the namespace grants that per Secret; the operator reads no other).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.oci import (
    AuthConfigError,
    DockerConfig,
    ImageReference,
    ReferenceError,
    RegistryError,
)
from wasmop.oci.auth import docker_config_from_secret
from wasmop.oci.client import RegistryClients
from wasmop.oci.policy import RegistryPolicy
from wasmop.operator.owned_objects import ImageModule, module_digest
from wasmop.operator.spec import WasmFunction, WasmRuntime
from wasmop.operator.status import Revision, pinned_image
from wasmop.runtime import ModuleError
from wasmop.runtime.loader import decode_module_bytes

__all__ = ["ImageResolver", "ImageUnavailable", "ResolvedModule"]

log = logging.getLogger(__name__)

USER_AGENT = "wasmop-operator"
REMEMBERED_IMAGES = 1024


class ImageUnavailable(Exception):
    """The image cannot be used now; ``permanent`` ones make the function Invalid (until
    the spec or the registry's content changes), the others Pending."""

    def __init__(self, reason: str, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True)
class ResolvedModule:
    """The module of an image: what Pods pull, and its bytes when they had to be fetched."""

    module: ImageModule
    source: str  # spec.module.image as written
    data: bytes | None  # None: the verdict on this digest is known, nothing was fetched


@dataclass(frozen=True)
class _Known:
    layer_digest: str
    layer_size: int
    module_digest: str


class ImageResolver:
    """Resolves functions' images; one per operator, ``close`` when it stops."""

    def __init__(self, kube: Kube, policy: RegistryPolicy | None = None) -> None:
        self.kube = kube
        self.policy = policy or RegistryPolicy()
        self._clients = RegistryClients(self.policy.check, USER_AGENT)
        self._known: OrderedDict[str, _Known] = OrderedDict()

    async def close(self) -> None:
        await self._clients.close()

    async def resolve(
        self,
        function: WasmFunction,
        runtime: WasmRuntime,
        history: Iterable[Revision],
        has_verdict: Callable[[str], bool],
    ) -> ResolvedModule:
        """The image by digest for this spec, and the module's bytes unless
        ``has_verdict(module digest)``. Raises ImageUnavailable."""
        spec = function.spec.module
        assert spec.image is not None
        source = spec.image
        try:
            ref = ImageReference.parse(source)
        except ReferenceError as exc:
            raise ImageUnavailable("InvalidImage", str(exc), permanent=True) from None
        remembered = pinned_image(history, source, function.spec.version)
        pinned = ImageReference.parse(remembered) if remembered else None
        if pinned is None and ref.digest is not None:
            pinned = ref.pinned(ref.digest)
        limit = runtime.spec.maximums.module_bytes
        known = self._known.get(str(pinned)) if pinned is not None else None
        if pinned is not None and known is not None and has_verdict(known.module_digest):
            self._known.move_to_end(str(pinned))
            module = self._module(pinned, known, spec.pull_secrets, limit)
            return ResolvedModule(module, source, None)
        credentials = await self._credentials(function)
        try:
            async with self._clients.client(credentials) as client:
                image = await client.resolve(pinned or ref)
                if image.layer.size > limit:
                    raise RegistryError(
                        "ModuleTooLarge",
                        f"{ref}: the module is {image.layer.size} bytes, above WasmRuntime "
                        f"{runtime.name}'s moduleSize ({limit} bytes)",
                    )
                data = await client.fetch_module(image, limit)
        except RegistryError as exc:
            log.info("image of %s/%s: %s: %s%s", function.namespace, function.name,
                     exc.reason, exc.message, f" ({exc.detail})" if exc.detail else "")  # fmt: skip
            raise ImageUnavailable(exc.reason, exc.message, permanent=not exc.transient) from None
        try:
            wasm, _ = decode_module_bytes(data, limit)
        except ModuleError:
            wasm = data  # the module check says what is wrong with it
        found = _Known(image.layer.digest, image.layer.size, module_digest(wasm))
        self._remember(str(image.pinned), found)
        module = self._module(image.pinned, found, spec.pull_secrets, limit)
        return ResolvedModule(module, source, wasm)

    def _module(
        self, pinned: ImageReference, known: _Known, secrets: tuple[str, ...], limit: int
    ) -> ImageModule:
        return ImageModule(str(pinned), known.module_digest, secrets, limit)

    def _remember(self, pinned: str, known: _Known) -> None:
        self._known[pinned] = known
        self._known.move_to_end(pinned)
        while len(self._known) > REMEMBERED_IMAGES:
            self._known.popitem(last=False)

    async def _credentials(self, function: WasmFunction) -> DockerConfig | None:
        names = function.spec.module.pull_secrets
        if not names:
            return None
        configs = []
        for name in names:
            path = api_path("v1", "secrets", function.namespace, name)
            try:
                secret = await self.kube.get(path)
            except ApiError as exc:
                if exc.not_found:
                    raise ImageUnavailable(
                        "PullSecretNotFound",
                        f"Secret {function.namespace}/{name} (spec.module.imagePullSecrets) "
                        "does not exist",
                        permanent=False,
                    ) from None
                if exc.status == 403:
                    raise ImageUnavailable(
                        "PullSecretNotReadable",
                        f"the operator may not read Secret {function.namespace}/{name}; grant "
                        f"it that one Secret: `kubectl -n {function.namespace} create role "
                        f"wasmop-pull-{name} --verb=get --resource=secrets --resource-name="
                        f"{name}` and `kubectl -n {function.namespace} create rolebinding "
                        f"wasmop-pull-{name} --role=wasmop-pull-{name} "
                        "--serviceaccount=wasm-operators:wasmop-operator`",
                        permanent=False,
                    ) from None
                raise
            try:
                configs.append(docker_config_from_secret(secret, f"{function.namespace}/{name}"))
            except AuthConfigError as exc:
                raise ImageUnavailable("InvalidPullSecret", str(exc), permanent=True) from None
        return DockerConfig.merged(configs)
