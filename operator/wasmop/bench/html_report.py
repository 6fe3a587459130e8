"""One page per plan run: ``results/summary/<run>/report.html``.

Self-contained (the summary's figures are embedded as PNG data, the style is inline), so
the page can be mailed or archived alone; it links, relative to itself, to each run's
tables, figures and executed notebook, which work wherever the results tree goes with it.
It holds the targets table with each estimate's 95 % interval, every metric with n and
its interval, every summary figure with its caption, the plan and each of its runs, and
the environment and software versions.

It is written from files only (the summary run folder and the run folders beside it), so
``wasmop experiments report <summary-run-dir>`` draws it again at any time.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from wasmop.bench.runner import RUN_FILE, PlanError, resolve_plan_path
from wasmop.bench.stats import STATISTICS
from wasmop.bench.targets import format_interval, format_value

REPORT = "report.html"
SUMMARY_EXPERIMENT = "summary"

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #111; line-height: 1.4; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem;
       border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left;
         vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; white-space: nowrap; }
.holds { color: #05610f; } .missed { color: #a00000; font-weight: bold; }
.failed { color: #a00000; font-weight: bold; }
figure { margin: 1.5rem 0; } figure img { max-width: min(100%, 48rem); border: 1px solid #ddd; }
figcaption { font-size: 0.9rem; color: #333; margin-top: 0.3rem; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; font-size: 0.85rem; }
.note { font-size: 0.85rem; color: #444; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _link(target: Path, base: Path, text: str) -> str:
    return f'<a href="{_e(os.path.relpath(target, base))}">{_e(text)}</a>'


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int]) -> str:
    """An HTML table of cells that are already HTML."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number  # NaN


# --------------------------------------------------------------------------- sections


def _targets_section(folder: Path) -> str:
    path = folder / "targets.csv"
    if not path.exists():
        return "<p>No targets table was written.</p>"
    frame = pd.read_csv(path)
    rows = []
    for _, row in frame.iterrows():
        unit = str(row["unit"])
        measured = _number(row.get("measured"))
        estimate = format_value(measured, unit)
        if measured is not None and row["statistic"] != "value":
            estimate = f"{row['statistic']} {estimate}"
        interval = format_interval(_number(row.get("ci_low")), _number(row.get("ci_high")), unit)
        verdict = str(row["verdict"])
        css = verdict.split(" ")[0] if verdict.startswith(("holds", "missed")) else ""
        note = row.get("note")
        note = "" if note is None or pd.isna(note) or not str(note) else f": {note}"
        rows.append(
            [
                _e(row["target"]),
                _e(row["requirement"]),
                _e(estimate),
                _e(interval),
                _e(int(row["n"]) if _number(row["n"]) is not None else "-"),
                f'<span class="{css}">{_e(verdict)}</span>{_e(note)}',
            ]
        )
    return _table(
        ["target", "requirement", "estimate", "95 % CI", "n", "verdict"], rows, numeric={4}
    )


def _unit(metric: str) -> str:
    for suffix, unit in (("_ms", "ms"), ("_mib", "MiB"), ("_millicores", "millicores")):
        if metric.endswith(suffix):
            return unit
    return "ratio" if metric.endswith("_ratio") else ""


def _metrics_section(summary: Mapping[str, Any]) -> str:
    metrics = summary.get("metrics") or {}
    if not metrics:
        return "<p>No metrics were recorded.</p>"
    shown = ("value", "p50", "p95", "mean", "max")
    rows = []
    for metric, described in sorted(metrics.items()):
        unit = _unit(metric)
        cells = []
        for statistic in shown:
            value = _number(described.get(statistic))
            if value is None:
                cells.append("")
                continue
            interval = format_interval(
                _number(described.get(f"{statistic}_ci_low")),
                _number(described.get(f"{statistic}_ci_high")),
                unit,
            )
            cells.append(f"{_e(format_value(value, unit))}<br><small>{_e(interval)}</small>")
        n = _number(described.get("n"))
        rows.append([_e(metric), _e(int(n) if n is not None else "-"), *cells])
    return _table(["metric", "n", *shown], rows, numeric=set(range(1, 2 + len(shown))))


