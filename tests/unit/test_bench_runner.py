"""Experiment plans: validation, expansion into runs, deterministic run ids, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from wasmop.bench import runner
from wasmop.bench.runner import PlanError, expand, is_complete, load_plan, parse_plan, run_id_for


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    path = tmp_path / "nb.ipynb"
    path.write_text("{}")
    return path


def plan_data(notebook: Path, **entry: object) -> dict:
    return {"name": "t", "experiments": [{"notebook": str(notebook), **entry}]}


def test_grid_times_repetitions_in_order(notebook: Path) -> None:
    plan = parse_plan(
        {
            "name": "t",
            "defaults": {"smoke": True},
            "experiments": [
                {
                    "notebook": str(notebook),
                    "experiment": "deploy",
                    "grid": {"concurrency": [1, 10], "mode": ["operator", "plain"]},
                    "parameters": {"workload": "hello"},
                    "repetitions": 2,
                },
                {"notebook": str(notebook), "always": True, "label": "sum"},
            ],
        }
    )
    jobs = expand(plan)
    assert len(jobs) == 2 * 2 * 2 + 1
    first = jobs[0]
    assert first.experiment == "deploy" and first.repetition == 1
    assert first.parameters == {
        "smoke": True,
        "workload": "hello",
        "concurrency": 1,
        "mode": "operator",
    }
    assert first.run_id.startswith("concurrency-1_mode-operator_r1_")
    assert len({j.run_id for j in jobs}) == len(jobs)
    assert jobs[-1].always and jobs[-1].run_id.startswith("sum_r1_")
    injected = first.injected(Path("/res"))
    assert injected["run_id"] == first.run_id and injected["results_dir"] == "/res"
    assert injected["plan"] == "t" and injected["experiment"] == "deploy"
    assert [j.experiment for j in expand(plan, only=["deploy"])] == ["deploy"] * 8


def test_run_ids_are_stable_and_change_with_any_parameter() -> None:
    a = run_id_for({"c": 1}, 1, {"c": 1, "w": "hello"})
    assert a == run_id_for({"c": 1}, 1, {"w": "hello", "c": 1})
    assert a != run_id_for({"c": 1}, 1, {"c": 1, "w": "fib"})
    assert a != run_id_for({"c": 1}, 2, {"c": 1, "w": "hello"})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"grid": {"c": []}}, "grid"),
        ({"grid": {"c": 1}}, "grid"),
        ({"repetitions": 0}, "repetitions"),
        ({"parameters": {"run_id": "x"}}, "set by the runner"),
        ({"colour": "red"}, "unknown keys"),
    ],
)
def test_bad_entries_are_named(notebook: Path, entry: dict, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_plan(plan_data(notebook, **entry))


def test_bad_plans_are_refused(notebook: Path, tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="experiments"):
        parse_plan({"name": "x", "experiments": []})
    with pytest.raises(PlanError, match="not found"):
        parse_plan({"experiments": [{"notebook": "missing.ipynb"}]})
    with pytest.raises(PlanError, match="unknown plan"):
        load_plan("no-such-plan")
    broken = tmp_path / "broken.yaml"
    broken.write_text("experiments: [")
    with pytest.raises(PlanError, match="YAML"):
        load_plan(broken)


def test_notebooks_resolve_next_to_the_plan_file(tmp_path: Path, notebook: Path) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    path = plans / "mine.yaml"
    path.write_text(yaml.safe_dump({"experiments": [{"notebook": "nb.ipynb"}]}))
    plan = load_plan(path)
    assert plan.name == "mine" and plan.experiments[0].notebook == notebook.resolve()


@pytest.mark.parametrize("name", ["quick", "full"])
def test_builtin_plans_cover_every_notebook(name: str) -> None:
    plan = load_plan(name)
    jobs = expand(plan)
    notebooks = {p.name for p in runner.notebooks_dir().glob("*.ipynb")}
    assert {j.notebook.name for j in jobs} == notebooks
    assert jobs[-1].notebook.name == "summary.ipynb" and jobs[-1].always
    assert len({(j.experiment, j.run_id) for j in jobs}) == len(jobs)


@pytest.mark.parametrize("path", sorted(runner.notebooks_dir().glob("*.ipynb")), ids=str)
def test_every_notebook_is_valid_with_unique_cell_ids(path: Path) -> None:
    """Two branches that each add a cell can merge into two cells of one id: nbformat
    then renames one at every run and warns. (Read as stored: nbformat's reader would
    rename it before anyone looked.)"""
    import nbformat

    stored = json.loads(path.read_text())
    ids = [cell["id"] for cell in stored["cells"]]
    nbformat.validate(nbformat.from_dict(stored))
    assert len(set(ids)) == len(ids), f"{path.name}: a cell id is repeated in {ids}"


def test_completion_is_read_from_the_run_file(notebook: Path, tmp_path: Path) -> None:
    job = expand(parse_plan(plan_data(notebook)))[0]
    assert not is_complete(job, tmp_path)
    folder = job.folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": "failed"}))
    assert not is_complete(job, tmp_path)
    (folder / "run.json").write_text(json.dumps({"status": "completed"}))
    assert is_complete(job, tmp_path)


@pytest.mark.parametrize("name", ["quick", "full"])
def test_builtin_plans_pass_only_parameters_their_notebooks_declare(name: str) -> None:
    """papermill only warns of a parameter the notebook's parameters cell lacks, and a
    reader of the notebook then cannot see what the run was given (the full plan's scale
    step passed wave_timeout_s unseen)."""
    import papermill

    declared: dict[str, set[str]] = {}
    for job in expand(load_plan(name)):
        path = job.notebook
        if path.name not in declared:
            declared[path.name] = set(papermill.inspect_notebook(str(path)))
        undeclared = set(job.parameters) - declared[path.name]
        assert not undeclared, f"{name}: {path.name} does not declare {sorted(undeclared)}"
