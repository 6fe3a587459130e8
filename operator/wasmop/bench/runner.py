"""The batch runner: execute an experiment plan's notebooks with papermill.

A plan (YAML, ``notebooks/plans/<name>.yaml``) lists experiments; each is a notebook, a
parameter grid (every combination runs), fixed parameters and a repetition count::

    name: quick
    defaults: {smoke: false}        # parameters for every notebook
    timeout_s: 600                  # per notebook (cell execution timeout)
    cluster: {nodes: 10}            # cluster settings when the runner starts the cluster
    experiments:
      - notebook: deployment_latency.ipynb
        experiment: deployment      # results/<experiment>/...; default: notebook stem
        label: small                # optional run-id prefix (same notebook, other settings)
        grid: {concurrency: [1, 10]}
        parameters: {workload: hello}
        repetitions: 2
      - notebook: summary.ipynb
        always: true                # re-run on every resume (it reads the others)

Every (notebook, parameter combination, repetition) is a job with a deterministic run
id (readable grid values, repetition, and a hash of all parameters), executed into
``results/<experiment>/<run-id>/<notebook>`` with ``experiment``, ``run_id``,
``results_dir`` and ``plan`` injected as parameters. ``run.json`` records the outcome;
a completed job is skipped when the plan is run again, so an interrupted plan resumes
where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from wasmop.bench.run import default_results_dir, safe_name
from wasmop.cluster.layout import repo_root
from wasmop.cluster.settings import ClusterSettings

log = logging.getLogger(__name__)

KERNEL_NAME = "wasmop"
KERNEL_DISPLAY_NAME = "Python (wasmop)"
# Kernel traffic (code and outputs) encrypted with CurveZMQ keys the kernel manager makes
# for each kernel whose spec declares support (the wasmop kernel's does): without them
# ipykernel warns at every start that it runs over TCP in plain text.
TRANSPORT_ENCRYPTION = "auto"
RUN_FILE = "run.json"
INJECTED = ("experiment", "run_id", "results_dir", "plan")


class PlanError(ValueError):
    """The plan file cannot be used; the message names the problem."""


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def plans_dir() -> Path:
    return notebooks_dir() / "plans"


@dataclass(frozen=True)
class ExperimentSpec:
    notebook: Path
    experiment: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    repetitions: int = 1
    timeout_s: float | None = None
    always: bool = False
    label: str = ""  # prefix of the run ids, to tell entries of one notebook apart


@dataclass(frozen=True)
class Plan:
    name: str
    experiments: tuple[ExperimentSpec, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float | None = 900.0
    source: Path | None = None
    # Settings for the embedded cluster when the runner starts it (--manage-cluster), e.g.
    # {nodes: 10}: the Pod slots a plan's largest experiment needs.
    cluster: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    plan: str
    notebook: Path
    experiment: str
    run_id: str
    repetition: int
    parameters: Mapping[str, Any]  # what the notebook receives (without the injected ones)
    timeout_s: float | None
    always: bool = False

    def folder(self, results_dir: Path) -> Path:
        return results_dir / self.experiment / self.run_id

    def output(self, results_dir: Path) -> Path:
        return self.folder(results_dir) / self.notebook.name

    def injected(self, results_dir: Path) -> dict[str, Any]:
        return {
            **self.parameters,
            "experiment": self.experiment,
            "run_id": self.run_id,
            "results_dir": str(results_dir),
            "plan": self.plan,
        }


# --------------------------------------------------------------------------- plans


def resolve_plan_path(plan: str | Path) -> Path:
    """``quick``/``full`` (or any name in notebooks/plans/) or a YAML file path."""
    text = str(plan)
    candidate = Path(text)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise PlanError(f"no plan file {candidate}")
        return candidate.resolve()
    named = plans_dir() / f"{safe_name(text)}.yaml"
    if named.is_file():
        return named
    known = sorted(p.stem for p in plans_dir().glob("*.yaml")) if plans_dir().exists() else []
    raise PlanError(f"unknown plan {text!r}: use one of {', '.join(known) or '-'} or a YAML file")


def _find_notebook(name: str, plan_file: Path | None) -> Path:
    path = Path(name)
    candidates = [path] if path.is_absolute() else []
    if not path.is_absolute():
        if plan_file is not None:
            candidates += [plan_file.parent / path, plan_file.parent.parent / path]
        candidates.append(notebooks_dir() / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise PlanError(f"notebook {name} not found (looked in {', '.join(map(str, candidates))})")


def _positive_int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PlanError(f"{what} must be a positive integer, got {value!r}")
    return value


def parse_plan(data: Mapping[str, Any], source: Path | None = None, name: str = "") -> Plan:
    """Validate a plan's YAML data; every problem is a :class:`PlanError`."""
    if not isinstance(data, Mapping):
        raise PlanError("a plan is a mapping with 'experiments'")
    unknown = set(data) - {
        "name", "defaults", "timeout_s", "experiments", "description", "cluster",
    }  # fmt: skip
    if unknown:
        raise PlanError(f"unknown plan keys: {', '.join(sorted(unknown))}")
    entries = data.get("experiments")
    if not isinstance(entries, list) or not entries:
        raise PlanError("'experiments' must be a non-empty list")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise PlanError("'defaults' must be a mapping of parameters")
    plan_timeout = data.get("timeout_s", 900.0)
    specs = []
    for i, entry in enumerate(entries):
        where = f"experiments[{i}]"
        if not isinstance(entry, Mapping) or "notebook" not in entry:
            raise PlanError(f"{where}: needs a 'notebook'")
        extra = set(entry) - {
            "notebook", "experiment", "parameters", "grid", "repetitions", "timeout_s", "always",
            "label",
        }  # fmt: skip
        if extra:
            raise PlanError(f"{where}: unknown keys {', '.join(sorted(extra))}")
        grid = entry.get("grid") or {}
        if not isinstance(grid, Mapping) or not all(
            isinstance(v, list) and v for v in grid.values()
        ):
            raise PlanError(f"{where}: 'grid' maps parameter names to non-empty lists")
        parameters = entry.get("parameters") or {}
        if not isinstance(parameters, Mapping):
            raise PlanError(f"{where}: 'parameters' must be a mapping")
        clash = (set(grid) | set(parameters)) & set(INJECTED)
        if clash:
            raise PlanError(f"{where}: {', '.join(sorted(clash))} are set by the runner")
        notebook = _find_notebook(str(entry["notebook"]), source)
        specs.append(
            ExperimentSpec(
                notebook=notebook,
                experiment=safe_name(str(entry.get("experiment") or notebook.stem)),
                parameters=dict(parameters),
                grid={k: list(v) for k, v in grid.items()},
                repetitions=_positive_int(entry.get("repetitions", 1), f"{where}.repetitions"),
                timeout_s=entry.get("timeout_s", plan_timeout),
                always=bool(entry.get("always", False)),
                label=_slug(str(entry["label"])) if entry.get("label") else "",
            )
        )
    cluster = data.get("cluster") or {}
    if not isinstance(cluster, Mapping):
        raise PlanError("'cluster' must be a mapping of cluster settings")
    known = {f.name for f in dataclasses.fields(ClusterSettings)}
    if set(cluster) - known:
        raise PlanError(f"unknown cluster settings: {', '.join(sorted(set(cluster) - known))}")
    plan_name = str(data.get("name") or name or (source.stem if source else "plan"))
    return Plan(
        safe_name(plan_name), tuple(specs), dict(defaults), plan_timeout, source, dict(cluster)
    )


