"""Notebooks run on the wasmop kernel over an encrypted connection, so the kernel has
nothing to warn about: ``make experiments`` prints no kernel warnings."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from wasmop.bench import runner

pytestmark = pytest.mark.integration


def test_a_plan_run_prints_no_kernel_warning(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    runner.ensure_kernel()
    assert runner.kernel_encrypts(), "the wasmop kernel spec declares CurveZMQ support"
    notebook = tmp_path / "tiny.ipynb"
    cells = [nbformat.v4.new_code_cell("value = 1", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("print('answer', value + 1)")]  # fmt: skip
    nbformat.write(nbformat.v4.new_notebook(cells=cells), notebook)
    plan = runner.parse_plan(
        {"name": "tiny", "experiments": [{"notebook": str(notebook), "parameters": {"value": 41}}]}
    )
    [result] = runner.run_plan(plan, results_dir=tmp_path / "results", progress=False,
                               report=lambda _: None)  # fmt: skip
    assert result.status == "completed", result.error
    output = nbformat.read(result.notebook, as_version=4).cells[-1].outputs[0]["text"]
    assert output == "answer 42\n"
    # The kernel is a child process writing to the same file descriptors.
    captured = capfd.readouterr()
    assert "WARNING" not in captured.err and "without encryption" not in captured.err
    assert "WARNING" not in captured.out
