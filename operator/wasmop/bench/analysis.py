"""What analysing a run produces: tidy tables, observations, counts and figures.

An experiment's ``analyse_*`` builds an :class:`Analysis` from raw data and nothing else;
:meth:`wasmop.bench.run.ExperimentRun.record` writes it into the run folder. Keeping the
two apart is what lets ``wasmop experiments analyse`` regenerate a run's files without a
cluster, byte for byte the same CSVs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from matplotlib.figure import Figure


@dataclass(frozen=True)
class Observation:
    """Values of one metric (name with its unit) and the context they were measured in."""

    metric: str
    values: tuple[float, ...]
    context: dict[str, Any] = field(default_factory=dict)


@dataclass
class Analysis:
    """The results of one run, in the order they are written."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    observations: list[Observation] = field(default_factory=list)
    counts: dict[str, float] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)

    def table(self, name: str, frame: pd.DataFrame) -> pd.DataFrame:
        """A tidy table, written as ``<name>.csv`` (and ``.parquet``)."""
        self.tables[name] = frame
        return frame

    def observe(self, metric: str, values: float | Iterable[float], **context: Any) -> None:
        """Values the targets judge and the summary pools (``observations.csv``)."""
        if isinstance(values, int | float):
            values = [values]
        self.observations.append(Observation(metric, tuple(float(v) for v in values), context))

    def count(self, name: str, increment: float = 1) -> None:
        """Additive counters (requests_total, requests_failed, ...), pooled across runs."""
        self.counts[name] = self.counts.get(name, 0) + increment

    def figure(self, name: str, figure: Figure, caption: str = "") -> Figure:
        """A figure, saved as ``figures/<name>.png`` and ``.pdf``; its caption (what it
        shows and how to read it) goes to ``figures/captions.json`` for the report."""
        self.figures[name] = figure
        if caption:
            self.captions[name] = caption
        return figure
