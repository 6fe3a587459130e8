"""``wasmop experiments …``: run experiment plans through papermill, analyse recorded runs
again, register the kernel."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def cmd_run(args: argparse.Namespace) -> int:
    from wasmop.bench import html_report, runner
    from wasmop.bench.run import default_results_dir
    from wasmop.console import CommandError

    try:
        plan = runner.load_plan(args.plan)
    except runner.PlanError as exc:
        raise CommandError(str(exc)) from exc
    results_dir = (args.results or default_results_dir()).resolve()
    jobs = runner.expand(plan, args.only)
    if not jobs:
        raise CommandError(f"plan {plan.name} has no experiment matching {args.only}")
    if args.dry_run:
        for job in jobs:
            state = "done" if runner.is_complete(job, results_dir) and not job.always else "todo"
            print(f"{state:5} {job.experiment}/{job.run_id}  {dict(job.parameters)}")
        return 0
    runner.ensure_kernel(args.kernel)
    cluster = managed_cluster(plan.cluster) if args.manage_cluster else contextlib.nullcontext()
    with cluster:
        print(f"plan {plan.name}: {len(jobs)} runs into {results_dir}")
        results = runner.run_plan(
            plan,
            results_dir=results_dir,
            kernel=args.kernel,
            only=args.only,
            rerun=args.rerun,
            fail_fast=args.fail_fast,
            progress=not args.no_progress,
        )
    counts = {
        s: sum(1 for r in results if r.status == s) for s in ("completed", "skipped", "failed")
    }
    print(
        f"plan {plan.name}: {counts['completed']} completed, {counts['skipped']} skipped,"
        f" {counts['failed']} failed; results in {results_dir}"
    )
    failed = [r for r in results if r.status == "failed"]
    for result in failed:
        print(f"  failed: {result.job.experiment}/{result.job.run_id}: {result.error}")
        if result.notebook.exists():
            print(f"          see {result.notebook}")
        else:
            print(f"          see {result.folder / 'run.json'} (it failed before running)")
    pages = []
    for result in results:
        targets = result.folder / "targets.md"
        if result.job.experiment == "summary" and result.status != "failed" and targets.exists():
            print(f"\ntargets ({result.folder}):\n")
            print(targets.read_text())
            print(f"figures: {result.folder / 'figures'}")
            pages.append(result.folder / html_report.REPORT)
    for page in pages:
        print(f"report: {page}")
    return 1 if failed else 0


@contextlib.contextmanager
def managed_cluster(settings: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Run the body on the embedded cluster, started with the plan's ``cluster`` settings
    unless one is running, and stopped afterwards if this started it.

    The plan's settings (say ``nodes: 10``) are the plan's, not the user's: the state
    dir's settings file is put back as it was, so a later ``wasmop cluster up`` starts the
    cluster the user configured, not the last plan's."""
    from wasmop.cluster.layout import StateLayout

    settings_file = StateLayout.default().settings_file
    before = settings_file.read_bytes() if settings_file.exists() else None
    started = _cluster_up(settings)
    try:
        yield
    finally:
        if started:
            _cluster_down()
            if before is None:
                settings_file.unlink(missing_ok=True)
            else:
                settings_file.write_bytes(before)


def _cluster_up(settings: Mapping[str, Any] | None = None) -> bool:
    """Start the embedded cluster unless one is running (with the plan's ``cluster``
    settings); True if this call started it. One line when it is up; its step-by-step
    progress only if it fails."""
    import time

    from wasmop.cluster import manager
    from wasmop.cluster.layout import StateLayout
    from wasmop.console import CommandError

    layout = StateLayout.default()
    if manager.is_running(layout):
        return False
    print("starting the embedded cluster (nodes, operator, gateway) ...", flush=True)
    steps: list[str] = []
    started = time.monotonic()
    try:
        manager.up(layout, timeout=300, progress=steps.append, **dict(settings or {}))
    except manager.ClusterError as exc:
        raise CommandError("\n  ".join([str(exc), *steps])) from exc
    print(f"cluster up in {time.monotonic() - started:.0f} s")
    return True


def _cluster_down() -> None:
    from wasmop.cluster import manager
    from wasmop.cluster.layout import StateLayout

    print("stopping the embedded cluster ...")
    manager.down(StateLayout.default())


def cmd_analyse(args: argparse.Namespace) -> int:
    """Regenerate each run's tables, observations, summary and figures from its raw/."""
    import logging

    from wasmop.bench.experiments import registry
    from wasmop.bench.experiments.base import RawDataError
    from wasmop.console import CommandError

    # matplotlib's PDF backend subsets fonts through fontTools, which logs every step.
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    for folder in args.runs:
        try:
            run, analysis = registry.reanalyse(folder)
        except (FileNotFoundError, KeyError, RawDataError) as exc:
            raise CommandError(str(exc.args[0] if exc.args else exc)) from exc
        tables = ", ".join(f"{name}.csv" for name in analysis.tables)
        print(
            f"{run.folder}: {tables}, observations.csv, summary.json;"
            f" {len(analysis.figures)} figures"
        )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write a summary run's report.html again from the files under its results tree."""
    from wasmop.bench import html_report
    from wasmop.console import CommandError

    for folder in args.runs:
        if not (folder / "summary.json").exists():
            raise CommandError(f"{folder} is not a finished summary run (no summary.json)")
        print(f"report: {html_report.write_report(folder)}")
    return 0


