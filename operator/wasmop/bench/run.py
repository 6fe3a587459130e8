"""An experiment run: its id, parameters, environment, and the files it leaves behind.

Every run owns ``results/<experiment>/<run-id>/``::

    params.json             the parameters it ran with
    env.json                where: git commit, packages, Kubernetes, nodes, CPU, time
    <table>.csv (.parquet)  tidy tables, one row per observation, units in column names
    raw/                    raw observations behind everything else (watch events,
                            requests, probes, samples, marks, parameters)
    figures/<name>.png|pdf  figures (captions.json: what each shows)
    observations.csv        every value recorded with :meth:`ExperimentRun.observe`
    summary.json            statistics of those values, counts, and the targets table

An experiment writes ``raw/`` while it runs; its analysis (an
:class:`~wasmop.bench.analysis.Analysis`, written by :meth:`ExperimentRun.record`)
produces the tables, observations and figures from ``raw/`` alone. The summary notebook
pools ``observations.csv`` and the ``counts`` of many runs, so whatever should be judged
against the report's targets goes through ``observe`` and ``count``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from wasmop.bench import plots
from wasmop.bench.analysis import Analysis
from wasmop.bench.clock import now_ms
from wasmop.bench.environment import collect_environment
from wasmop.bench.stats import INTERVALS, describe, describe_groups, jsonable, proportion
from wasmop.bench.targets import evaluate, grouped_contexts, results_frame
from wasmop.cluster.layout import repo_root

log = logging.getLogger(__name__)

RESULTS_ENV = "WASMOP_RESULTS_DIR"
_SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def default_results_dir() -> Path:
    """``$WASMOP_RESULTS_DIR`` or ``results/`` of this checkout."""
    env = os.environ.get(RESULTS_ENV)
    return Path(env).resolve() if env else repo_root() / "results"


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: ``20250131T120000Z-1a2b3c``."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def safe_name(text: str) -> str:
    """A file-system-safe form of a run id or table name."""
    cleaned = _SAFE.sub("-", text).strip("-.")
    if not cleaned:
        raise ValueError(f"{text!r} has no usable characters for a file name")
    return cleaned


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class RunPaths:
    folder: Path

    @property
    def params(self) -> Path:
        return self.folder / "params.json"

    @property
    def env(self) -> Path:
        return self.folder / "env.json"

    @property
    def summary(self) -> Path:
        return self.folder / "summary.json"

    @property
    def observations(self) -> Path:
        return self.folder / "observations.csv"

    @property
    def raw(self) -> Path:
        return self.folder / "raw"

    @property
    def figures(self) -> Path:
        return self.folder / "figures"

    @property
    def captions(self) -> Path:
        return self.figures / "captions.json"


class ExperimentRun:
    """One execution of one experiment with one set of parameters.

    Create with :meth:`start` (or :meth:`open` an existing folder to analyse it again);
    record with :meth:`write_raw` while measuring, then :meth:`record` an analysis (or
    :meth:`write_table`, :meth:`observe`, :meth:`count` one by one); close with
    :meth:`finish`, which writes ``observations.csv`` and ``summary.json``.
    """

    def __init__(
        self, experiment: str, run_id: str, folder: Path, params: Mapping[str, Any]
    ) -> None:
        self.experiment = experiment
        self.run_id = run_id
        self.folder = folder
        self.paths = RunPaths(folder)
        self.params = dict(params)
        self.started_ms = now_ms()
        self.finished_ms: float | None = None
        self._observations: list[dict[str, Any]] = []
        self._counts: dict[str, float] = {}

    @classmethod
    def start(
        cls,
        experiment: str,
        params: Mapping[str, Any] | None = None,
        *,
        results_dir: Path | str | None = None,
        run_id: str | None = None,
        environment: bool = True,
        kubeconfig: Path | str | None = None,
    ) -> ExperimentRun:
        """Create the run folder and write ``params.json`` and ``env.json``."""
        root = Path(results_dir) if results_dir else default_results_dir()
        run_id = safe_name(run_id) if run_id else new_run_id()
        folder = root / safe_name(experiment) / run_id
        folder.mkdir(parents=True, exist_ok=True)
        run = cls(experiment, run_id, folder, params or {})
        _write_json(run.paths.params, {"experiment": experiment, "run_id": run_id, **run.params})
        env = collect_environment(kubeconfig, kubernetes=environment)
        _write_json(run.paths.env, env)
        log.info("experiment %s run %s in %s", experiment, run_id, folder)
        return run

    @classmethod
    def open(cls, folder: Path | str) -> ExperimentRun:
        """An existing run folder, to analyse its raw data again. Its start and finish
        times stay those of the run that measured it."""
        folder = Path(folder)
        paths = RunPaths(folder)
        try:
            params = json.loads(paths.params.read_text())
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(
                f"{folder} is not a run folder (no readable params.json)"
            ) from exc
        experiment = params.pop("experiment", folder.parent.name)
        run_id = params.pop("run_id", folder.name)
        run = cls(experiment, run_id, folder, params)
        if paths.summary.exists():
            previous = json.loads(paths.summary.read_text())
            run.started_ms = previous.get("started_ms", run.started_ms)
            run.finished_ms = previous.get("finished_ms")
        return run

    # --- tables -----------------------------------------------------------------------

    def write_table(self, name: str, frame: pd.DataFrame, parquet: bool = True) -> Path:
        """``<name>.csv`` (and ``.parquet``) in the run folder, with run id columns."""
        frame = frame.copy()
        frame.insert(0, "run_id", self.run_id)
        frame.insert(0, "experiment", self.experiment)
        path = self.folder / f"{safe_name(name)}.csv"
        frame.to_csv(path, index=False)
        if parquet:
            try:
                frame.to_parquet(path.with_suffix(".parquet"), index=False)
            except (ImportError, ValueError, TypeError) as exc:  # mixed-type columns
                log.debug("no parquet for %s: %s", name, exc)
        return path

    def write_raw(self, name: str, rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> Path:
        """Raw observations as ``raw/<name>.csv`` (tables) or ``raw/<name>.jsonl``."""
        self.paths.raw.mkdir(exist_ok=True)
        if isinstance(rows, pd.DataFrame):
            path = self.paths.raw / f"{safe_name(name)}.csv"
            rows.to_csv(path, index=False)
            return path
        path = self.paths.raw / f"{safe_name(name)}.jsonl"
        with path.open("w") as f:
            for row in rows:
                f.write(json.dumps(jsonable(row), default=str) + "\n")
        return path

    def write_raw_json(self, name: str, data: Any) -> Path:
        """A raw record that is not a table (parameters, a fault) as ``raw/<name>.json``."""
        self.paths.raw.mkdir(exist_ok=True)
        path = self.paths.raw / f"{safe_name(name)}.json"
        _write_json(path, data)
        return path

    def record(self, analysis: Analysis) -> None:
        """Write an analysis: its tables, observations, counts, and its figures as PNG and
        PDF (closed afterwards, so a notebook shows each only where it asks for it)."""
        for name, frame in analysis.tables.items():
            self.write_table(name, frame)
        for observation in analysis.observations:
            self.observe(observation.metric, observation.values, **observation.context)
        for name, increment in analysis.counts.items():
            self.count(name, increment)
        for name, figure in analysis.figures.items():
            plots.save(figure, self.figure_stem(name), close=True)
        if analysis.captions:
            _write_json(self.paths.captions, analysis.captions)

    def figure_stem(self, name: str) -> Path:
        """Where :func:`wasmop.bench.plots.save` should write a figure (no suffix)."""
        self.paths.figures.mkdir(exist_ok=True)
        return self.paths.figures / safe_name(name)

    # --- observations -----------------------------------------------------------------

    def observe(self, metric: str, values: float | Iterable[float], **context: Any) -> None:
        """Record values of a metric (name with its unit, e.g. ``deploy_latency_ms``)."""
        if isinstance(values, int | float):
            values = [values]
        for value in values:
            self._observations.append({"metric": metric, "value": float(value), **context})

    def count(self, name: str, increment: float = 1) -> None:
        """Additive counters (requests_total, requests_failed, ...), pooled across runs."""
        self._counts[name] = self._counts.get(name, 0) + increment

    def observations(self) -> pd.DataFrame:
        return pd.DataFrame(self._observations, columns=None)

    def metrics(self) -> dict[str, dict[str, float]]:
        """Statistics per observed metric, plus ratios derived from the counts."""
        stats: dict[str, dict[str, float]] = {}
        by_metric: dict[str, list[float]] = {}
        for row in self._observations:
            by_metric.setdefault(row["metric"], []).append(row["value"])
        for metric, values in by_metric.items():
            stats[metric] = describe(values, ci=True)
        stats.update(describe_groups(pd.DataFrame(self._observations), grouped_contexts()))
        stats.update(ratios_from_counts(self._counts))
        return stats

    def finish(
        self, metrics: Mapping[str, Mapping[str, float]] | None = None, **extra: Any
    ) -> dict[str, Any]:
        """Write ``observations.csv`` and ``summary.json``; returns the summary.

        ``metrics`` replaces the statistics of this run's own observations (the summary
        notebook passes the statistics pooled over many runs)."""
        frame = self.observations()
        if frame.empty:
            frame = pd.DataFrame(columns=["metric", "value"])
        frame.insert(0, "run_id", self.run_id)
        frame.insert(0, "experiment", self.experiment)
        frame.to_csv(self.paths.observations, index=False)
        metrics = dict(metrics) if metrics is not None else self.metrics()
        targets = results_frame(evaluate(metrics))
        summary = {
            "experiment": self.experiment,
            "run_id": self.run_id,
            "params": self.params,
            "started_ms": self.started_ms,
            "finished_ms": self.finished_ms or now_ms(),
            "metrics": metrics,
            "intervals": INTERVALS,
            "counts": self._counts,
            "targets": targets.to_dict(orient="records"),
            **extra,
        }
        _write_json(self.paths.summary, summary)
        return summary


def ratios_from_counts(counts: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """success/error ratios of requests (under steady load and under chaos), the failed
    requests of rollouts and scale-ins, the requests lost in activating idle functions,
    the share of the chaos soak's invariants that held, and the ready ratio of concurrent
    deployments; each ratio with n and its Wilson interval."""
    stats: dict[str, dict[str, float]] = {}
    total = counts.get("requests_total", 0)
    if total:
        failed = counts.get("requests_failed", 0)
        stats["success_ratio"] = proportion(total - failed, total)
        stats["error_ratio"] = proportion(failed, total)
    total = counts.get("chaos_requests_total", 0)
    if total:
        failed = counts.get("chaos_requests_failed", 0)
        stats["chaos_success_ratio"] = proportion(total - failed, total)
    total = counts.get("drain_requests_total", 0)
    if total:
        stats["drain_failed_requests"] = {
            "value": counts.get("drain_requests_failed", 0),
            "n": total,
        }
    total = counts.get("chaos_invariants_total", 0)
    if total:
        stats["chaos_invariants_ratio"] = proportion(counts.get("chaos_invariants_held", 0), total)
    total = counts.get("activation_requests_total", 0)
    if total:
        stats["activation_lost_requests"] = {
            "value": counts.get("activation_requests_lost", 0),
            "n": total,
        }
    concurrent = counts.get("concurrent_deploy_total", 0)
    if concurrent:
        ready = counts.get("concurrent_deploy_ready", 0)
        stats["concurrent_ready_ratio"] = {
            **proportion(ready, concurrent),
            "batch": concurrent,
        }
    return stats


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(jsonable(data), indent=2, sort_keys=False, default=str) + "\n")
