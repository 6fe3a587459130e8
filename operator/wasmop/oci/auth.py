"""Registry credentials: Docker config files (``.dockerconfigjson`` Secrets) and the
``WWW-Authenticate`` challenges a registry answers with.

Pure functions: which username and password a config holds for a registry, and what a
challenge asks for. The HTTP exchange that uses them is in :mod:`wasmop.oci.client`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "AuthConfigError",
    "Challenge",
    "Credentials",
    "DockerConfig",
    "docker_config_from_secret",
    "parse_challenges",
]

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")
# The Secret types that hold a Docker config, and the key each keeps it under.
SECRET_KEYS = {
    "kubernetes.io/dockerconfigjson": ".dockerconfigjson",
    "kubernetes.io/dockercfg": ".dockercfg",
}


class AuthConfigError(ValueError):
    """A Docker config cannot be read; the message never quotes a secret."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def _registry_key(key: str) -> str:
    """``https://host:port/v1/`` and ``host:port`` both name ``host:port``."""
    key = key.strip()
    if "://" in key:
        key = urlsplit(key).netloc
    return key.split("/", 1)[0].lower()


@dataclass(frozen=True)
class DockerConfig:
    """The ``auths`` of a Docker config: credentials by registry ``host[:port]``."""

    auths: Mapping[str, Credentials] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes | str) -> DockerConfig:
        """From a ``config.json`` / ``.dockerconfigjson`` (or an old ``.dockercfg``)."""
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise AuthConfigError("the registry credentials are not valid JSON") from None
        if not isinstance(document, Mapping):
            raise AuthConfigError("the registry credentials are not a JSON object")
        auths = document.get("auths", document)  # .dockercfg has no "auths" level
        if not isinstance(auths, Mapping):
            raise AuthConfigError('"auths" in the registry credentials is not an object')
        found: dict[str, Credentials] = {}
        for key, entry in auths.items():
            if not isinstance(entry, Mapping):
                raise AuthConfigError(f"the credentials for {key!r} are not an object")
            found[_registry_key(str(key))] = _entry_credentials(str(key), entry)
        return cls(found)

    @classmethod
    def merged(cls, configs: Iterable[DockerConfig]) -> DockerConfig:
        """Several configs as one; the first to name a registry wins (as for a Pod's
        imagePullSecrets, tried in order)."""
        auths: dict[str, Credentials] = {}
        for config in configs:
            for key, value in config.auths.items():
                auths.setdefault(key, value)
        return cls(auths)

    def for_registry(self, registry: str) -> Credentials | None:
        key = registry.lower()
        if key in self.auths:
            return self.auths[key]
        if key == "docker.io":
            return next((self.auths[k] for k in DOCKER_HUB_KEYS if k in self.auths), None)
        return None


def docker_config_from_secret(secret: Mapping[str, object], name: str) -> DockerConfig:
    """The credentials in a Secret object (as the API returns it: data base64-encoded) of
    type kubernetes.io/dockerconfigjson, or the older dockercfg."""
    key = SECRET_KEYS.get(str(secret.get("type") or ""))
    data = secret.get("data")
    if key is None or not isinstance(data, Mapping) or not isinstance(data.get(key), str):
        raise AuthConfigError(
            f"Secret {name} is not of type kubernetes.io/dockerconfigjson with a "
            ".dockerconfigjson key; create it with `kubectl create secret docker-registry`"
        )
    try:
        raw = base64.b64decode(str(data[key]), validate=True)
    except (binascii.Error, ValueError):
        raise AuthConfigError(f"Secret {name}: {key} is not base64") from None
    try:
        return DockerConfig.parse(raw)
    except AuthConfigError as exc:
        raise AuthConfigError(f"Secret {name}: {exc}") from None


def _entry_credentials(key: str, entry: Mapping[str, object]) -> Credentials:
    username, password = entry.get("username"), entry.get("password")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise AuthConfigError(f'"auth" for {key!r} is not base64 of user:password') from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise AuthConfigError(f'"auth" for {key!r} is not base64 of user:password')
    if entry.get("identitytoken") and not password:
        raise AuthConfigError(
            f"the credentials for {key!r} are an identity token (a credential helper's "
            "refresh token); give a username and password or a registry token instead"
        )
    if not isinstance(username, str) or not isinstance(password, str):
        raise AuthConfigError(f"the credentials for {key!r} have no username and password")
    return Credentials(username, password)


@dataclass(frozen=True)
class Challenge:
    """One scheme of a ``WWW-Authenticate`` header with its parameters."""

    scheme: str  # lowercase: "basic" or "bearer"
    params: dict[str, str] = field(default_factory=dict)


# A scheme (a bare token) or a parameter (token=value, the value quoted or not).
_TOKEN = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)(?:\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*))?[\s,]*')


def parse_challenges(header: str) -> list[Challenge]:
    """``Bearer realm="https://auth/token",service="reg",scope="repository:x:pull"`` and
    ``Basic realm="Registry"`` (RFC 7235), several schemes in one header included."""
    challenges: list[Challenge] = []
    for match in _TOKEN.finditer(header):
        name, value = match.group(1), match.group(2)
        if value is None:
            challenges.append(Challenge(name.lower(), {}))
        elif challenges:
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            challenges[-1].params[name.lower()] = value
    return challenges
