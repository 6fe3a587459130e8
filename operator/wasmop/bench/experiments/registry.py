"""The experiments by name, found in this package's modules, and the two ways to use one:
run it (measure, then analyse) or analyse a recorded run folder again.

Every module of the package that defines ``EXPERIMENTS`` (a tuple of
:class:`~wasmop.bench.experiments.base.Experiment`) is an experiment module; nothing else
needs to list it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from wasmop.bench.analysis import Analysis
from wasmop.bench.experiments.base import MANIFEST, Experiment, RawData
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession

PACKAGE = "wasmop.bench.experiments"


@cache
def experiments() -> dict[str, Experiment]:
    """Every experiment of every module in the package, by name."""
    package = importlib.import_module(PACKAGE)
    found: dict[str, Experiment] = {}
    for module_info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{PACKAGE}.{module_info.name}")
        for experiment in getattr(module, "EXPERIMENTS", ()):
            if experiment.name in found:
                raise RuntimeError(f"two experiments are called {experiment.name}")
            found[experiment.name] = experiment
    return dict(sorted(found.items()))


def get(name: str) -> Experiment:
    known = experiments()
    if name not in known:
        raise KeyError(f"no experiment {name!r}; known: {', '.join(known)}")
    return known[name]


def execute(
    name: str, session: BenchSession, run: ExperimentRun, parameters: Mapping[str, Any]
) -> Analysis:
    """Run an experiment into ``run``'s folder and record its analysis of what it wrote.

    The parameters go to ``raw/experiment.json`` before anything is measured; the
    analysis reads ``raw/`` back from disk, exactly as a later re-analysis will.
    """
    experiment = get(name)
    complete = experiment.parameters(parameters)
    run.write_raw_json(MANIFEST, {"experiment": name, "parameters": complete})
    experiment.run(session, run, **complete)
    analysis = experiment.analyse(RawData(run.folder))
    run.record(analysis)
    return analysis


def reanalyse(folder: Path | str) -> tuple[ExperimentRun, Analysis]:
    """Analyse a recorded run folder again from its ``raw/`` directory alone, rewriting its
    tables, observations, summary and figures."""
    raw = RawData(folder)
    if not raw.exists(f"{MANIFEST}.json"):
        raise FileNotFoundError(
            f"{folder} has no raw/{MANIFEST}.json: not a recorded experiment run"
        )
    run = ExperimentRun.open(folder)
    analysis = get(raw.experiment).analyse(raw)
    run.record(analysis)
    run.finish()
    return run, analysis
