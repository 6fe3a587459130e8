"""The weighted function mix a Locust run invokes, as one string for env and CLI.

Format: comma-separated entries ``<namespace>/<service>[/<path>][?<query>][@<weight>]``,
e.g. ``bench/hello@3,bench/fib?n=20@1``. The weight defaults to 1. The request name in
Locust's statistics is ``<namespace>/<service>`` so the tables group by function.
Pure and free of Locust imports: the locustfiles and the notebooks share it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
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


class Rotation:
    """The entries of a mix taking turns in proportion to their weights (smooth weighted
    round-robin, as nginx balances): every stretch of ``sum(weights)`` turns holds each
    entry its weight's share, give or take one. Locust users that pick this way give each
    function of a mix exactly its share of their rate, where a random pick per request
    lets a function's rate over a second wander by its square root (at 20 requests/s
    over three functions, about one replica's worth of 8 requests/s within two standard
    deviations, which a fast autoscaler then follows).

    ``start`` skips that many turns first: users started one after another with their
    serial number start at different places and spread their turns evenly.
    """

    def __init__(self, weights: Sequence[float], start: int = 0) -> None:
        if not weights or any(w <= 0 for w in weights):
            raise MixError("a rotation needs at least one entry, every weight positive")
        self.weights = [float(w) for w in weights]
        self.total = sum(self.weights)
        self.current = [0.0] * len(self.weights)
        for _ in range(start % max(1, round(self.total))):
            self.next()

    def next(self) -> int:
        """The index of the entry whose turn it is."""
        for i, weight in enumerate(self.weights):
            self.current[i] += weight
        turn = max(range(len(self.current)), key=lambda i: self.current[i])
        self.current[turn] -= self.total
        return turn
