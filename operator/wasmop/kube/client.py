"""Kubernetes API access: configuration, requests, errors, list-and-watch."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import yaml

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_PATH = "var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_DIR = Path("/") / SERVICE_ACCOUNT_PATH
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
# Where a host-process container's volumes are (Windows HostProcess containers' name for
# it; wasmop's system node sets it too): its service-account files are below it.
SANDBOX_ENV = "CONTAINER_SANDBOX_MOUNT_POINT"


def service_account_dir() -> Path:
    """The in-cluster service-account files: in the container, or in its sandbox."""
    sandbox = os.environ.get(SANDBOX_ENV)
    return Path(sandbox) / SERVICE_ACCOUNT_PATH if sandbox else SERVICE_ACCOUNT_DIR


MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


# What a YAML decoder refuses raw or reads as a line break (folded inside a quoted
# string): C1 controls, DEL, the two non-characters, and the Unicode line separators.
_YAML_UNSAFE = re.compile("[\u007f-\u009f\u2028\u2029\ufffe\uffff]")


def encode_body(body: Any) -> bytes:
    """A request body as JSON that an apply's YAML decoder reads back exactly.

    UTF-8 as it is, not ``\\u`` escapes throughout: the decoder refuses the surrogate
    pairs JSON escapes characters beyond U+FFFF into. But the few characters it refuses
    raw (or folds as line breaks) go as ``\\u`` escapes, which it decodes exactly.
    """
    text = json.dumps(body, ensure_ascii=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


class ApiError(Exception):
    """A non-2xx answer from the API server, with Kubernetes' own reason and message."""

    def __init__(self, status: int, reason: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK, ERROR; SYNCED from list_and_watch
    object: dict[str, Any]


def _inline(data: str | None) -> bytes | None:
    """A kubeconfig's inline ``*-data`` field (base64 of PEM) as PEM bytes."""
    return base64.b64decode(data) if data else None


@contextlib.contextmanager
def _as_files(*contents: bytes) -> Iterator[list[str]]:
    """Write key material to files only as long as ``ssl`` needs to read it (it cannot load
    a certificate chain from memory), in a private directory removed on exit."""
    with tempfile.TemporaryDirectory(prefix="wasmop-kube-") as directory:
        paths = []
        for index, content in enumerate(contents):
            path = Path(directory) / f"{index}.pem"
            path.touch(mode=0o600)
            path.write_bytes(content)
            paths.append(str(path))
        yield paths


@dataclass(frozen=True)
class KubeConfig:
    """Where the API server is and how to authenticate to it."""

    server: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # Inline PEM from a kubeconfig's *-data fields, kept in memory: never written to a file
    # that outlives building an SSL context.
    ca_data: bytes | None = field(default=None, repr=False)
    cert_data: bytes | None = field(default=None, repr=False)
    key_data: bytes | None = field(default=None, repr=False)
    token: str | None = None
    token_file: str | None = None
    insecure: bool = False
    namespace: str = "default"
    user: str = ""

    @classmethod
    def from_file(cls, path: Path | str, context: str | None = None) -> KubeConfig:
        path = Path(path)
        doc = yaml.safe_load(path.read_text())
        ctx_name = context or doc.get("current-context")
        contexts = {c["name"]: c["context"] for c in doc.get("contexts", [])}
        if ctx_name not in contexts:
            raise ValueError(f"{path}: context {ctx_name!r} not found")
        ctx = contexts[ctx_name]
        cluster = {c["name"]: c["cluster"] for c in doc.get("clusters", [])}[ctx["cluster"]]
        user = {u["name"]: u.get("user", {}) for u in doc.get("users", [])}[ctx["user"]]
        base = path.parent

        def rel(p: str | None) -> str | None:
            return str((base / p).resolve()) if p else None

        if "exec" in user or "auth-provider" in user:
            raise ValueError(
                f"{path}: user {ctx['user']!r} uses an exec/auth-provider plugin; wasmop needs"
                " a client certificate or token (e.g. a service-account kubeconfig)"
            )
        ca_data = _inline(cluster.get("certificate-authority-data"))
        cert_data = _inline(user.get("client-certificate-data"))
        key_data = _inline(user.get("client-key-data"))
        return cls(
            server=cluster["server"].rstrip("/"),
            # As in client-go, inline data overrides a file named beside it.
            ca_file=None if ca_data else rel(cluster.get("certificate-authority")),
            cert_file=None if cert_data else rel(user.get("client-certificate")),
            key_file=None if key_data else rel(user.get("client-key")),
            ca_data=ca_data,
            cert_data=cert_data,
            key_data=key_data,
            token=user.get("token"),
            token_file=rel(user.get("tokenFile")),
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
            namespace=ctx.get("namespace", "default"),
            user=ctx["user"],
        )

    @classmethod
    def in_cluster(cls) -> KubeConfig:
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = f"[{host}]"
        directory = service_account_dir()
        namespace_file = directory / "namespace"
        return cls(
            server=f"https://{host}:{port}",
            ca_file=str(directory / "ca.crt"),
            token_file=str(directory / "token"),
            namespace=namespace_file.read_text().strip() if namespace_file.exists() else "default",
            user="serviceaccount",
        )

    @classmethod
    def load(cls, path: Path | str | None = None) -> KubeConfig:
        """Explicit path, else $KUBECONFIG, else in-cluster, else the embedded cluster."""
        if path:
            return cls.from_file(path)
        if os.environ.get("KUBECONFIG"):
            return cls.from_file(os.environ["KUBECONFIG"].split(os.pathsep)[0])
        if os.environ.get("KUBERNETES_SERVICE_HOST") and service_account_dir().exists():
            return cls.in_cluster()
        from wasmop.cluster.layout import StateLayout

        return cls.from_file(StateLayout.default().admin_kubeconfig)

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context(
            cafile=self.ca_file, cadata=self.ca_data.decode("ascii") if self.ca_data else None
        )
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_data or self.key_data:
            cert = self.cert_data or Path(self.cert_file or "").read_bytes()
            key = self.key_data or Path(self.key_file or "").read_bytes()
            with _as_files(cert, key) as (cert_path, key_path):
                context.load_cert_chain(cert_path, key_path)
        elif self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def bearer_token(self) -> str | None:
        if self.token_file:
            return _token_from_file(self.token_file)
        return self.token


def api_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """``/api/v1/namespaces/ns/pods/name/status`` and friends."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [prefix]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


# Projected service-account tokens rotate (the kubelet renews them well before they
# expire): re-read the file now and then rather than on every request.
TOKEN_REREAD_S = 60.0
_tokens: dict[str, tuple[float, str]] = {}


def _token_from_file(path: str) -> str:
    now = time.monotonic()
    cached = _tokens.get(path)
    if cached is None or now - cached[0] > TOKEN_REREAD_S:
        cached = _tokens[path] = (now, Path(path).read_text().strip())
    return cached[1]


def _api_error(status: int, reason: str, text: str) -> ApiError:
    """The API server's own reason and message when the body is a Status object."""
    payload: Any = None
    if text[:1] == "{":
        with contextlib.suppress(ValueError):
            payload = json.loads(text)
    if isinstance(payload, dict):
        return ApiError(
            status, payload.get("reason", reason), payload.get("message", text), payload
        )
    return ApiError(status, reason, text[:500])


@dataclass
class Kube:
    """One API connection pool. Use as ``async with Kube(config) as kube``."""

    config: KubeConfig
    user_agent: str = "wasmop"
    max_connections: int = 50
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    async def __aenter__(self) -> Kube:
        self.session  # noqa: B018 - create eagerly
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self.config.ssl_context(), limit=self.max_connections
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": self.user_agent}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(
        self, content_type: str | None = None, accept: str = "application/json"
    ) -> dict[str, str]:
        headers = {"Accept": accept}
        token = self.config.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _url(self, path: str, params: Mapping[str, Any] | None) -> str:
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        return f"{self.config.server}{path}?{query}" if query else self.config.server + path

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float = 30.0,  # noqa: ASYNC109 - a per-request HTTP timeout, not a wait
    ) -> Any:
        data = None if body is None else encode_body(body)
        async with self.session.request(
            method,
            self._url(path, params),
            data=data,
            headers=self._headers(content_type if body is not None else None, accept),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            text = await response.text()
            if response.status >= 300:
                raise _api_error(response.status, response.reason or "", text)
            return json.loads(text) if text and text[0] in "{[" else text

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: dict[str, Any], **params: Any) -> Any:
        return await self.request("POST", path, body=body, params=params)

    async def replace(self, path: str, body: dict[str, Any]) -> Any:
        return await self.request("PUT", path, body=body)

    async def patch(
        self, path: str, body: Any, content_type: str = MERGE_PATCH, **params: Any
    ) -> Any:
        return await self.request(
            "PATCH", path, body=body, content_type=content_type, params=params
        )

    async def apply(
        self,
        path: str,
        body: dict[str, Any],
        field_manager: str,
        force: bool = True,
        **params: Any,
    ) -> Any:
        """Server-side apply: the idempotent way to own a set of fields. ``params`` such as
        ``dryRun="All"`` go into the query."""
        return await self.request(
            "PATCH",
            path,
            body=body,
            content_type=APPLY_PATCH,
            params={"fieldManager": field_manager, "force": "true" if force else None, **params},
        )

    async def delete(self, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
        return await self.request("DELETE", path, body=body, params=params)

    async def list(self, path: str, **params: Any) -> dict[str, Any]:
        return await self.get(path, **params)

    async def list_metadata(self, path: str, **params: Any) -> dict[str, Any]:
        """A list of the objects' metadata only (``PartialObjectMetadataList``): what a
        check for existence or a changed generation needs, without the objects' bytes."""
        return await self.request("GET", path, params=params, accept=METADATA_LIST)  # type: ignore[no-any-return]

    async def watch(
        self,
        path: str,
        resource_version: str | None = None,
        timeout_seconds: int = 300,
        on_open: Callable[[], None] | None = None,
        **params: Any,
    ) -> AsyncIterator[WatchEvent]:
        """One watch request. Raises ApiError for an error answer or ERROR event (410 when
        the version is too old) and WatchStreamError for a line that is no watch event."""
        query = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": timeout_seconds,
            **params,
        }
        async with self.session.get(
            self._url(path, query),
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30),
        ) as response:
            if response.status >= 300:
                raise _api_error(response.status, response.reason or "", await response.text())
            if on_open is not None:
                on_open()
            async for line in response.content:
                if not line.strip():
                    continue
                event = _watch_event(line)
                if event.type == "ERROR":
                    status = event.object
                    raise ApiError(
                        status.get("code", 500), status.get("reason", ""), status.get("message", "")
                    )
                yield event

    async def list_and_watch(
        self,
        path: str,
        *,
        known: dict[str, dict[str, Any]] | None = None,
        on_progress: Callable[[], None] | None = None,
        retry_delay: float = 0.5,
        max_retry_delay: float = 2.0,
        watch_timeout_s: int = 300,
        give_up: Callable[[BaseException], bool] | None = None,
        **params: Any,
    ) -> AsyncIterator[WatchEvent]:
        """An endless stream: every current object as ADDED, then changes, as a reflector
        does. After each (re)list comes one ``SYNCED`` event (no object): the consumer's
        view is complete.

        Disconnects and a garbled line resume the watch from the last version seen (the
        server sends again what followed it); 410 Gone and other errors relist. A relist
        yields DELETED for objects that went away meanwhile, judged against ``known``
        (uid -> object): a consumer that keeps that dict across restarts of its watch
        learns what it missed. ``on_progress`` is called whenever the API server answers
        (a list, a watch accepted or ended, an event or bookmark), for staleness checks.
        Failures in a row wait ``retry_delay`` doubling up to ``max_retry_delay``; a
        failed list for which ``give_up(exc)`` is true ends the stream by raising it.
        """
        known = {} if known is None else known
        heard = on_progress or _nothing
        failures = 0

        async def pause(what: str, exc: BaseException, then: str) -> None:
            nonlocal failures
            delay = min(retry_delay * 2**failures, max_retry_delay)
            failures += 1
            log.warning("%s %s failed: %s; %s in %.1f s", what, path, exc, then, delay)
            await asyncio.sleep(delay)

        while True:
            try:
                listing = await self.list(path, **params)
                version = listing["metadata"]["resourceVersion"]
                current = {o["metadata"]["uid"]: o for o in listing.get("items", [])}
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                if give_up is not None and give_up(exc):
                    raise
                await pause("list", exc, "retrying")
                continue
            except (ValueError, KeyError, TypeError) as exc:
                await pause("list", _garbled(exc), "retrying")
                continue
            for uid, obj in list(known.items()):
                if uid not in current:
                    del known[uid]
                    yield WatchEvent("DELETED", obj)
            for uid, obj in current.items():
                event_type = "ADDED" if uid not in known else "MODIFIED"
                known[uid] = obj
                yield WatchEvent(event_type, obj)
            heard()  # once the consumer has taken in the listing
            yield WatchEvent("SYNCED", {"metadata": {"resourceVersion": version}})
            while True:  # watch from `version` until a relist is due
                try:
                    async for event in self.watch(
                        path, version, watch_timeout_s, on_open=heard, **params
                    ):
                        heard()
                        failures = 0
                        version = event.object["metadata"]["resourceVersion"]
                        if event.type == "BOOKMARK":
                            continue
                        uid = event.object["metadata"]["uid"]
                        if event.type == "DELETED":
                            known.pop(uid, None)
                        else:
                            known[uid] = event.object
                        yield event
                    heard()  # the server ended the watch at its timeout: resume
                except ApiError as exc:
                    if exc.gone:
                        log.info("watch %s: %s; relisting", path, exc)
                    else:
                        await pause("watch", exc, "relisting")
                    break
                except WatchStreamError as exc:
                    await pause("watch", exc, f"resuming from version {version}")
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    await pause("watch", exc, f"resuming from version {version}")


class WatchStreamError(ValueError):
    """A line in a watch stream that is no watch event (cut short, corrupted)."""


def _garbled(exc: BaseException) -> WatchStreamError:
    return WatchStreamError(f"unexpected answer ({type(exc).__name__}: {exc})")


def _watch_event(line: bytes) -> WatchEvent:
    """One line of a watch stream, checked for what the consumers rely on."""
    try:
        event = json.loads(line)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise WatchStreamError(f"not JSON: {line[:200]!r}") from exc
    kind = event.get("type") if isinstance(event, dict) else None
    obj = event.get("object") if isinstance(event, dict) else None
    if not isinstance(kind, str) or not isinstance(obj, dict):
        raise WatchStreamError(f"not a watch event: {line[:200]!r}")
    if kind != "ERROR":
        meta = obj.get("metadata")
        needed = ("resourceVersion",) if kind == "BOOKMARK" else ("resourceVersion", "uid")
        if not isinstance(meta, dict) or not all(isinstance(meta.get(k), str) for k in needed):
            raise WatchStreamError(f"{kind} event without {' and '.join(needed)}: {line[:200]!r}")
    return WatchEvent(kind, obj)


def _nothing() -> None:
    pass
