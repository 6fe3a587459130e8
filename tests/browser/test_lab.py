"""A researcher's path through a real browser: open the lab, open an experiment notebook,
run it on the wasmop kernel against the embedded cluster, read its outputs; then open the
plan's report page and see every figure.

The notebook is ``notebooks/deployment_latency.ipynb`` with small parameters injected
the way papermill injects a plan's (one function; results into this test's folder).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from browser_support import Lab, start_lab
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait
from wasmop.bench import html_report, runner
from wasmop.bench.notebook import run_summary

pytestmark = [pytest.mark.integration, pytest.mark.browser]

NOTEBOOK = "deployment_latency.ipynb"
PLAN = "browser"
RUN_ID = "lab"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, cluster) -> Path:  # type: ignore[no-untyped-def]
    """A folder with the experiment notebook, its parameters injected, and a results dir."""
    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks").mkdir()
    notebook = load_notebook_node(str(runner.notebooks_dir() / NOTEBOOK))
    parameters = {
        "experiment": "deployment_latency", "run_id": RUN_ID, "plan": PLAN,
        "results_dir": str(root / "results"), "concurrency": 1, "timeout_s": 120,
    }  # fmt: skip
    notebook = parameterize_notebook(notebook, parameters)
    nbformat.write(notebook, root / "notebooks" / NOTEBOOK)
    return root


@pytest.fixture(scope="module")
def lab(workspace: Path, output_dir: Path) -> Iterator[Lab]:
    process, handle = start_lab(workspace / "notebooks", output_dir / "lab.log")
    yield handle
    process.terminate()
    process.wait(timeout=30)


def run_all_cells(driver: WebDriver) -> None:
    """Run → Run All Cells, as a person would."""
    wait = WebDriverWait(driver, 30)
    menu = wait.until(
        ready.element_to_be_clickable(
            (By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][normalize-space()='Run']")
        )
    )
    menu.click()
    wait.until(
        ready.element_to_be_clickable(
            (By.CSS_SELECTOR, 'li.lm-Menu-item[data-command="runmenu:run-all"]')
        )
    ).click()


def prompts(driver: WebDriver) -> list[str]:
    return [p.text for p in driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]


def kernel_state(lab: Lab) -> tuple[str, str]:
    sessions = [s for s in json.loads(lab.api("sessions")) if s["path"] == NOTEBOOK]
    if not sessions:
        return "", ""
    return sessions[0]["kernel"]["name"], sessions[0]["kernel"]["execution_state"]


def test_a_notebook_runs_in_the_lab_on_the_wasmop_kernel(
    browser: WebDriver, lab: Lab, workspace: Path, output_dir: Path
) -> None:
    browser.get(lab.url(f"lab/tree/{NOTEBOOK}"))
    WebDriverWait(browser, 60).until(
        ready.presence_of_element_located((By.CSS_SELECTOR, ".jp-NotebookPanel .jp-CodeCell"))
    )
    deadline = time.monotonic() + 60
    while kernel_state(lab) != ("wasmop", "idle") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert kernel_state(lab) == ("wasmop", "idle"), "the notebook opens on the wasmop kernel"

    run_all_cells(browser)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        shown = prompts(browser)
        executed = bool(shown) and all(re.fullmatch(r"\[\d+\]:", p) for p in shown)
        if executed and kernel_state(lab)[1] == "idle":
            break
        time.sleep(1)
    browser.save_screenshot(str(output_dir / "lab_notebook.png"))
    shown = prompts(browser)
    assert shown and all(re.fullmatch(r"\[\d+\]:", p) for p in shown), f"cells not run: {shown}"

    outputs = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
    kinds = [o.get_attribute("data-mime-type") for o in outputs]
    errors = [o.text for o in outputs if o.get_attribute("data-mime-type").endswith("stderr")]
    assert not errors, f"the notebook wrote to stderr: {errors}"
    text = "\n".join(o.text for o in outputs)
    folder = workspace / "results" / "deployment_latency" / RUN_ID
    assert f"run {RUN_ID} -> {folder}" in text
    # The targets table, rendered as Markdown, with its interval column.
    tables = browser.find_elements(By.CSS_SELECTOR, ".jp-RenderedMarkdown table")
    assert any("Deployment latency" in t.text and "95 % CI" in t.text for t in tables)
    assert "image/png" in kinds, "the notebook shows its figures"
    images = browser.execute_script(
        "return Array.from(document.querySelectorAll('.jp-OutputArea-output img'))"
        ".map(i => [i.complete, i.naturalWidth])"
    )
    assert images and all(done and width > 0 for done, width in images)

    # A second picture where the outputs are: the targets table and the first figure.
    browser.execute_script("arguments[0].scrollIntoView()", tables[0])
    browser.save_screenshot(str(output_dir / "lab_outputs.png"))

    summary = json.loads((folder / "summary.json").read_text())
    latency = summary["metrics"]["deploy_latency_ms"]
    assert latency["n"] == 1 and 0 < latency["p50"] < 120_000
    assert "without encryption" not in lab.log.read_text(), "kernels run encrypted"


def test_the_report_page_shows_every_figure(
    browser: WebDriver, lab: Lab, workspace: Path, output_dir: Path
) -> None:
    results = workspace / "results"
    assert (results / "deployment_latency" / RUN_ID / "summary.json").exists(), (
        "the notebook test ran first"
    )
    run_summary({"results_dir": str(results), "plan": PLAN, "run_id": "page"})
    page = results / "summary" / "page" / html_report.REPORT
    browser.get(page.as_uri())
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)")
    )
    browser.set_window_size(1400, 1000)
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1400, min(int(height), 16000))
    browser.save_screenshot(str(output_dir / "report.png"))
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"
    )
    figures = sorted(p.stem for p in (page.parent / "figures").glob("*.png"))
    assert sorted(alt for alt, _, _ in images) == figures
    broken = [alt for alt, done, width in images if not (done and width > 0)]
    assert not broken, f"figures that did not load: {broken}"
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "Deployment latency" in text and "95 % CI" in text
    assert "deploy_latency_ms" in text, "every metric is listed"
