"""What every experiment module provides, and how its analysis reads the raw data.

An :class:`Experiment` pairs a ``run_*`` (on a live cluster: measure, and record raw
observations into the run's ``raw/`` directory) with a pure ``analyse_*`` (from a
:class:`RawData` to an :class:`~wasmop.bench.analysis.Analysis`). ``raw/experiment.json``
names the experiment and every parameter it ran with, so a run folder can be analysed
again with nothing else.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from wasmop.bench import watch
from wasmop.bench.analysis import Analysis

MANIFEST = "experiment"  # raw/experiment.json: {"experiment": name, "parameters": {...}}
WATCH_EVENTS = "watch_events"  # raw/watch_events.csv: every watch event and marker
MODES = ("operator", "plain")


class RawDataError(ValueError):
    """A run folder lacks raw data its analysis needs; the message names the file."""


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def ready_kind(mode: str) -> str:
    """Whose status says the replicas are ready: the WasmFunction's (through the operator)
    or the hand-written Deployment's."""
    return "WasmFunction" if mode == "operator" else "Deployment"


def function_names(count: int) -> list[str]:
    """``fn-000``, ``fn-001``, ...: the functions of a batch."""
    return [f"fn-{i:03d}" for i in range(count)]


def metric_name(mode: str, name: str) -> str:
    """Plain-mode (no operator) values are kept apart, never judged as the operator's."""
    return name if mode == "operator" else f"plain_{name}"


@dataclass(frozen=True)
class Experiment:
    """One experiment: its name (the key in ``raw/experiment.json``), how it runs and how
    it is analysed. ``run(session, run, **parameters)`` writes ``raw/``;
    ``analyse(raw)`` must depend on nothing but ``raw``."""

    name: str
    run: Callable[..., None]
    analyse: Callable[[RawData], Analysis]

    def defaults(self) -> dict[str, Any]:
        """Every parameter of ``run`` (keyword-only, after session and run) and its default."""
        signature = inspect.signature(self.run)
        return {
            p.name: p.default
            for p in signature.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

    def parameters(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """``given`` completed with the defaults; an unknown name is an error."""
        defaults = self.defaults()
        unknown = set(given) - set(defaults)
        if unknown:
            raise TypeError(
                f"{self.name} has no parameter {', '.join(sorted(unknown))};"
                f" it takes {', '.join(defaults)}"
            )
        return {**defaults, **given}


class RawData:
    """Read access to one run's ``raw/`` directory, for an analysis."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.dir = self.folder / "raw"

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def exists(self, *parts: str) -> bool:
        return self.path(*parts).exists()

    def _need(self, *parts: str) -> Path:
        path = self.path(*parts)
        if not path.exists():
            raise RawDataError(f"{path} is missing: the run did not record it")
        return path

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return self.json(MANIFEST)

    @property
    def experiment(self) -> str:
        return str(self.manifest["experiment"])

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.manifest.get("parameters") or {})

    def json(self, name: str) -> Any:
        return json.loads(self._need(f"{name}.json").read_text())

    def jsonl(self, name: str) -> list[Any]:
        lines = self._need(f"{name}.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def table(self, name: str, **read_csv: Any) -> pd.DataFrame:
        return pd.read_csv(self._need(f"{name}.csv"), **read_csv)

    @cached_property
    def _events(self) -> pd.DataFrame:
        return watch.read_events(self._need(f"{WATCH_EVENTS}.csv"))

    def events(self) -> pd.DataFrame:
        """Every watch event and marker of the run, oldest first (a copy of its own)."""
        return self._events.copy()

    def marks(self, label: str | None = None) -> pd.DataFrame:
        """The marker rows (a fault, a scale request, a phase), optionally of one label."""
        events = self.events()
        marks = events[events["kind"] == "Marker"]
        return marks if label is None else marks[marks["event"] == label]

    def mark_ms(self, label: str) -> float:
        """Client time of the first marker called ``label``."""
        marks = self.marks(label)
        if marks.empty:
            raise RawDataError(f"no {label!r} marker in {self.path(WATCH_EVENTS + '.csv')}")
        return float(marks["t_ms"].iloc[0])
