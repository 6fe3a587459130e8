"""The batch runner executes notebooks with papermill, resumes, and reports failures."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook
from wasmop.bench.runner import notebooks_dir
from wasmop.bench.targets import TARGETS
from wasmop.cli import main

pytestmark = pytest.mark.integration


def failing_notebook(path: Path) -> Path:
    cells = [
        new_code_cell("experiment = 'x'\nrun_id = None\nresults_dir = None\nplan = 'p'\n",
                      metadata={"tags": ["parameters"]}),
        new_code_cell("raise RuntimeError('deliberate failure')"),
    ]  # fmt: skip
    nbformat.write(new_notebook(cells=cells), path)
    return path


def test_second_run_skips_completed_work(cluster, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        yaml.safe_dump(
            {
                "name": "resume",
                "experiments": [
                    {
                        "notebook": str(notebooks_dir() / "load_latency.ipynb"),
                        "parameters": {"mode": "plain", "users": 2, "run_time_s": 3,
                                       "replicas": 1},
                    },
                    {"notebook": str(notebooks_dir() / "summary.ipynb"), "always": True},
                ],
            }
        )
    )  # fmt: skip
    results = tmp_path / "results"
    args = ["experiments", "run", "--plan", str(plan), "--results", str(results), "--no-progress"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "2 completed, 0 skipped, 0 failed" in first

    [load_run] = list((results / "load_latency").iterdir())
    record = json.loads((load_run / "run.json").read_text())
    assert record["status"] == "completed" and record["parameters"]["plan"] == "resume"
    assert (load_run / "load_latency.ipynb").exists()
    requests = pd.read_csv(load_run / "requests.csv")
    assert {"timestamp_ms", "latency_ms", "status", "pod", "ok"} <= set(requests.columns)
    assert len(requests) > 0 and requests["ok"].all()
    assert (requests["latency_ms"] > 0).all() and (requests["latency_ms"] < 10_000).all()
    assert (load_run / "figures" / "latency_cdf.png").exists()
    assert (load_run / "figures" / "latency_cdf.pdf").exists()
    summary = json.loads((load_run / "summary.json").read_text())
    assert summary["counts"]["plain_requests_total"] == len(requests)
    env = json.loads((load_run / "env.json").read_text())
    assert env["kubernetes"]["server_version"].startswith("v1.")
    assert env["git"]["commit"]

    assert main(args) == 0
    second = capsys.readouterr().out
    assert "1 completed, 1 skipped, 0 failed" in second  # the summary always runs again
    assert list((results / "load_latency").iterdir()) == [load_run]
    [summary_run] = list((results / "summary").iterdir())
    targets = pd.read_csv(summary_run / "targets.csv")
    assert list(targets["target"]) == [t.label for t in TARGETS] and "verdict" in targets


def test_a_failure_names_the_executed_notebook(cluster, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    notebook = failing_notebook(tmp_path / "broken.ipynb")
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"experiments": [{"notebook": str(notebook)}]}))
    results = tmp_path / "results"
    args = ["experiments", "run", "--plan", str(plan), "--results", str(results), "--no-progress"]
    assert main(args) == 1
    out = capsys.readouterr().out
    [run] = list((results / "broken").iterdir())
    executed = run / "broken.ipynb"
    assert executed.exists() and str(executed) in out
    assert "deliberate failure" in out
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and "RuntimeError" in record["error"]
    # A failed run is not complete: resuming tries it again.
    assert main(args) == 1
    assert "0 skipped, 1 failed" in capsys.readouterr().out


def test_kernel_is_registered(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from jupyter_client.kernelspec import KernelSpecManager

    assert main(["experiments", "kernel"]) == 0
    spec = KernelSpecManager().get_kernel_spec("wasmop")
    import sys

    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()
