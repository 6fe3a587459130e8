"""A small client of the OCI distribution API: resolve a reference, pull a module by
digest, push a module as a wasm artifact.

Only what wasm modules need: manifests (image manifests and indexes), blobs, monolithic
uploads, Basic and Bearer (token) authentication, redirects to blob storage. Plain
HTTP goes only to a registry on loopback (the embedded cluster's); every other registry
is HTTPS with the system's certificate authorities.

Every byte is checked against its digest before anyone sees it: a manifest fetched by
digest must hash to that digest, a manifest fetched by tag to the digest the registry
reports, and a blob to its descriptor's digest and size. A blob larger than the caller's
limit is refused before its body is read (and again while reading, should the registry
lie about its size).

Where a connection may go is the caller's to decide: a
:data:`wasmop.netguard.AddressCheck` judges the registry's address (literal or resolved)
before any connection, for every host on the way (token realm and redirect targets
included). The operator and the node agents pass the cluster's address policy (the one
that guards module URLs) with the registries an administrator trusts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp

from wasmop.netguard import AddressCheck, CheckedResolver, refusal_in
from wasmop.oci.artifact import (
    MANIFEST_ACCEPT,
    MAX_MANIFEST_BYTES,
    OCI_MANIFEST,
    ArtifactError,
    Descriptor,
    select_module,
    sha256_digest,
    wasm_artifact,
)
from wasmop.oci.auth import Challenge, Credentials, DockerConfig, parse_challenges
from wasmop.oci.cache import ContentStore
from wasmop.oci.reference import ImageReference, is_loopback_host

__all__ = [
    "AddressCheck",
    "PulledModule",
    "RegistryClient",
    "RegistryClients",
    "RegistryError",
    "ResolvedImage",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
READ_CHUNK = 256 * 1024
MAX_REDIRECTS = 5
MAX_TOKEN_BYTES = 1 * 2**20
USER_AGENT = "wasmop-oci/1"
# Index -> manifest is one hop; an index of indexes is not a wasm artifact.
MAX_INDEX_DEPTH = 1


class RegistryError(Exception):
    """Pulling or pushing failed; ``reason`` is CamelCase for a status, ``transient``
    says whether trying again later may succeed."""

    def __init__(
        self, reason: str, message: str, *, transient: bool = False, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message  # what a status may show
        self.transient = transient
        self.detail = detail  # what only the administrator's log shows


# One text for every way a registry can be out of reach. Which way a connection failed
# (refused, reset, timed out, no such name) or what status a server answered would make a
# Pod's or a function's status a scanner of the hosts and ports a tenant names, as a module
# URL's fetch error would (ModuleFetchFailed); the cause goes to the log (``detail``).
UNREACHABLE = (
    "the registry could not be reached or is not serving (connection failed or timed out, "
    "or it answered 429 or 5xx); the pull is tried again"
)


# What a refused name resolved to stays in the log: a tenant naming hosts would otherwise
# read the platform's internal DNS from its status.
NOT_ALLOWED = (
    "the registry's name resolves to an address registries may not be reached at "
    "(loopback, link-local, private, metadata or cluster ranges), and the administrator "
    "did not name it with --registry-allow"
)


def _not_allowed(ref: ImageReference, refused: BaseException) -> RegistryError:
    return RegistryError("RegistryNotAllowed", f"{ref.registry}: {NOT_ALLOWED}",
                         detail=str(refused))  # fmt: skip


def _unavailable(ref: ImageReference, what: str, exc: BaseException) -> RegistryError:
    detail = f"{what}: {type(exc).__name__}: {str(exc) or type(exc).__name__}"[:400]
    return RegistryError("RegistryUnavailable", f"{ref.registry}: {UNREACHABLE}",
                         transient=True, detail=detail)  # fmt: skip


@dataclass(frozen=True)
class ResolvedImage:
    """A reference resolved to content: the manifest digest and the module's layer."""

    reference: ImageReference  # as asked for
    digest: str  # of the manifest the reference names (an index's, if it is one)
    layer: Descriptor

    @property
    def pinned(self) -> ImageReference:
        """The reference by digest only: what a Pod is given."""
        return self.reference.pinned(self.digest)