def load_plan(plan: str | Path) -> Plan:
    path = resolve_plan_path(plan)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PlanError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return parse_plan(data, path, path.stem)
    except PlanError as exc:
        raise PlanError(f"{path}: {exc}") from exc


def _slug(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9.-]+", "", text)[:24] or "x"


def run_id_for(
    grid_values: Mapping[str, Any],
    repetition: int,
    parameters: Mapping[str, Any],
    label: str = "",
) -> str:
    """Readable and deterministic: ``concurrency-10_r2_1a2b3c4d``.

    The hash covers every parameter (and the plan name), so changing any of them gives a
    new run rather than wrongly skipping as already done.
    """
    readable = "_".join(f"{_slug(k)}-{_slug(v)}" for k, v in grid_values.items())
    digest = hashlib.sha256(
        json.dumps({"p": parameters, "r": repetition}, sort_keys=True, default=str).encode()
    ).hexdigest()[:8]
    return safe_name("_".join(filter(None, [label, readable, f"r{repetition}", digest])))


def expand(plan: Plan, only: Iterable[str] | None = None) -> list[Job]:
    """Every job of the plan in order: experiments, grid combinations, repetitions."""
    wanted = set(only) if only else None
    jobs = []
    for spec in plan.experiments:
        if (
            wanted is not None
            and spec.experiment not in wanted
            and spec.notebook.stem not in wanted
        ):
            continue
        keys = list(spec.grid)
        for combination in itertools.product(*(spec.grid[k] for k in keys)):
            grid_values = dict(zip(keys, combination, strict=True))
            parameters = {**plan.defaults, **spec.parameters, **grid_values}
            for repetition in range(1, spec.repetitions + 1):
                run_id = run_id_for(
                    grid_values, repetition, {**parameters, "plan": plan.name}, spec.label
                )
                jobs.append(
                    Job(
                        plan.name, spec.notebook, spec.experiment, run_id, repetition,
                        parameters, spec.timeout_s, spec.always,
                    )
                )  # fmt: skip
    return jobs


# --------------------------------------------------------------------------- kernel