def cmd_lab(args: argparse.Namespace) -> int:
    """JupyterLab on loopback, in notebooks/, with the wasmop kernel registered; prints
    the address (with its token) to open, then becomes the lab."""
    import os
    import sys

    from wasmop.bench import lab, runner

    runner.ensure_kernel()
    chosen = lab.settings(
        sys.executable, (args.notebook_dir or runner.notebooks_dir()).resolve(), args.port,
        args.token,
    )  # fmt: skip
    print(f"JupyterLab on {lab.HOST}:{chosen.port}, notebooks in {chosen.notebook_dir}")
    print(f"open {chosen.url()}", flush=True)
    os.execv(sys.executable, chosen.command())
    return 0  # not reached


def cmd_kernel(args: argparse.Namespace) -> int:
    from wasmop.bench import runner

    location = runner.ensure_kernel(args.name, user=args.user, force=True)
    print(f"Jupyter kernel {args.name!r} registered in {location}")
    return 0


def cmd_plans(_: argparse.Namespace) -> int:
    from wasmop.bench import runner

    for path in sorted(runner.plans_dir().glob("*.yaml")):
        plan = runner.load_plan(path)
        print(f"{plan.name:10} {len(runner.expand(plan)):4} runs  {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    experiments = subparsers.add_parser(
        "experiments",
        help="run experiment plans (papermill notebooks) and manage the Jupyter kernel",
        description="An experiment plan is notebooks x parameter grid x repetitions "
        "(notebooks/plans/*.yaml). Each run is executed by papermill into "
        "results/<experiment>/<run-id>/; completed runs are skipped when a plan is resumed.",
    )
    sub = experiments.add_subparsers(dest="experiments_command", metavar="<action>", required=True)

    run = sub.add_parser("run", help="run (or resume) a plan")
    run.add_argument(
        "--plan",
        required=True,
        help="quick, full, another name in notebooks/plans/, or a YAML file",
    )
    run.add_argument("--results", type=Path, help="results directory (default: results/)")
    run.add_argument(
        "--only",
        action="append",
        metavar="EXPERIMENT",
        help="run only this experiment (repeatable)",
    )
    run.add_argument("--rerun", action="store_true", help="run completed runs again")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failed run")
    run.add_argument(
        "--dry-run", action="store_true", help="list the runs and whether they are done"
    )
    run.add_argument("--kernel", default="wasmop", help="Jupyter kernel name (default: wasmop)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--manage-cluster",
        action="store_true",
        help=(
            "start the embedded cluster if it is not running, with the plan's cluster"
            " settings, and stop it afterwards (the state dir's cluster.json is left as it"
            " was, so a later 'wasmop cluster up' does not inherit the plan's settings)"
        ),
    )
    run.set_defaults(handler=cmd_run)

    analyse = sub.add_parser(
        "analyse",
        help="analyse recorded runs again from their raw/ data (no cluster needed)",
        description="Rewrites each run's tables (CSV, Parquet), observations.csv, "
        "summary.json and figures from the raw observations under <run-dir>/raw/.",
    )
    analyse.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="a run folder, results/<experiment>/<run-id>",
    )
    analyse.set_defaults(handler=cmd_analyse)

    page = sub.add_parser(
        "report",
        help="write a summary run's report.html again (no cluster needed)",
        description="One self-contained page per plan run: targets with their 95 % CIs, "
        "every metric, the figures with captions, the plan and its runs (linked), the "
        "environment.",
    )
    page.add_argument(
        "runs", nargs="+", type=Path, metavar="SUMMARY_RUN_DIR",
        help="a summary run folder, results/summary/<run-id>",
    )  # fmt: skip
    page.set_defaults(handler=cmd_report)

    lab = sub.add_parser("lab", help="start JupyterLab (on 127.0.0.1) with the wasmop kernel")
    lab.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1 (default 8888)")
    lab.add_argument(
        "--token", help="the token to require (default: $JUPYTER_TOKEN or a fresh one)"
    )
    lab.add_argument(
        "--notebook-dir", type=Path, help="folder the lab serves (default: notebooks/)"
    )
    lab.set_defaults(handler=cmd_lab)

    kernel = sub.add_parser("kernel", help="(re)register the wasmop Jupyter kernel for this venv")
    kernel.add_argument("--name", default="wasmop", help="kernel name (default: wasmop)")
    kernel.add_argument(
        "--user", action="store_true", help="install for the user instead of into the venv"
    )
    kernel.set_defaults(handler=cmd_kernel)

    plans = sub.add_parser("plans", help="list the plans in notebooks/plans/")
    plans.set_defaults(handler=cmd_plans)
