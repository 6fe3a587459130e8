"""The weighted function mix a Locust run invokes, as one string for env and CLI.

Format: comma-separated entries ``<namespace>/<service>[/<path>][?<query>][@<weight>]``,
e.g. ``bench/hello@3,bench/fib?n=20@1``. The weight defaults to 1. The request name in
Locust's statistics is ``<namespace>/<service>`` so the tables group by function.
Pure and free of Locust imports: the locustfiles and the notebooks share it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class MixError(ValueError):
    """The mix string cannot be understood."""


@dataclass(frozen=True)
class MixEntry:
    namespace: str
    service: str
    path: str = "/"
    query: str = ""
    weight: float = 1.0

    @property
    def name(self) -> str:
        """The Locust request name: one statistics row per function."""
        return f"{self.namespace}/{self.service}"

    @property
    def target(self) -> str:
        """Path (and query) relative to the gateway's base URL."""
        path = f"/{self.namespace}/{self.service}{self.path}"
        return f"{path}?{self.query}" if self.query else path

    def format(self) -> str:
        text = f"{self.namespace}/{self.service}"
        if self.path != "/":
            text += self.path
        if self.query:
            text += f"?{self.query}"
        if self.weight != 1.0:
            text += f"@{self.weight:g}"
        return text


def parse_entry(text: str) -> MixEntry:
    entry = text.strip()
    weight = 1.0
    head, sep, tail = entry.rpartition("@")
    if sep:
        try:
            weight = float(tail)
        except ValueError:
            raise MixError(f"{text!r}: weight {tail!r} is not a number") from None
        entry = head
    if weight <= 0:
        raise MixError(f"{text!r}: weight must be positive")
    entry, _, query = entry.partition("?")
    parts = entry.strip("/").split("/", 2)
    if len(parts) < 2:
        raise MixError(f"{text!r}: expected <namespace>/<service>[/<path>]")
    namespace, service = parts[0], parts[1]
    for label in (namespace, service):
        if not _NAME.match(label):
            raise MixError(f"{text!r}: {label!r} is not a valid namespace or service name")
    path = "/" + parts[2] if len(parts) > 2 else "/"
    return MixEntry(namespace, service, path, query, weight)


def parse_mix(text: str) -> list[MixEntry]:
    entries = [parse_entry(part) for part in text.split(",") if part.strip()]
    if not entries:
        raise MixError("the function mix is empty")
    return entries


def format_mix(entries: Iterable[MixEntry]) -> str:
    return ",".join(e.format() for e in entries)