def _figures_section(folder: Path) -> str:
    """Every figure, in the order the summary drew them (its captions' order)."""
    figures = folder / "figures"
    captions = _read_json(figures / "captions.json") or {}
    pngs = {png.stem: png for png in figures.glob("*.png")}
    order = [name for name in captions if name in pngs] + sorted(set(pngs) - set(captions))
    parts = []
    for name in order:
        png = pngs[name]
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        pdf = png.with_suffix(".pdf")
        vector = f" ({_link(pdf, folder, 'PDF')})" if pdf.exists() else ""
        parts.append(
            f'<figure id="figure-{_e(name)}"><img alt="{_e(name)}"'
            f' src="data:image/png;base64,{data}">'
            f"<figcaption><b>{_e(name)}</b>: {_e(captions.get(name, ''))}{vector}"
            "</figcaption></figure>"
        )
    return "".join(parts) or "<p>No figures were written.</p>"


def plan_runs(
    results_dir: Path, plan: str | None, exclude: str = SUMMARY_EXPERIMENT
) -> list[dict[str, Any]]:
    """Every run of ``plan`` (all plans for None) under ``results_dir``, oldest first,
    finished or not: its ``run.json`` as the batch runner wrote it, or for a notebook run
    by hand (no ``run.json``) what its ``summary.json`` says; with its folder."""
    records: dict[Path, dict[str, Any]] = {}
    for path in results_dir.glob(f"*/*/{RUN_FILE}"):
        record = _read_json(path)
        if isinstance(record, dict):
            records[path.parent] = record
    for path in results_dir.glob("*/*/summary.json"):
        if path.parent in records:
            continue
        summary = _read_json(path)
        if not isinstance(summary, dict):
            continue
        params = summary.get("params") or {}
        started = _number(summary.get("started_ms"))
        finished = _number(summary.get("finished_ms"))
        records[path.parent] = {
            "status": "completed",
            "plan": params.get("plan"),
            "experiment": summary.get("experiment", path.parent.parent.name),
            "parameters": params,
            "started": datetime.fromtimestamp(started / 1000, UTC).isoformat(timespec="seconds")
            if started is not None
            else "",
            "seconds": (finished - started) / 1000 if started and finished else None,
        }
    selected = [
        {**record, "folder": folder}
        for folder, record in records.items()
        if record.get("experiment") != exclude and (plan is None or record.get("plan") == plan)
    ]
    return sorted(selected, key=lambda r: (str(r.get("started", "")), str(r["folder"])))


def _runs_section(records: Sequence[Mapping[str, Any]], base: Path) -> str:
    if not records:
        return "<p>No runs of this plan were found beside the summary.</p>"
    rows = []
    for record in records:
        folder = Path(record["folder"])
        parameters = {
            k: v
            for k, v in (record.get("parameters") or {}).items()
            if k not in ("experiment", "run_id", "results_dir", "plan")
        }
        status = str(record.get("status", "?"))
        css = "failed" if status != "completed" else ""
        if record.get("error"):
            status += f": {record['error']}"
        # By name beside the run's files: the tree may have moved since it ran.
        notebook = folder / Path(str(record.get("executed_notebook") or "-")).name
        links = [_link(notebook, base, "notebook")] if notebook.is_file() else []
        links += [_link(csv, base, csv.name) for csv in sorted(folder.glob("*.csv"))]
        links += [
            _link(png, base, f"{png.stem}.png") for png in sorted(folder.glob("figures/*.png"))
        ]
        seconds = _number(record.get("seconds"))
        rows.append(
            [
                _e(record.get("experiment")),
                _e(folder.name),
                f"<code>{_e(json.dumps(parameters, sort_keys=True))}</code>",
                f'<span class="{css}">{_e(status)}</span>',
                _e(f"{seconds:.0f} s" if seconds is not None else "-"),
                " · ".join(links) or "-",
            ]
        )
    return _table(
        ["experiment", "run", "parameters", "status", "time", "tables, figures, notebook"],
        rows,
        numeric={4},
    )


def _plan_section(plan: str | None) -> str:
    if plan is None:
        return "<p>All plans pooled (<code>all_plans</code>).</p>"
    try:
        path = resolve_plan_path(plan)
    except PlanError:
        return f"<p>Plan <code>{_e(plan)}</code> (its file is not in notebooks/plans/).</p>"
    return (
        f"<p>Plan <code>{_e(plan)}</code> from <code>{_e(path)}</code>:</p>"
        f"<pre>{_e(path.read_text())}</pre>"
    )


