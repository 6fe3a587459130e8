"""One call per notebook: its run folder, its session, the experiment, the finish step.

A notebook holds a parameters cell (papermill injects a plan's values after it), one call
and the figures a reader wants::

    # parameters
    experiment = "deployment_latency"
    run_id = None
    results_dir = None
    plan = "adhoc"
    concurrency = 1

    result = run_experiment("deployment_latency", globals())
    result.figures["deployment_cdf"]

The call takes each parameter from the notebook's namespace by the name the experiment's
``run_*`` gives it, so every parameter is written once, in the parameters cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from wasmop.bench import html_report, plots, report, summary
from wasmop.bench.analysis import Analysis
from wasmop.bench.experiments import registry
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession
from wasmop.bench.targets import evaluate, results_markdown

RUN_NAMES = ("experiment", "run_id", "results_dir", "plan")  # set by the batch runner


@dataclass(frozen=True)
class NotebookResult:
    """What a notebook shows: the run, its tables and figures, and its summary."""

    run: ExperimentRun
    analysis: Analysis
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return self.analysis.tables

    @property
    def figures(self) -> dict[str, Figure]:
        return self.analysis.figures


def _show(markdown: str) -> None:
    """Markdown in a notebook, plain text anywhere else."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:
        print(markdown)
        return
    if get_ipython() is None:
        print(markdown)
    else:
        display(Markdown(markdown))


def _start(
    default_experiment: str,
    namespace: Mapping[str, Any],
    params: Mapping[str, Any],
    environment: bool = True,
) -> ExperimentRun:
    plots.use_style()
    run = ExperimentRun.start(
        namespace.get("experiment") or default_experiment,
        {**params, "plan": namespace.get("plan", "adhoc")},
        results_dir=namespace.get("results_dir"),
        run_id=namespace.get("run_id"),
        environment=environment,
    )
    print(f"run {run.run_id} -> {run.folder}")
    return run


def run_experiment(name: str, namespace: Mapping[str, Any]) -> NotebookResult:
    """Run experiment ``name`` with the parameters found in ``namespace`` (a notebook's
    ``globals()``; missing ones keep their defaults), write its run folder, show the
    targets its measurements meet, and return its tables and figures."""
    experiment = registry.get(name)
    given = {k: namespace[k] for k in experiment.defaults() if k in namespace}
    run = _start(name, namespace, experiment.parameters(given))
    with BenchSession() as session:
        analysis = registry.execute(name, session, run, given)
    finished = run.finish()
    _show(results_markdown(evaluate(finished["metrics"])))
    print(f"results in {run.folder}")
    return NotebookResult(run, analysis, finished)


def run_summary(namespace: Mapping[str, Any]) -> NotebookResult:
    """The summary notebook's call: pool every finished run of the plan (or of all plans
    with ``all_plans``) under ``results_dir``, write the figure set, the targets table
    and the run's page (``report.html``), and show the table."""
    all_plans = bool(namespace.get("all_plans", False))
    run = _start("summary", namespace, {"all_plans": all_plans}, environment=False)
    runs = report.runs(namespace.get("results_dir"), plan=None if all_plans else run.params["plan"])
    runs = runs[runs["experiment"] != run.experiment] if not runs.empty else runs
    print(f"{len(runs)} runs pooled")
    pooled = summary.summarise(runs)
    run.record(pooled.analysis)
    (run.folder / "targets.md").write_text(pooled.targets_markdown)
    finished = run.finish(pooled.metrics, runs=len(runs))
    _show(pooled.targets_markdown)
    print(f"figures and targets in {run.folder}")
    print(f"report: {html_report.write_report(run.folder)}")
    return NotebookResult(run, pooled.analysis, finished)