@dataclass(frozen=True)
class PulledModule:
    image: ResolvedImage
    data: bytes
    from_store: bool = False  # the module came from the content store, not the registry


@dataclass
class _Token:
    header: str
    expires: float


class RegistryClient:
    """One client per process (or per command); ``close`` when done.

    ``credentials`` are looked up by registry ``host[:port]``; ``check`` guards every
    connection (None: no check, for the command line, where the user picks the host).
    """

    def __init__(
        self,
        *,
        credentials: DockerConfig | None = None,
        check: AddressCheck | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.credentials = credentials or DockerConfig()
        self._check = check
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=CONNECT_TIMEOUT_S)
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[tuple[str, str], _Token] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            resolver = CheckedResolver(self._check) if self._check is not None else None
            connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, limit=16)
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,  # no proxy from the environment
                auto_decompress=False,
                headers={"User-Agent": self._user_agent, "Accept-Encoding": "identity"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            await asyncio.sleep(0)

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # --- pull -----------------------------------------------------------------------

    async def resolve(
        self, ref: ImageReference, store: ContentStore | None = None
    ) -> ResolvedImage:
        """The manifest ``ref`` names (by tag: its digest now) and the module's layer.

        An index is followed to its one wasm manifest; the digest kept is the index's,
        so the reference pins exactly what was resolved. With a ``store``, manifests
        fetched by digest are taken from it and kept in it.
        """
        data, digest, content_type = await self._manifest(ref, ref.reference, store)
        top = digest
        for depth in range(MAX_INDEX_DEPTH + 1):
            try:
                selection = select_module(data, content_type)
            except ArtifactError as exc:
                raise RegistryError(exc.reason, f"{ref}: {exc.message}") from None
            if selection.layer is not None:
                return ResolvedImage(ref, top, selection.layer)
            assert selection.manifest is not None
            if depth == MAX_INDEX_DEPTH:
                break
            data, _, content_type = await self._manifest(ref, selection.manifest.digest, store)
        raise RegistryError("UnsupportedArtifact", f"{ref}: an index of indexes is not a module")

    async def fetch_module(
        self, image: ResolvedImage, max_bytes: int, store: ContentStore | None = None
    ) -> bytes:
        """The module layer's bytes, verified against its digest and size (from the
        ``store`` if it has them; put there once fetched)."""
        return (await self._module(image, max_bytes, store))[0]

    async def pull(
        self, ref: ImageReference, max_bytes: int, store: ContentStore | None = None
    ) -> PulledModule:
        image = await self.resolve(ref, store)
        data, from_store = await self._module(image, max_bytes, store)
        return PulledModule(image, data, from_store)

    async def _module(
        self, image: ResolvedImage, max_bytes: int, store: ContentStore | None
    ) -> tuple[bytes, bool]:
        layer = image.layer
        ref = image.reference
        if layer.size > max_bytes:
            raise RegistryError(
                "ModuleTooLarge",
                f"{ref}: the module is {layer.size} bytes; the limit is {max_bytes}",
            )
        if store is not None:
            cached = await asyncio.to_thread(store.get, layer.digest)
            if cached is not None and len(cached) == layer.size:
                return cached, True
        url = f"{ref.api_base}/v2/{ref.repository}/blobs/{layer.digest}"
        data = await self._read(ref, url, scope=f"repository:{ref.repository}:pull",
                                limit=max_bytes, what="the module")  # fmt: skip
        if len(data) != layer.size or sha256_digest(data) != layer.digest:
            raise RegistryError(
                "DigestMismatch",
                f"{ref}: the registry sent {len(data)} bytes that do not match the module's "
                f"digest {layer.digest} ({layer.size} bytes); refused",
            )
        if store is not None:
            await asyncio.to_thread(store.put, layer.digest, data)
        return data, False

    async def _manifest(
        self, ref: ImageReference, reference: str, store: ContentStore | None = None
    ) -> tuple[bytes, str, str]:
        """(bytes, digest, content type) of one manifest, verified."""
        by_digest = reference.startswith("sha256:")
        if store is not None and by_digest:
            cached = await asyncio.to_thread(store.get, reference)
            if cached is not None:
                return cached, reference, ""
        url = f"{ref.api_base}/v2/{ref.repository}/manifests/{reference}"
        scope = f"repository:{ref.repository}:pull"
        async with self._exchange(
            "GET", ref, url, scope=scope, headers={"Accept": MANIFEST_ACCEPT}
        ) as response:
            if response.status == 404:
                raise RegistryError(
                    "ImageNotFound",
                    f"{ref.name}:{reference} does not exist in the registry "
                    f"({await _error_code(response)})",
                    transient=True,
                )
            await _expect(response, ref, "the manifest", (200,))
            data = await _read_limited(response, MAX_MANIFEST_BYTES, ref, "the manifest")
            content_type = response.headers.get("Content-Type", "")
            reported = response.headers.get("Docker-Content-Digest")
        digest = sha256_digest(data)
        expected = reference if by_digest else reported
        if expected is not None and expected != digest:
            raise RegistryError(
                "DigestMismatch",
                f"{ref}: the manifest hashes to {digest}, not {expected}; refused",
            )
        if store is not None:
            await asyncio.to_thread(store.put, digest, data)
        return data, digest, content_type

    # --- push -----------------------------------------------------------------------

    async def push_module(
        self,
        ref: ImageReference,
        module: bytes,
        *,
        created: str,
        annotations: Mapping[str, str] | None = None,
    ) -> str:
        """Push ``module`` as a wasm artifact under ``ref``'s tag; returns the manifest
        digest. Blobs the registry has already are not sent again."""
        if ref.tag is None:
            raise RegistryError("InvalidReference", f"{ref}: push needs a tag")
        config, manifest = wasm_artifact(module, created=created, annotations=annotations)
        await self.push_blob(ref, config)
        await self.push_blob(ref, module)
        return await self.push_manifest(ref, manifest, OCI_MANIFEST)

    async def push_blob(self, ref: ImageReference, data: bytes) -> str:
        digest = sha256_digest(data)
        scope = f"repository:{ref.repository}:pull,push"
        base = f"{ref.api_base}/v2/{ref.repository}/blobs"
        async with self._exchange("HEAD", ref, f"{base}/{digest}", scope=scope) as response:
            if response.status == 200:
                return digest
        async with self._exchange("POST", ref, f"{base}/uploads/", scope=scope) as response:
            await _expect(response, ref, "starting an upload", (202,))
            location = response.headers.get("Location")
        if not location:
            raise RegistryError("RegistryProtocolError", f"{ref}: upload without a Location")
        upload = urljoin(f"{base}/uploads/", location)
        upload += ("&" if "?" in upload else "?") + urlencode({"digest": digest})
        headers = {"Content-Type": "application/octet-stream"}
        async with self._exchange(
            "PUT", ref, upload, scope=scope, headers=headers, data=data
        ) as response:
            await _expect(response, ref, "uploading a blob", (201,))
        return digest

    async def push_manifest(self, ref: ImageReference, manifest: bytes, media_type: str) -> str:
        digest = sha256_digest(manifest)
        url = f"{ref.api_base}/v2/{ref.repository}/manifests/{ref.tag or digest}"
        async with self._exchange(
            "PUT", ref, url,
            scope=f"repository:{ref.repository}:pull,push",
            headers={"Content-Type": media_type}, data=manifest,
        ) as response:  # fmt: skip
            await _expect(response, ref, "the manifest upload", (201,))
            reported = response.headers.get("Docker-Content-Digest")
        if reported is not None and reported != digest:
            raise RegistryError(
                "DigestMismatch", f"{ref}: the registry stored the manifest as {reported}"
            )
        return digest

    # --- HTTP -----------------------------------------------------------------------

    def _guard(self, url: str) -> None:
        """Refuse what can be judged without a lookup: the scheme and an address literal."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme == "http" and not is_loopback_host(host):
            raise RegistryError(
                "RegistryNotAllowed", f"{parts.netloc}: plain HTTP only to a loopback registry"
            )
        if parts.scheme not in ("http", "https"):
            raise RegistryError("RegistryNotAllowed", f"{url[:100]}: not an http(s) URL")
        if self._check is None:
            return
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        port = parts.port or (443 if parts.scheme == "https" else 80)
        why = self._check(host, port, str(address))
        if why is not None:
            raise RegistryError("RegistryNotAllowed", f"{parts.netloc}: {why}")

    def _exchange(
        self,
        method: str,
        ref: ImageReference,
        url: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> _Exchange:
        return _Exchange(self, method, ref, url, scope, dict(headers or {}), data)

    async def _send(
        self,
        method: str,
        ref: ImageReference,
        url: str,
        scope: str,
        headers: dict[str, str],
        data: bytes | None,
    ) -> aiohttp.ClientResponse:
        """One request with authentication and redirects; the caller releases it."""
        registry = ref.api_base
        authorization = self._cached_authorization(registry, scope)
        challenged = False
        for _ in range(MAX_REDIRECTS + 1):
            self._guard(url)
            sent = dict(headers)
            same_host = urlsplit(url).netloc == urlsplit(registry).netloc
            if authorization and same_host:  # credentials never follow a redirect away
                sent["Authorization"] = authorization
            try:
                response = await self._client().request(
                    method, url, headers=sent, data=data, allow_redirects=False,
                    timeout=self._timeout,
                )  # fmt: skip
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                refused = refusal_in(exc)
                if refused is not None:
                    raise _not_allowed(ref, refused) from None
                raise _unavailable(ref, f"{method} {_shown(url)}", exc) from None
            if response.status == 401 and same_host and not challenged:
                challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
                response.release()
                authorization = await self._answer(challenges, ref, scope)
                challenged = True
                continue
            if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                url = urljoin(url, response.headers["Location"])
                response.release()
                if response.status == 303:
                    method, data = "GET", None
                continue
            return response
        raise RegistryError("RegistryProtocolError", f"{ref}: more than {MAX_REDIRECTS} redirects")

    def _cached_authorization(self, registry: str, scope: str) -> str | None:
        token = self._tokens.get((registry, scope))
        if token is not None and token.expires > time.monotonic():
            return token.header
        return None

    async def _answer(self, challenges: list[Challenge], ref: ImageReference, scope: str) -> str:
        """The Authorization header that answers a 401's challenges."""
        credentials = self.credentials.for_registry(ref.registry)
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None and bearer.params.get("realm"):
            header, lifetime = await self._bearer_token(bearer, ref, scope, credentials)
        elif any(c.scheme == "basic" for c in challenges) and credentials is not None:
            header, lifetime = credentials.basic(), 3600.0
        else:
            raise RegistryError(
                "RegistryUnauthorized",
                f"{ref.registry} requires credentials"
                + ("" if credentials is None else " of a kind this client does not speak")
                + "; name a dockerconfigjson Secret in spec.module.imagePullSecrets",
                transient=True,
            )
        self._tokens[(ref.api_base, scope)] = _Token(header, time.monotonic() + lifetime)
        return header

    async def _bearer_token(
        self,
        challenge: Challenge,
        ref: ImageReference,
        scope: str,
        credentials: Credentials | None,
    ) -> tuple[str, float]:
        realm = challenge.params["realm"]
        query = {"scope": challenge.params.get("scope") or scope}
        if challenge.params.get("service"):
            query["service"] = challenge.params["service"]
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        self._guard(url)
        headers = {} if credentials is None else {"Authorization": credentials.basic()}
        try:
            async with self._client().get(
                url, headers=headers, allow_redirects=False, timeout=self._timeout
            ) as response:
                if response.status in (401, 403):
                    raise RegistryError(
                        "RegistryUnauthorized",
                        f"{ref.registry}'s token service refused the credentials "
                        f"({response.status})",
                        transient=True,
                    )
                await _expect(response, ref, "the token request", (200,))
                body = await _read_limited(response, MAX_TOKEN_BYTES, ref, "the token")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            refused = refusal_in(exc)
            if refused is not None:
                raise _not_allowed(ref, refused) from None
            raise _unavailable(ref, f"token from {_shown(realm)}", exc) from None
        try:
            document = json.loads(body)
            token = document.get("token") or document.get("access_token")
            lifetime = float(document.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token, lifetime = None, 0.0
        if not isinstance(token, str) or not token:
            raise RegistryError("RegistryProtocolError", f"{ref.registry}: no token in the answer")
        # Renew a little early; never trust a lifetime below a few seconds.
        return f"Bearer {token}", max(5.0, lifetime - 10.0)

    async def _read(
        self, ref: ImageReference, url: str, *, scope: str, limit: int, what: str
    ) -> bytes:
        async with self._exchange("GET", ref, url, scope=scope) as response:
            if response.status == 404:
                raise RegistryError(
                    "ImageNotFound", f"{ref}: {what} is not in the registry", transient=True
                )
            await _expect(response, ref, what, (200,))
            return await _read_limited(response, limit, ref, what)


class _Exchange:
    """``async with`` one request: sent with auth and redirects, released on exit."""

    def __init__(
        self,
        client: RegistryClient,
        method: str,
        ref: ImageReference,
        url: str,
        scope: str,
        headers: dict[str, str],
        data: bytes | None,
    ) -> None:
        self._args = (method, ref, url, scope, headers, data)
        self._client = client
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        self._response = await self._client._send(*self._args)
        return self._response

    async def __aexit__(self, *_: object) -> None:
        if self._response is not None:
            self._response.release()


def _shown(url: str) -> str:
    """A URL for a message: scheme, host and path, never a query (tokens travel there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


async def _error_code(response: aiohttp.ClientResponse) -> str:
    """The registry's error code (MANIFEST_UNKNOWN, NAME_UNKNOWN, ...) or the status."""
    try:
        body = await response.content.read(64 * 1024)
        errors = json.loads(body).get("errors") or []
        codes = [str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")]
    except (ValueError, AttributeError, aiohttp.ClientError, TimeoutError):
        codes = []
    return ", ".join(codes) or f"HTTP {response.status}"


async def _expect(
    response: aiohttp.ClientResponse, ref: ImageReference, what: str, ok: tuple[int, ...]
) -> None:
    status = response.status
    if status in ok:
        return
    detail = await _error_code(response)
    if status in (401, 403):
        raise RegistryError(
            "RegistryUnauthorized",
            f"{ref.registry} refused {what} for {ref.repository} ({detail}); check the "
            "credentials in spec.module.imagePullSecrets",
            transient=True,
        )
    if status == 429 or status >= 500:
        raise RegistryError("RegistryUnavailable", f"{ref.registry}: {UNREACHABLE}",
                            transient=True, detail=f"{what}: answered {detail}")  # fmt: skip
    raise RegistryError("RegistryRequestFailed", f"{ref.registry} refused {what}: {detail}")


async def _read_limited(
    response: aiohttp.ClientResponse, limit: int, ref: ImageReference, what: str
) -> bytes:
    if (response.content_length or 0) > limit:
        raise RegistryError(
            "ModuleTooLarge", f"{ref}: {what} is {response.content_length} bytes; limit {limit}"
        )
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.content.iter_chunked(READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise RegistryError("ModuleTooLarge", f"{ref}: {what} is over {limit} bytes")
            chunks.append(chunk)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise _unavailable(ref, f"reading {what} of {ref}", exc) from None
    return b"".join(chunks)


class RegistryClients:
    """A process's registry clients under one address check: a shared anonymous client
    (its connections and tokens reused), and a short-lived one for each pull that brings
    credentials (a tenant's Secret, held no longer than the pull)."""

    def __init__(self, check: AddressCheck | None, user_agent: str) -> None:
        self._check = check
        self._user_agent = user_agent
        self._anonymous = RegistryClient(check=check, user_agent=user_agent)

    @contextlib.asynccontextmanager
    async def client(self, credentials: DockerConfig | None) -> AsyncIterator[RegistryClient]:
        if credentials is None:
            yield self._anonymous
            return
        async with RegistryClient(
            credentials=credentials, check=self._check, user_agent=self._user_agent
        ) as client:
            yield client

    async def close(self) -> None:
        await self._anonymous.close()
