"""Run Locust headless as a subprocess, and read back what it wrote.

Locust is never imported here: it monkey-patches the process with gevent, which breaks a
Jupyter kernel (and asyncio). :func:`run_locust` starts ``python -m locust`` with the
scenarios in ``loadtests/``, always headless, bounded by ``--run-time`` (and optionally a
request count), writing into one folder::

    locust_stats.csv, locust_stats_history.csv (full history), locust_failures.csv,
    locust_exceptions.csv   Locust's own CSV files, written once a second (so the
                            final second may be missing from locust_stats.csv)
    locust_final.json       Locust's exact final statistics per request name
    requests.csv            the raw per-request log (exact quantiles)
    locust.log, locust.out  Locust's log and its terminal output
    command.txt, exit.json  the command line; its exit status and duration

The readers take a :class:`LocustResult` or that folder, so an analysis can read a
recorded run's output long after Locust ran.

It exits non-zero when the failure ratio exceeds ``fail_ratio`` (see loadtests/_common).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from wasmop.bench.mix import MixEntry, format_mix
from wasmop.bench.net import check_target
from wasmop.bench.rawlog import RAW_COLUMNS
from wasmop.bench.shapes import Shape
from wasmop.cluster.layout import repo_root

log = logging.getLogger(__name__)

CSV_PREFIX = "locust"
HISTORY_CSV = f"{CSV_PREFIX}_stats_history.csv"
RAW_LOG = "requests.csv"
FINAL_STATS = "locust_final"  # Locust appends .json
EXIT_FILE = "exit.json"


def loadtests_dir() -> Path:
    return repo_root() / "loadtests"


class LocustFailed(RuntimeError):
    """Locust exited non-zero; the message carries the end of its log."""

    def __init__(self, message: str, result: LocustResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class LocustConfig:
    """One headless Locust run. ``scenarios`` are file names under loadtests/ (or paths)."""

    host: str
    scenarios: tuple[str, ...] = ("http_mix.py",)
    users: int = 10
    spawn_rate: float = 10.0
    run_time_s: float = 10.0
    functions: tuple[MixEntry, ...] = ()
    user_rps: float = 10.0
    shape: Shape | None = None
    fail_ratio: float = 0.0
    max_requests: int = 0
    stop_timeout_s: float = 5.0
    options: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_target(self.host)
        if self.run_time_s <= 0:
            raise ValueError("run_time_s must be positive: every run is bounded in time")
        if self.users < 0 or self.spawn_rate <= 0:
            raise ValueError("users must be >= 0 and spawn_rate positive")
        if not 0 <= self.fail_ratio <= 1:
            raise ValueError("fail_ratio is a ratio between 0 and 1")

    def scenario_paths(self) -> list[Path]:
        paths = []
        for scenario in self.scenarios:
            path = Path(scenario)
            if not path.is_absolute() and not path.exists():
                path = loadtests_dir() / scenario
            if not path.is_file():
                raise FileNotFoundError(f"no Locust scenario {scenario} (looked in {path})")
            paths.append(path)
        if self.shape is not None and not any(p.name == "shape.py" for p in paths):
            paths.append(loadtests_dir() / "shape.py")
        return paths


def ended_with_parent(command: list[str]) -> list[str]:
    """``command`` under ``setpriv --pdeathsig TERM``: it gets SIGTERM when the harness that
    started it dies, however it dies. A run stopped by its schedule (the chaos soak) is
    bounded only by that schedule; a killed harness must not leave Locust sending load
    into whatever listens on that port next. (setpriv, from util-linux, sets it before
    exec; a ``preexec_fn`` would not be safe in a process with threads.)"""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise FileNotFoundError("setpriv (util-linux) is needed to tie Locust to its harness")
    return [setpriv, "--pdeathsig", "TERM", "--", *command]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def locust_command(config: LocustConfig, out_dir: Path) -> list[str]:
    """The exact command line: also stored with the results for reproduction."""
    files = ",".join(str(p) for p in config.scenario_paths())
    command = [
        sys.executable, "-m", "locust",
        "-f", files,
        "--headless",
        "--host", config.host,
        "--users", str(config.users),
        "--spawn-rate", f"{config.spawn_rate:g}",
        "--run-time", f"{max(1, round(config.run_time_s))}s",
        "--stop-timeout", f"{config.stop_timeout_s:g}",
        "--csv", str(out_dir / CSV_PREFIX),
        "--csv-full-history",
        "--json-file", str(out_dir / FINAL_STATS),
        "--only-summary",
        "--logfile", str(out_dir / "locust.log"),
        "--loglevel", "INFO",
        "--raw-log", str(out_dir / RAW_LOG),
        "--fail-ratio", f"{config.fail_ratio:g}",
        "--max-requests", str(config.max_requests),
        "--user-rps", f"{config.user_rps:g}",
    ]  # fmt: skip
    if config.functions:
        command += ["--functions", format_mix(config.functions)]
    if config.shape is not None:
        command += ["--shape", config.shape.format()]
    for name, value in config.options.items():
        if isinstance(value, bool):
            if value:
                command.append(_flag(name))
        else:
            command += [_flag(name), str(value)]
    return command


@dataclass(frozen=True)
class LocustResult:
    returncode: int
    out_dir: Path
    command: tuple[str, ...]
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def stats_csv(self) -> Path:
        return self.out_dir / f"{CSV_PREFIX}_stats.csv"

    @property
    def history_csv(self) -> Path:
        return self.out_dir / HISTORY_CSV

    @property
    def final_json(self) -> Path:
        return self.out_dir / f"{FINAL_STATS}.json"

    @property
    def raw_log(self) -> Path:
        return self.out_dir / RAW_LOG

    @property
    def log_file(self) -> Path:
        return self.out_dir / "locust.log"

    @property
    def output_file(self) -> Path:
        return self.out_dir / "locust.out"

    def log_tail(self, lines: int = 20) -> str:
        text = ""
        for path in (self.log_file, self.output_file):
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class LocustProcess:
    """A headless Locust run in progress (see :func:`start_locust`)."""

    def __init__(self, config: LocustConfig, out_dir: Path) -> None:
        self.config = config
        self.out_dir = out_dir
        self.command = locust_command(config, out_dir)
        (out_dir / "command.txt").write_text(" ".join(self.command) + "\n")
        env = {**os.environ, **config.env}
        # The scenarios import `_common` from their own directory.
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(loadtests_dir()), env.get("PYTHONPATH", "")])
        )
        self.started = time.monotonic()
        log.info("locust: %s", " ".join(self.command))
        with (out_dir / "locust.out").open("w") as output:
            self.process = subprocess.Popen(
                ended_with_parent(self.command),
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    def wait(self, timeout_s: float) -> LocustResult:
        """Until Locust exits (killed once ``timeout_s`` has passed); its exit recorded."""
        try:
            returncode = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            returncode = -9
        result = LocustResult(
            returncode, self.out_dir, tuple(self.command), time.monotonic() - self.started
        )
        exit_record = {"returncode": returncode, "duration_s": round(result.duration_s, 3)}
        (self.out_dir / EXIT_FILE).write_text(json.dumps(exit_record) + "\n")
        return result

    def stop(self, grace_s: float = 30.0) -> LocustResult:
        """End the run now, as its run time would: SIGTERM lets Locust stop its users and
        write its statistics and raw log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(self.config.stop_timeout_s + grace_s)


