"""Who may use a node's kubelet API, decided as the kubelet decides it.

Authentication: a client certificate the cluster CA signed (the TLS layer verified it;
the user is its CN, the groups its O), else a bearer token the API server vouches for in a
TokenReview; anything else is 401. Authorization: a SubjectAccessReview for the
request's attributes, the kubelet's mapping (``nodes/<subresource>`` of this node, the
verb from the HTTP method); denied is 403 with the kubelet's message. Answers are cached
as the kubelet caches them (authentication 2 min, authorization 5 min allowed and 30 s
denied), so metrics-server scraping every 15 s costs no API call per scrape.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

AUTHN_TTL_S = 120.0
AUTHZ_ALLOWED_TTL_S = 300.0
AUTHZ_DENIED_TTL_S = 30.0
CACHE_ENTRIES = 1024

VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
         "DELETE": "delete"}  # fmt: skip


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Attributes:
    """What a request asks of the node, as a SubjectAccessReview names it."""

    verb: str
    subresources: tuple[str, ...]  # any one allowed is enough (fine-grained, then proxy)
    node: str
    path: str


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def request_attributes(method: str, path: str, node: str) -> Attributes:
    """The kubelet's mapping of a request to ``nodes/<subresource>`` (with fine-grained
    authorization: /pods and /healthz first as themselves, then as proxy)."""
    verb = VERBS.get(method.upper(), method.lower())
    if _under(path, "/stats"):
        subresources: tuple[str, ...] = ("stats",)
    elif _under(path, "/metrics"):
        subresources = ("metrics",)
    elif _under(path, "/logs"):
        subresources = ("log",)
    elif _under(path, "/pods") or _under(path, "/runningpods"):
        subresources = ("pods", "proxy")
    elif _under(path, "/healthz"):
        subresources = ("healthz", "proxy")
    else:
        subresources = ("proxy",)
    return Attributes(verb, subresources, node, path)


def user_from_certificate(peercert: dict[str, Any] | None) -> User | None:
    """The user of a verified client certificate (``ssl`` getpeercert() form)."""
    if not peercert:
        return None
    name, groups = "", []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                name = value
            elif key == "organizationName":
                groups.append(value)
    return User(name, tuple(groups)) if name else None


def forbidden_message(user: User, attributes: Attributes) -> str:
    """The kubelet's words for a denied request."""
    return (
        f"Forbidden (user={user.name}, verb={attributes.verb}, resource=nodes,"
        f" subresource(s)={list(attributes.subresources)})\n"
    )


class AuthError(Exception):
    """Refused: ``status`` is 401 (who are you?) or 403 (not you)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# An API call: (path, body) -> response body. The node's own client, in the agent.
Create = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class _Cache:
    ttl_entries: dict[Any, tuple[float, Any]] = field(default_factory=dict)

    def get(self, key: Any) -> Any:
        hit = self.ttl_entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            self.ttl_entries.pop(key, None)
            return None
        return hit[1]

    def put(self, key: Any, value: Any, ttl: float) -> None:
        if len(self.ttl_entries) >= CACHE_ENTRIES:
            self.ttl_entries.pop(next(iter(self.ttl_entries)))
        self.ttl_entries[key] = (time.monotonic() + ttl, value)


class KubeletAuth:
    """Authenticates and authorizes requests to one node's kubelet API."""

    def __init__(self, node: str, create: Create) -> None:
        self.node = node
        self._create = create
        self._tokens = _Cache()
        self._decisions = _Cache()

    async def check(
        self, method: str, path: str, peercert: dict[str, Any] | None, authorization: str
    ) -> User:
        """The authorized user, or AuthError (401/403) saying why not."""
        user = user_from_certificate(peercert)
        if user is None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError(401, "Unauthorized")
            user = await self.authenticate_token(token.strip())
        attributes = request_attributes(method, path, self.node)
        for subresource in attributes.subresources:
            if await self.allowed(user, attributes, subresource):
                return user
        raise AuthError(403, forbidden_message(user, attributes))

    async def authenticate_token(self, token: str) -> User:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._tokens.get(key)
        if cached is not None:
            if isinstance(cached, User):
                return cached
            raise AuthError(401, "Unauthorized")
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        status = (await self._create("/apis/authentication.k8s.io/v1/tokenreviews", review)).get(
            "status"
        ) or {}
        if not status.get("authenticated"):
            self._tokens.put(key, False, AUTHN_TTL_S)
            raise AuthError(401, "Unauthorized")
        info = status.get("user") or {}
        user = User(
            info.get("username", ""),
            tuple(info.get("groups") or ()),
            info.get("uid", ""),
            tuple(sorted((k, tuple(v)) for k, v in (info.get("extra") or {}).items())),
        )
        self._tokens.put(key, user, AUTHN_TTL_S)
        return user

    async def allowed(self, user: User, attributes: Attributes, subresource: str) -> bool:
        key = (user, attributes.verb, subresource)
        cached = self._decisions.get(key)
        if cached is not None:
            return bool(cached)
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user.name,
                "groups": list(user.groups),
                "uid": user.uid,
                "extra": {k: list(v) for k, v in user.extra},
                "resourceAttributes": {
                    "verb": attributes.verb,
                    "group": "",
                    "version": "v1",
                    "resource": "nodes",
                    "subresource": subresource,
                    "name": self.node,
                },
            },
        }
        status = (
            await self._create("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        ).get("status") or {}
        allowed = bool(status.get("allowed"))
        self._decisions.put(key, allowed, AUTHZ_ALLOWED_TTL_S if allowed else AUTHZ_DENIED_TTL_S)
        return allowed
