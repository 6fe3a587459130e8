#!/usr/bin/env python3
"""Make results/reference/ from a finished plan run (no cluster needed).

    make reference        # the quick plan into results/.reference-run/, then this script
    .venv/bin/python scripts/make_reference.py results/.reference-run [--to results/reference]

Keeps, for the newest summary run under the given results folder and every run of its
plan, what a reader needs and what stays small: parameters, summaries, environment,
run records, tables and figures (PNG) up to 256 KiB each, executed notebooks up to
1 MiB; raw/ data and Parquet copies stay behind. The layout is the results tree's own
(``<experiment>/<run-id>/``), so the summary's ``report.html``, written again here, links
to exactly the files that were kept. README.md says how the run was made and holds its
targets table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from wasmop.bench import html_report
from wasmop.cluster.layout import repo_root

MAX_TABLE_BYTES = 256 * 1024
MAX_NOTEBOOK_BYTES = 1024 * 1024
KEPT = ("run.json", "params.json", "summary.json", "env.json", "targets.md")


def newest_summary(results: Path) -> Path:
    summaries = sorted(
        results.glob(f"{html_report.SUMMARY_EXPERIMENT}/*/summary.json"),
        key=lambda p: p.stat().st_mtime,
    )
    if not summaries:
        raise SystemExit(f"no finished summary run under {results}/summary/")
    return summaries[-1].parent


def copy_run(source: Path, destination: Path, left_out: list[str]) -> None:
    """The small, readable part of one run folder."""
    destination.mkdir(parents=True)
    for name in KEPT:
        if (source / name).exists():
            shutil.copy2(source / name, destination / name)
    candidates = [
        *((p, MAX_TABLE_BYTES) for p in source.glob("*.csv")),
        *((p, MAX_TABLE_BYTES) for p in source.glob("figures/*.png")),
        *((p, MAX_TABLE_BYTES) for p in source.glob("figures/captions.json")),
        *((p, MAX_NOTEBOOK_BYTES) for p in source.glob("*.ipynb")),
    ]
    for path, limit in candidates:
        relative = path.relative_to(source)
        if path.stat().st_size > limit:
            left_out.append(f"{source.parent.name}/{source.name}/{relative}")
            continue
        (destination / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination / relative)


def readme(summary: Path, runs: int, left_out: list[str], seconds: float) -> str:
    data = json.loads((summary / "summary.json").read_text())
    env = json.loads((summary / "env.json").read_text()) if (summary / "env.json").exists() else {}
    git = env.get("git") or {}
    plan = (data.get("params") or {}).get("plan", "?")
    report = f"{html_report.SUMMARY_EXPERIMENT}/{summary.name}/{html_report.REPORT}"
    targets = (summary / "targets.md").read_text() if (summary / "targets.md").exists() else ""
    skipped = "".join(f"- `{name}`\n" for name in sorted(left_out)) or "- nothing\n"
    return f"""# Reference run

A run of the `{plan}` plan kept so readers see what `make experiments` produces. Open
**[{report}]({report})**: one self-contained page with the targets table (each estimate
with n and its 95 % confidence interval), every metric, every figure with its caption,
the plan and each run linked to its tables and executed notebook, and the environment.

How it was made: `make reference` (the `{plan}` plan into a fresh results folder with the
embedded cluster started and stopped around it, then `scripts/make_reference.py`), at
commit {git.get("commit", "?")}{" with uncommitted changes" if git.get("dirty") else ""},
on {env.get("cpu_count", "?")} CPUs ({env.get("cpu_model", "?")}); {runs} runs, the plan
took {seconds / 60:.1f} minutes of notebook time. Made {datetime.now(UTC):%Y-%m-%d}.

The layout is the results tree's: `<experiment>/<run-id>/` with `params.json`,
`summary.json` (every metric with n and its interval), `run.json` (status, time), the
tables (CSV) and figures (PNG); `summary/<run-id>/` holds the pooled figures, the targets
and the report. Left out: every run's `raw/` data, Parquet and PDF copies, and these
files over {MAX_TABLE_BYTES // 1024} KiB (tables, figures) or {MAX_NOTEBOOK_BYTES // 1024} KiB
(notebooks):

{skipped}
## Targets

{targets}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="the results folder the plan ran into")
    parser.add_argument("--to", type=Path, default=repo_root() / "results" / "reference")
    args = parser.parse_args(argv)
    summary = newest_summary(args.results.resolve())
    params = json.loads((summary / "params.json").read_text())
    plan = None if params.get("all_plans") else params.get("plan")
    records = html_report.plan_runs(args.results.resolve(), plan)
    if args.to.exists():
        shutil.rmtree(args.to)
    left_out: list[str] = []
    for record in records:
        folder = Path(record["folder"])
        copy_run(folder, args.to / folder.parent.name / folder.name, left_out)
    kept_summary = args.to / summary.parent.name / summary.name
    copy_run(summary, kept_summary, left_out)
    page = html_report.write_report(kept_summary)
    seconds = sum(float(r.get("seconds") or 0) for r in records)
    (args.to / "README.md").write_text(readme(kept_summary, len(records), left_out, seconds))
    size = sum(p.stat().st_size for p in args.to.rglob("*") if p.is_file())
    print(f"reference: {len(records)} runs, {size / 1024 / 1024:.1f} MiB in {args.to}")
    print(f"report: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