def kernel_python(name: str = KERNEL_NAME) -> str | None:
    """The interpreter a registered kernel runs, or None when it is not registered."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return None
    return spec.argv[0] if spec.argv else None


def ensure_kernel(name: str = KERNEL_NAME, user: bool = False, force: bool = False) -> Path:
    """Register a Jupyter kernel running this interpreter (the venv with wasmop), so
    papermill and JupyterLab find ``wasmop``. Idempotent."""
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager

    current = kernel_python(name)
    if (
        not force
        and current
        and Path(current).resolve() == Path(sys.executable).resolve()
        and kernel_encrypts(name)
    ):
        return Path(KernelSpecManager().get_kernel_spec(name).resource_dir)
    location = install(
        kernel_name=name,
        display_name=KERNEL_DISPLAY_NAME,
        user=user,
        prefix=None if user else sys.prefix,
    )
    log.info("registered Jupyter kernel %s in %s", name, location)
    return Path(location)


def kernel_encrypts(name: str = KERNEL_NAME) -> bool:
    """Whether the kernel's spec declares CurveZMQ support, so its manager encrypts."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        metadata = KernelSpecManager().get_kernel_spec(name).metadata or {}
    except NoSuchKernel:
        return False
    return "curve" in (metadata.get("supported_encryption") or [])


def kernel_manager_config() -> Any:
    """The configuration every kernel manager of ours gets (papermill's, the lab's)."""
    from traitlets.config import Config

    return Config({"KernelManager": {"transport_encryption": TRANSPORT_ENCRYPTION}})


# --------------------------------------------------------------------------- execution


@dataclass(frozen=True)
class JobResult:
    job: Job
    status: str  # completed, skipped, failed
    folder: Path
    notebook: Path
    seconds: float = 0.0
    error: str = ""


def read_run_file(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_complete(job: Job, results_dir: Path) -> bool:
    record = read_run_file(job.folder(results_dir))
    return bool(record) and record.get("status") == "completed"


def _write_run_file(folder: Path, record: Mapping[str, Any]) -> None:
    (folder / RUN_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")


def execute_job(job: Job, results_dir: Path, kernel: str = KERNEL_NAME) -> JobResult:
    """Execute one job's notebook with papermill into its run folder."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    folder = job.folder(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    output = job.output(results_dir)
    parameters = job.injected(results_dir)
    started = datetime.now(UTC)
    record: dict[str, Any] = {
        "status": "running",
        "plan": job.plan,
        "experiment": job.experiment,
        "run_id": job.run_id,
        "repetition": job.repetition,
        "notebook": str(job.notebook),
        "executed_notebook": str(output),
        "parameters": parameters,
        "started": started.isoformat(timespec="seconds"),
    }
    _write_run_file(folder, record)
    t0 = time.monotonic()
    error = ""
    try:
        papermill.execute_notebook(
            str(job.notebook),
            str(output),
            parameters=parameters,
            kernel_name=kernel,
            language="python",
            progress_bar=False,
            log_output=False,
            cwd=str(folder),
            execution_timeout=job.timeout_s,
            config=kernel_manager_config(),
        )
        status = "completed"
    except PapermillExecutionError as exc:
        status, error = "failed", f"{exc.ename}: {exc.evalue}"
    except Exception as exc:  # the kernel died, a timeout, a missing kernel
        status, error = "failed", f"{exc.__class__.__name__}: {exc}"
    seconds = time.monotonic() - t0
    record.update(
        status=status,
        error=error,
        seconds=round(seconds, 3),
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _write_run_file(folder, record)
    return JobResult(job, status, folder, output, seconds, error)


def run_plan(
    plan: Plan,
    *,
    results_dir: Path | str | None = None,
    kernel: str = KERNEL_NAME,
    only: Iterable[str] | None = None,
    rerun: bool = False,
    fail_fast: bool = False,
    progress: bool = True,
    report: Callable[[str], None] | None = None,
) -> list[JobResult]:
    """Run every job not completed yet; a failed job is reported and the plan goes on
    (unless ``fail_fast``)."""
    from tqdm.auto import tqdm

    root = Path(results_dir) if results_dir else default_results_dir()
    root.mkdir(parents=True, exist_ok=True)
    jobs = expand(plan, only)
    # papermill logs every notebook's paths at INFO; the progress bar says enough.
    logging.getLogger("papermill").setLevel(logging.WARNING)
    say = report or tqdm.write
    results: list[JobResult] = []
    bar = tqdm(jobs, desc=f"plan {plan.name}", unit="run", disable=not progress, file=sys.stderr)
    for job in bar:
        bar.set_postfix_str(f"{job.experiment}/{job.run_id}")
        if not rerun and not job.always and is_complete(job, root):
            results.append(JobResult(job, "skipped", job.folder(root), job.output(root)))
            say(f"skip     {job.experiment}/{job.run_id} (completed earlier)")
            continue
        result = execute_job(job, root, kernel)
        results.append(result)
        if result.status == "completed":
            say(f"done     {job.experiment}/{job.run_id} in {result.seconds:.1f} s")
        else:
            where = (
                result.notebook if result.notebook.exists() else f"{result.folder} (no notebook:"
            )
            where = str(where) + ("" if result.notebook.exists() else " it failed before running)")
            say(f"FAILED   {job.experiment}/{job.run_id}: {result.error}\n         see {where}")
            if fail_fast:
                break
    bar.close()
    return results
