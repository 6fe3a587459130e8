"""Load shapes for autoscaling experiments: step, spike, ramp and periodic, as pure functions of
time, so they can be unit-tested and plotted without Locust (whose gevent must stay out
of Jupyter kernels). ``loadtests/shape.py`` wraps :func:`users_at` in a LoadTestShape.

A shape is written as one string for env and CLI: ``<kind>:key=value,...``, e.g.
``step:peak=20,base=2,steps=4,duration=60``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

KINDS = ("constant", "step", "spike", "ramp", "periodic")


class ShapeError(ValueError):
    """The shape string cannot be understood."""


@dataclass(frozen=True)
class Shape:
    """Users over ``duration`` seconds.

    * constant: ``peak`` users throughout;
    * step: from ``base`` to ``peak`` in ``steps`` equal stairs, each ``duration/steps``;
    * spike: ``base``, then ``peak`` from ``at`` for ``length`` seconds, then ``base``;
    * ramp: linear from ``base`` up to ``peak`` over the first half, down again over the
      second (scale out, then scale in);
    * periodic: a cosine wave between ``base`` and ``peak`` with a ``period`` in seconds,
      starting at ``base`` (a daily cycle, compressed: what a seasonal forecast can learn).
    """

    kind: str = "step"
    peak: int = 10
    base: int = 1
    duration: float = 60.0
    steps: int = 4
    at: float = 10.0
    length: float = 20.0
    spawn_rate: float = 10.0
    period: float = 30.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ShapeError(f"unknown shape {self.kind!r}; one of {', '.join(KINDS)}")
        if self.peak < 0 or self.base < 0 or self.duration <= 0 or self.steps < 1:
            raise ShapeError("peak and base must be >= 0, duration > 0 and steps >= 1")
        if self.spawn_rate <= 0:
            raise ShapeError("spawn_rate must be positive")
        if self.period <= 0:
            raise ShapeError("period must be positive")

    @classmethod
    def parse(cls, text: str) -> Shape:
        kind, _, rest = text.strip().partition(":")
        values: dict[str, object] = {"kind": kind or "step"}
        types = {f.name: f.type for f in fields(cls)}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in types or key == "kind":
                raise ShapeError(f"{text!r}: unknown or malformed {item!r}")
            try:
                values[key] = int(value) if types[key] == "int" else float(value)
            except ValueError:
                raise ShapeError(f"{text!r}: {key} must be a number, got {value!r}") from None
        return cls(**values)  # type: ignore[arg-type]

    def format(self) -> str:
        default = replace(Shape(), kind=self.kind)
        items = [
            f"{f.name}={getattr(self, f.name):g}"
            for f in fields(self)
            if f.name != "kind" and getattr(self, f.name) != getattr(default, f.name)
        ]
        return f"{self.kind}:{','.join(items)}" if items else self.kind


def users_at(shape: Shape, t: float) -> int | None:
    """Users wanted ``t`` seconds into the run; None once the shape is over."""
    if t < 0:
        return shape.base if shape.kind != "constant" else shape.peak
    if t >= shape.duration:
        return None
    if shape.kind == "constant":
        return shape.peak
    if shape.kind == "step":
        stair = min(int(t / (shape.duration / shape.steps)), shape.steps - 1)
        if shape.steps == 1:
            return shape.peak
        return round(shape.base + (shape.peak - shape.base) * stair / (shape.steps - 1))
    if shape.kind == "spike":
        return shape.peak if shape.at <= t < shape.at + shape.length else shape.base
    if shape.kind == "periodic":
        wave = (1 - math.cos(2 * math.pi * t / shape.period)) / 2
        return shape.base + round((shape.peak - shape.base) * wave)
    half = shape.duration / 2
    fraction = t / half if t < half else (shape.duration - t) / half
    return shape.base + math.floor((shape.peak - shape.base) * fraction + 1e-9)


def schedule(shape: Shape, resolution: float = 1.0) -> list[tuple[float, int]]:
    """(t, users) every ``resolution`` seconds: for plots and the run's parameters."""
    points = []
    t = 0.0
    while True:
        users = users_at(shape, t)
        if users is None:
            return points
        points.append((t, users))
        t += resolution
