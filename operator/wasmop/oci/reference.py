"""Image references: ``REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]``.

The registry is always named (``127.0.0.1:5000/wasm/sqlite:3.53.2``,
``ghcr.io/org/app@sha256:…``): a WasmFunction is applied to clusters with different
defaults, so an image that silently means Docker Hub on one and something else on
another is refused instead. The grammar is distribution's (the reference package of
``github.com/distribution/reference``), restricted to sha256 digests, the only algorithm
registries use for manifests.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

__all__ = ["DIGEST_PATTERN", "ImageReference", "ReferenceError", "is_loopback_host"]

# One path component of a repository name, and the whole name (at most 255 characters).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_PATTERN = r"sha256:[a-f0-9]{64}"
_DIGEST = re.compile(rf"^{DIGEST_PATTERN}$")
# A host name or IPv4 address, or an IPv6 literal in brackets, with an optional port.
_HOST = re.compile(
    r"^(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)
MAX_REPOSITORY = 255

# Where Docker Hub's registry API actually lives.
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"


class ReferenceError(ValueError):
    """The text is not an image reference this platform accepts."""


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (port not included)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _split_host_port(registry: str) -> tuple[str, int | None]:
    if registry.startswith("["):
        host, _, rest = registry.partition("]")
        host += "]"
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = registry.partition(":")
    return host, int(port) if port else None


@dataclass(frozen=True)
class ImageReference:
    """A parsed reference; ``tag`` or ``digest`` (or both) is set."""

    registry: str  # host[:port] as written
    repository: str
    tag: str | None = None
    digest: str | None = None  # "sha256:<hex>"

    @classmethod
    def parse(cls, text: str) -> ImageReference:
        text = text.strip()
        if not text:
            raise ReferenceError("an image reference is empty")
        rest, digest = text, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _DIGEST.match(digest):
                raise ReferenceError(
                    f"{text!r}: the digest must be sha256: and 64 lowercase hex digits"
                )
        registry, slash, path = rest.partition("/")
        if not slash or not path:
            raise ReferenceError(
                f"{text!r}: name the registry and the repository, e.g. "
                "127.0.0.1:5000/wasm/hello:1.0"
            )
        if not ("." in registry or ":" in registry or registry == "localhost"):
            raise ReferenceError(
                f"{text!r}: {registry!r} is not a registry host; write the registry first "
                f"(e.g. {DOCKER_HUB}/{rest} for Docker Hub)"
            )
        if not _HOST.match(registry):
            raise ReferenceError(f"{text!r}: {registry!r} is not a valid registry host[:port]")
        _, port = _split_host_port(registry)
        if port is not None and not 0 < port < 65536:
            raise ReferenceError(f"{text!r}: port {port} is out of range")
        tag = None
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, tag = path.rsplit(":", 1)
            if not _TAG.match(tag):
                raise ReferenceError(f"{text!r}: {tag!r} is not a valid tag")
        if len(path) > MAX_REPOSITORY or not _REPOSITORY.match(path):
            raise ReferenceError(
                f"{text!r}: {path!r} is not a valid repository (lowercase letters, digits, "
                "and . _ - between them, components separated by /)"
            )
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"  # Docker Hub's official images
        if tag is None and digest is None:
            raise ReferenceError(f"{text!r}: give a tag (:1.0) or a digest (@sha256:...)")
        return cls(registry=registry, repository=path, tag=tag, digest=digest)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What the manifest is fetched by: the digest if pinned, else the tag."""
        return self.digest or self.tag or ""

    def pinned(self, digest: str) -> ImageReference:
        """The same repository by ``digest`` only (what Pods are given)."""
        return replace(self, tag=None, digest=digest)

    @property
    def host(self) -> str:
        return _split_host_port(self.registry)[0]

    @property
    def port(self) -> int | None:
        return _split_host_port(self.registry)[1]

    @property
    def plain_http(self) -> bool:
        """Plain HTTP to a registry on loopback (the embedded one); HTTPS anywhere else."""
        return is_loopback_host(self.host)

    @property
    def api_base(self) -> str:
        """Scheme, host and port of the registry's HTTP API."""
        host = DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry
        return f"{'http' if self.plain_http else 'https'}://{host}"
