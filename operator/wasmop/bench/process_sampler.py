"""CPU and memory of a process over time (the operator's, a node agent's), via psutil.

A :class:`ProcessSampler` runs on its own thread so it keeps sampling while the notebook
waits on a deployment or a Locust subprocess. CPU is reported in millicores (1000 = one
core busy), the unit of the operator's requests and limits; memory as RSS in MiB.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pandas as pd
import psutil

from wasmop.bench.clock import now_ms
from wasmop.bench.stats import describe

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = ("t_ms", "pid", "process", "cpu_millicores", "rss_mib", "threads")


@dataclass(frozen=True)
class Sample:
    t_ms: float
    pid: int
    process: str
    cpu_millicores: float
    rss_mib: float
    threads: int


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie (a killed child the supervisor has not reaped yet)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cpu_seconds(process: psutil.Process, children: bool) -> float:
    times = process.cpu_times()
    total = times.user + times.system
    if children:
        for child in process.children(recursive=True):
            try:
                ctimes = child.cpu_times()
            except psutil.Error:
                continue
            total += ctimes.user + ctimes.system
    return total


def _rss_bytes(process: psutil.Process, children: bool) -> int:
    total = process.memory_info().rss
    if children:
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
    return total


class ProcessSampler:
    """Sample one process every ``interval_s`` seconds until stopped.

    ``pid`` may be a callable, re-evaluated when the process goes away, so sampling
    follows the operator across a kill and restart (the gap shows as missing samples).
    """

    def __init__(
        self,
        pid: int | Callable[[], int | None],
        interval_s: float = 0.5,
        label: str = "",
        children: bool = False,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._pid_source = pid if callable(pid) else (lambda: pid)
        self.interval_s = interval_s
        self.label = label
        self.children = children
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ProcessSampler:
        self._thread = threading.Thread(target=self._run, name="wasmop-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> pd.DataFrame:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s * 4 + 5)
        return self.table()

    def __enter__(self) -> ProcessSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        process: psutil.Process | None = None
        previous: tuple[float, float] | None = None  # (monotonic, cpu seconds)
        while not self._stop.is_set():
            try:
                if process is None or not _alive(process):
                    pid = self._pid_source()
                    process = psutil.Process(pid) if pid else None
                    previous = None
                if process is not None:
                    with process.oneshot():
                        now = time.monotonic()
                        cpu = _cpu_seconds(process, self.children)
                        rss = _rss_bytes(process, self.children)
                        threads = process.num_threads()
                    if previous is not None and now > previous[0]:
                        millicores = (cpu - previous[1]) / (now - previous[0]) * 1000
                        self.samples.append(
                            Sample(
                                now_ms(),
                                process.pid,
                                self.label or process.name(),
                                max(0.0, millicores),
                                rss / 2**20,
                                threads,
                            )
                        )
                    previous = (now, cpu)
            except psutil.Error as exc:
                log.debug("sampling stopped for now: %s", exc)
                process, previous = None, None
            self._stop.wait(self.interval_s)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(s) for s in self.samples], columns=list(SAMPLE_COLUMNS))


def summarise(samples: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Statistics of CPU (millicores) and RSS (MiB) over the samples."""
    return {
        "cpu_millicores": describe(samples["cpu_millicores"]),
        "rss_mib": describe(samples["rss_mib"]),
    }


def component_pid(name: str) -> int | None:
    """The pid of a component of the embedded cluster (e.g. ``operator``), if running."""
    from wasmop.cluster import manager
    from wasmop.cluster.layout import StateLayout

    status = manager.read_status(StateLayout.default()) or {}
    component = status.get("components", {}).get(name) or {}
    return component.get("pid") if component.get("state") == "running" else None


def operator_pid() -> int | None:
    """The operator's pid: the process of its Pod (a host process of the embedded
    cluster's system node), else a ``wasmop operator run`` started by hand."""
    return wasmop_process_pid("operator")


def gateway_pid() -> int | None:
    """The gateway's pid, found as :func:`operator_pid` finds the operator's."""
    return wasmop_process_pid("gateway")


def wasmop_process_pid(command: str) -> int | None:
    """The oldest ``wasmop <command> run`` process of this cluster: one started by this
    state dir's cluster (its environment names it) first, else one started by hand
    (outside any cluster). Processes of other clusters on the machine are not ours."""
    from wasmop.cluster.layout import CLUSTER_MARKER_ENV, StateLayout

    root = str(StateLayout.default().root)
    ours: list[tuple[float, int]] = []
    by_hand: list[tuple[float, int]] = []
    for process in psutil.process_iter(["pid", "cmdline", "create_time"]):
        cmdline = process.info.get("cmdline") or []
        if not _runs(cmdline, command):
            continue
        try:
            marker = process.environ().get(CLUSTER_MARKER_ENV)
        except (psutil.Error, OSError):
            continue
        entry = (process.info["create_time"], int(process.info["pid"]))
        if marker is not None and marker == root:
            ours.append(entry)
        elif marker is None:
            by_hand.append(entry)
    found = sorted(ours) or sorted(by_hand)
    return found[0][1] if found else None


def _runs(cmdline: list[str], command: str) -> bool:
    """``… -m wasmop <command> run …`` or ``…/wasmop <command> run …`` (not a shell
    wrapping it: the first word is an interpreter or the wasmop script)."""
    for i, word in enumerate(cmdline[:-2]):
        if (word == "wasmop" and i > 0 and cmdline[i - 1] == "-m") or word.endswith("/wasmop"):
            return cmdline[i + 1] == command and cmdline[i + 2] == "run"
    return False