def _environment(records: Sequence[Mapping[str, Any]], folder: Path) -> dict[str, Any]:
    """The first run's environment that reached the cluster, else the summary's own."""
    fallback = _read_json(folder / "env.json") or {}
    for record in records:
        env = _read_json(Path(record["folder"]) / "env.json")
        if isinstance(env, dict) and "server_version" in (env.get("kubernetes") or {}):
            return env
    return fallback


def _environment_section(env: Mapping[str, Any]) -> str:
    if not env:
        return "<p>No environment was recorded.</p>"
    git = env.get("git") or {}
    machine = [
        ("recorded", env.get("time_utc")),
        ("host", env.get("hostname")),
        ("platform", env.get("platform")),
        ("CPU", f"{env.get('cpu_count')} cores, {env.get('cpu_model')}"),
        ("memory", f"{(_number(env.get('memory_total_mib')) or 0) / 1024:.1f} GiB"),
        ("Python", env.get("python")),
        ("wasmop commit", f"{git.get('commit')} ({git.get('branch')}"
         f"{', with uncommitted changes' if git.get('dirty') else ''})"),
    ]  # fmt: skip
    kubernetes = env.get("kubernetes") or {}
    if kubernetes.get("server_version"):
        machine.append(("Kubernetes", kubernetes["server_version"]))
    parts = [_table(["", ""], [[_e(k), _e(v)] for k, v in machine], numeric=set())]
    packages = env.get("packages") or {}
    if packages:
        parts.append("<h3>Software versions</h3>")
        parts.append(
            _table(
                ["package", "version"],
                [[_e(k), _e(v)] for k, v in sorted(packages.items())],
                numeric=set(),
            )
        )
    nodes = kubernetes.get("nodes") or []
    if nodes:
        columns = ["name", "zone", "ready", "kubelet_version", "cpu", "memory"]
        parts.append("<h3>Nodes</h3>")
        parts.append(
            _table(columns, [[_e(n.get(c)) for c in columns] for n in nodes], numeric=set())
        )
    cluster = env.get("embedded_cluster") or {}
    if cluster:
        parts.append("<h3>Embedded cluster settings</h3>")
        parts.append(
            _table(
                ["setting", "value"],
                [[_e(k), _e(v)] for k, v in sorted(cluster.items())],
                numeric=set(),
            )
        )
    return "".join(parts)


def _intervals_note(summary: Mapping[str, Any]) -> str:
    intervals = summary.get("intervals") or {}
    if not intervals:
        return ""
    return (
        '<p class="note">95 % confidence intervals: statistics (' + _e(", ".join(STATISTICS))
        + f") by {_e(intervals.get('statistics'))}; proportions by"
        f" {_e(intervals.get('proportions'))}. A verdict marked “95 % CI crosses the bound”"
        " holds (or misses) on the estimate, but not across its whole interval.</p>"
    )  # fmt: skip


# --------------------------------------------------------------------------- the page


def render(folder: Path | str) -> str:
    """The report of the summary run in ``folder`` as one HTML document."""
    folder = Path(folder).resolve()
    summary = _read_json(folder / "summary.json") or {}
    params = summary.get("params") or _read_json(folder / "params.json") or {}
    plan = None if params.get("all_plans") else params.get("plan")
    results_dir = folder.parent.parent
    records = plan_runs(results_dir, plan)
    failed = sum(1 for r in records if r.get("status") != "completed")
    title = f"wasmop experiments: plan {plan or 'all'}, summary {folder.name}"
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    sections = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">{len(records)} runs of the plan ({failed} not completed) in'
        f" <code>{_e(results_dir)}</code>; page written {_e(generated)}.</p>",
        '<h2 id="targets">Targets</h2>',
        _targets_section(folder),
        _intervals_note(summary),
        '<h2 id="metrics">Every metric, with n and its 95 % CI</h2>',
        _metrics_section(summary),
        '<h2 id="figures">Figures</h2>',
        _figures_section(folder),
        '<h2 id="runs">Runs</h2>',
        _runs_section(records, folder),
        '<h2 id="plan">Plan</h2>',
        _plan_section(plan),
        '<h2 id="environment">Environment</h2>',
        _environment_section(_environment(records, folder)),
    ]
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_report(folder: Path | str) -> Path:
    """Write ``report.html`` into the summary run ``folder``; returns its path."""
    path = Path(folder) / REPORT
    path.write_text(render(folder))
    return path