def start_locust(config: LocustConfig, out_dir: Path | str) -> LocustProcess:
    """Start Locust and return at once; end it with ``stop()`` or ``wait()``. For load
    that runs beside something else (faults, say) for as long as that takes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return LocustProcess(config, out)


def run_locust(
    config: LocustConfig,
    out_dir: Path | str,
    *,
    check: bool = True,
    grace_s: float = 60.0,
) -> LocustResult:
    """Run Locust to completion (at most run time + stop timeout + ``grace_s``)."""
    result = start_locust(config, out_dir).wait(config.run_time_s + config.stop_timeout_s + grace_s)
    if check and not result.ok:
        reason = (
            "timed out and was killed" if result.returncode == -9 else f"exited {result.returncode}"
        )
        raise LocustFailed(f"locust {reason}; see {result.out_dir}:\n{result.log_tail()}", result)
    return result


# --------------------------------------------------------------------------- reading back


def _out_dir(source: LocustResult | Path | str) -> Path:
    return source.out_dir if isinstance(source, LocustResult) else Path(source)


def read_final(source: LocustResult | Path | str) -> pd.DataFrame:
    """Locust's exact final counts per request name (``--json-file``)."""
    columns = ["method", "name", "num_requests", "num_failures", "avg_response_time_ms"]
    final_json = _out_dir(source) / f"{FINAL_STATS}.json"
    if not final_json.exists():
        return pd.DataFrame(columns=columns)
    rows = []
    for entry in json.loads(final_json.read_text()):
        requests = entry.get("num_requests", 0)
        rows.append(
            {
                "method": entry.get("method"),
                "name": entry.get("name"),
                "num_requests": requests,
                "num_failures": entry.get("num_failures", 0),
                "avg_response_time_ms": entry.get("total_response_time", 0) / requests
                if requests
                else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def read_history(source: LocustResult | Path | str) -> pd.DataFrame:
    """Locust's statistics every second (``--csv-full-history``), with ``t_s`` from the
    first row."""
    frame = pd.read_csv(_out_dir(source) / HISTORY_CSV)
    if not frame.empty and "Timestamp" in frame:
        frame["t_s"] = frame["Timestamp"] - frame["Timestamp"].min()
    return frame


def read_raw_log(path: Path | str | LocustResult) -> pd.DataFrame:
    """The raw per-request log (the file, or Locust's output folder): one row per
    request, typed."""
    if isinstance(path, LocustResult):
        path = path.raw_log
    elif Path(path).is_dir():
        path = Path(path) / RAW_LOG
    frame = pd.read_csv(path, dtype={"pod": "string", "error": "string", "name": "string"})
    frame = frame.reindex(columns=list(RAW_COLUMNS))
    frame["ok"] = frame["ok"].fillna(0).astype(int).astype(bool)
    frame["cold_start"] = frame["cold_start"].fillna(0).astype(int).astype(bool)
    frame["status"] = frame["status"].fillna(0).astype(int)
    frame["pod"] = frame["pod"].fillna("")
    frame["error"] = frame["error"].fillna("")
    return frame.sort_values("timestamp_ms", kind="stable").reset_index(drop=True)


def request_summary(raw: pd.DataFrame, by: Sequence[str] = ("name",)) -> pd.DataFrame:
    """Exact latency quantiles of the successful requests with their 95 % intervals, and
    failure counts, per request name, from the raw log (the same split the run's
    observations and targets use)."""
    from wasmop.bench.stats import describe

    rows = []
    for key, group in raw.groupby(list(by), sort=True):
        stats = describe(group.loc[group["ok"], "latency_ms"], ci=True)
        values = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, values, strict=True))
        row.update(
            requests=len(group),
            failures=int((~group["ok"]).sum()),
            failure_ratio=float((~group["ok"]).mean()),
            **{f"latency_ms_{k}": v for k, v in stats.items() if k != "n"},
        )
        span_s = (group["timestamp_ms"].max() - group["timestamp_ms"].min()) / 1000
        row["throughput_rps"] = len(group) / span_s if span_s > 0 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
