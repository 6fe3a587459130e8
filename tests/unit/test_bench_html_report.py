"""The page of a plan run, drawn from recorded runs: self-contained, every figure with its
caption, the targets with their intervals, every run linked, the environment."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from wasmop.bench import html_report
from wasmop.bench.notebook import run_summary
from wasmop.cli import main

RECORDED = Path(__file__).parent / "recorded_runs"
PLAN = "recorded"  # the plan name scripts/record_test_runs.py gives its runs
BY_HAND = "edge_network"  # its notebook ran outside the batch runner: no run.json


class Page(HTMLParser):
    """The parts of a page a reader meets: images, links, table cells, captions."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str]] = []
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append((values.get("alt") or "", values.get("src") or ""))
        if tag == "a":
            self.links.append(values.get("href") or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results tree of every recorded run, as the batch runner leaves it (but for one
    run by hand, without run.json), with one failed run, and the summary over them."""
    root = tmp_path_factory.mktemp("results")
    for source in sorted(RECORDED.glob("*/recorded")):
        folder = root / source.parent.name / "recorded"
        shutil.copytree(source, folder)
        if source.parent.name == BY_HAND:
            continue
        notebook = folder / f"{source.parent.name}.ipynb"
        notebook.write_text("{}")
        (folder / "run.json").write_text(
            json.dumps(
                {"status": "completed", "plan": PLAN, "experiment": source.parent.name,
                 "parameters": {"plan": PLAN, "replicas": 1}, "executed_notebook": str(notebook),
                 "started": f"2026-01-01T00:00:0{len(source.parent.name) % 10}", "seconds": 12.5}
            )
        )  # fmt: skip
    broken = root / "recovery" / "fault-node-kill_r1"
    broken.mkdir()
    (broken / "run.json").write_text(
        json.dumps({"status": "failed", "plan": PLAN, "experiment": "recovery",
                    "error": "TimeoutError: no Ready", "parameters": {"fault": "node-kill"}})
    )  # fmt: skip
    run_summary({"results_dir": str(root), "plan": PLAN, "run_id": "page"})
    return root


def page(results: Path) -> tuple[str, Page]:
    text = (results / "summary" / "page" / html_report.REPORT).read_text()
    parsed = Page()
    parsed.feed(text)
    return text, parsed


def test_every_summary_figure_is_embedded_with_its_caption(results: Path) -> None:
    text, parsed = page(results)
    pngs = sorted((results / "summary" / "page" / "figures").glob("*.png"))
    assert len(pngs) >= 9 and len(parsed.images) == len(pngs)
    captions = json.loads((results / "summary" / "page" / "figures" / "captions.json").read_text())
    assert set(captions) == {p.stem for p in pngs}
    assert [alt for alt, _ in parsed.images] == list(captions), "in the summary's order"
    for alt, src in parsed.images:
        assert src.startswith("data:image/png;base64,"), "self-contained: no image file needed"
        png = results / "summary" / "page" / "figures" / f"{alt}.png"
        assert base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()
    for caption in captions.values():
        assert html_report.html.escape(caption) in text


def test_targets_and_metrics_carry_n_and_their_interval(results: Path) -> None:
    _, parsed = page(results)
    words = " ".join(parsed.text)
    assert "Status update lag" in words and "95 % CI" in words
    summary = json.loads((results / "summary" / "page" / "summary.json").read_text())
    assert summary["intervals"]["level"] == 0.95
    for metric, described in summary["metrics"].items():
        assert "n" in described, metric
        assert metric in words
    # The recorded load run served 144 requests without a failure: a Wilson interval.
    assert re.search(r"100\.000 %\s*\[97\.\d+ %, 100\.000 %\]", words)


def test_every_run_is_listed_with_working_links(results: Path) -> None:
    _, parsed = page(results)
    base = results / "summary" / "page"
    words = " ".join(parsed.text)
    assert "TimeoutError: no Ready" in words, "a failed run is shown, not dropped"
    assert any(link.endswith(f"{BY_HAND}/recorded/conditions.csv") for link in parsed.links)
    runs = len(list(RECORDED.glob("*/recorded"))) + 1
    assert f"{runs} runs of the plan (1 not completed)" in words
    assert "fault-node-kill_r1" in words
    local = [link for link in parsed.links if not link.startswith(("http:", "https:"))]
    assert any(link.endswith("load_latency.ipynb") for link in local)
    assert any(link.endswith("request_summary.csv") for link in local)
    for link in local:
        assert not Path(link).is_absolute(), "links stay relative, so the tree can move"
        assert (base / link).resolve().exists(), link


def test_the_plan_and_environment_are_shown(results: Path) -> None:
    _, parsed = page(results)
    words = " ".join(parsed.text)
    assert "Plan" in words and PLAN in words
    assert "Python" in words and "pandas" in words


def test_the_report_command_writes_the_page_again(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = results / "summary" / "page"
    (folder / html_report.REPORT).unlink()
    assert main(["experiments", "report", str(folder)]) == 0
    assert (folder / html_report.REPORT).exists()
    assert str(folder / html_report.REPORT) in capsys.readouterr().out
    assert main(["experiments", "report", str(results / "load_latency")]) != 0


def test_the_reference_keeps_small_files_and_a_report_whose_links_work(
    results: Path, tmp_path: Path
) -> None:
    import runpy

    script = Path(__file__).parents[2] / "scripts" / "make_reference.py"
    make_reference = runpy.run_path(str(script))
    big = results / "load_latency" / "recorded" / "huge.csv"
    big.write_bytes(b"x" * (make_reference["MAX_TABLE_BYTES"] + 1))
    try:
        assert make_reference["main"]([str(results), "--to", str(tmp_path / "ref")]) == 0
    finally:
        big.unlink()
    reference = tmp_path / "ref"
    assert not list(reference.rglob("raw")) and not list(reference.rglob("*.parquet"))
    assert not (reference / "load_latency" / "recorded" / "huge.csv").exists()
    readme = (reference / "README.md").read_text()
    assert "load_latency/recorded/huge.csv" in readme, "what was left out is named"
    assert "summary/page/report.html" in readme and "| Target |" in readme
    text = (reference / "summary" / "page" / html_report.REPORT).read_text()
    parsed = Page()
    parsed.feed(text)
    local = [link for link in parsed.links if not link.startswith(("http:", "https:"))]
    assert any(link.endswith("request_summary.csv") for link in local)
    assert not any(link.endswith("huge.csv") for link in local)
    for link in local:
        assert (reference / "summary" / "page" / link).resolve().exists(), link
