"""Read many runs back: the summary notebook's data layer.

Pools what each run recorded (``observations.csv``, ``summary.json`` counts, tables) so
the figures and the targets table are computed over all repetitions of an experiment,
from the raw values rather than from averaged summaries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from wasmop.bench.run import default_results_dir, ratios_from_counts
from wasmop.bench.stats import describe, describe_groups, proportion
from wasmop.bench.targets import grouped_contexts

log = logging.getLogger(__name__)


def run_folders(
    results_dir: Path | str | None = None, experiments: Iterable[str] | None = None
) -> list[Path]:
    """Every finished run folder (one with a summary.json), oldest first by run id."""
    root = Path(results_dir) if results_dir else default_results_dir()
    wanted = set(experiments) if experiments else None
    folders = []
    for summary in sorted(root.glob("*/*/summary.json")):
        folder = summary.parent
        if wanted is not None and folder.parent.name not in wanted:
            continue
        folders.append(folder)
    return folders


def runs(
    results_dir: Path | str | None = None,
    experiments: Iterable[str] | None = None,
    plan: str | None = None,
) -> pd.DataFrame:
    """One row per run: experiment, run id, folder, and its parameters (flattened)."""
    rows = []
    for folder in run_folders(results_dir, experiments):
        try:
            summary = json.loads((folder / "summary.json").read_text())
        except (OSError, ValueError) as exc:
            log.warning("skipping %s: %s", folder, exc)
            continue
        params = summary.get("params", {})
        if plan is not None and params.get("plan") != plan:
            continue
        row: dict[str, Any] = {
            "experiment": summary.get("experiment", folder.parent.name),
            "run_id": summary.get("run_id", folder.name),
            "folder": str(folder),
        }
        row.update({f"param_{k}": _scalar(v) for k, v in params.items()})
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["experiment", "run_id", "folder"])


def _scalar(value: Any) -> Any:
    return (
        value if isinstance(value, str | int | float | bool) or value is None else json.dumps(value)
    )


def load_table(run_table: pd.DataFrame, name: str) -> pd.DataFrame:
    """Concatenate ``<name>.csv`` of the given runs (missing files are skipped)."""
    frames = []
    for folder in run_table.get("folder", []):
        path = Path(folder) / f"{name}.csv"
        if path.exists():
            frame = pd.read_csv(path)
            if not frame.empty:
                frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_summaries(run_table: pd.DataFrame) -> list[dict[str, Any]]:
    summaries = []
    for folder in run_table.get("folder", []):
        path = Path(folder) / "summary.json"
        if path.exists():
            summaries.append(json.loads(path.read_text()))
    return summaries


def pooled_metrics(run_table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Statistics of every metric over all the runs' observations, each with its 95 %
    interval, plus ratios from summed counts. ``concurrent_ready_ratio`` comes from the
    runs with the largest concurrent batch only: 100 at once is not ten batches of ten
    (its ``batch`` is that size, its ``n`` every function of those batches)."""
    observations = load_table(run_table, "observations")
    stats: dict[str, dict[str, float]] = {}
    if not observations.empty and "metric" in observations:
        for metric, group in observations.groupby("metric"):
            stats[str(metric)] = describe(group["value"], ci=True)
        stats.update(describe_groups(observations, grouped_contexts()))
    summaries = load_summaries(run_table)
    totals: dict[str, float] = {}
    for summary in summaries:
        for key, value in (summary.get("counts") or {}).items():
            totals[key] = totals.get(key, 0) + float(value)
    stats.update(ratios_from_counts(totals))
    batches = [
        (
            s["counts"].get("concurrent_deploy_total", 0),
            s["counts"].get("concurrent_deploy_ready", 0),
        )
        for s in summaries
        if (s.get("counts") or {}).get("concurrent_deploy_total")
    ]
    if batches:
        largest = max(total for total, _ in batches)
        ready = sum(r for t, r in batches if t == largest)
        runs_at_largest = sum(1 for t, _ in batches if t == largest)
        stats["concurrent_ready_ratio"] = {
            **proportion(ready, largest * runs_at_largest),
            "batch": largest,
        }
    return stats


def metric_values(run_table: pd.DataFrame, metric: str, by: str | None = None) -> Any:
    """Raw values of one metric, optionally grouped by a context column or parameter."""
    observations = load_table(run_table, "observations")
    if observations.empty or "metric" not in observations:
        return {} if by else []
    selected = observations[observations["metric"] == metric]
    if by is None:
        return selected["value"].tolist()
    if by not in selected and f"param_{by}" in run_table:
        params = run_table[["run_id", f"param_{by}"]].rename(columns={f"param_{by}": by})
        selected = selected.merge(params, on="run_id", how="left")
    if by not in selected:
        return {"all": selected["value"].tolist()}
    return {_label(k): g["value"].tolist() for k, g in selected.groupby(by, sort=True)}


def _label(value: Any) -> str:
    """A group key as text: 10.0 (a parameter column with gaps is float) reads 10."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def describe_by(
    frame: pd.DataFrame, by: str | Sequence[str], columns: str | Sequence[str]
) -> pd.DataFrame:
    """Exact statistics of each of ``columns`` per value of ``by`` (e.g. create-to-Ready
    and status lag per mode and concurrency) with their 95 % intervals, one row each;
    rows with ``ok`` False count as failures, not values."""
    keys = [by] if isinstance(by, str) else list(by)
    names = [columns] if isinstance(columns, str) else list(columns)
    rows = []
    if frame.empty or any(k not in frame for k in keys) or any(c not in frame for c in names):
        return pd.DataFrame(rows)
    for key, group in frame.groupby(keys, sort=True):
        ok = group[group["ok"].astype(bool)] if "ok" in group else group
        row: dict[str, Any] = dict(zip(keys, key, strict=True))
        row.update({"observations": len(group), "failures": len(group) - len(ok)})
        for column in names:
            stats = describe(ok[column], ci=True)
            row.update({f"{column}_{k}": v for k, v in stats.items() if k != "n"})
        rows.append(row)
    return pd.DataFrame(rows)


def of_mode(run_table: pd.DataFrame, mode: str = "operator") -> pd.DataFrame:
    """The runs of one mode: ``plain`` runs are the baseline without the operator, never
    pooled with its figures. A run without a mode parameter is the operator's."""
    if run_table.empty or "param_mode" not in run_table:
        return run_table if mode == "operator" else run_table.iloc[0:0]
    return run_table[run_table["param_mode"].fillna("operator") == mode]


def figure_index(results_dir: Path | str | None = None) -> pd.DataFrame:
    """Every figure written by any run: experiment, run id, name, png and pdf paths."""
    rows = []
    for folder in run_folders(results_dir):
        for png in sorted((folder / "figures").glob("*.png")):
            rows.append(
                {
                    "experiment": folder.parent.name,
                    "run_id": folder.name,
                    "figure": png.stem,
                    "png": str(png),
                    "pdf": str(png.with_suffix(".pdf")) if png.with_suffix(".pdf").exists() else "",
                }
            )
    return pd.DataFrame(rows, columns=["experiment", "run_id", "figure", "png", "pdf"])


def select_runs(run_table: pd.DataFrame, keys: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Filter runs whose parameters equal ``keys`` (``param_<k>`` columns)."""
    table = run_table
    for key, value in (keys or {}).items():
        column = f"param_{key}"
        if column in table:
            table = table[table[column] == value]
    return table
