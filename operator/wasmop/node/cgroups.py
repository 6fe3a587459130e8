"""cgroup v1 for host-process containers: their CPU and memory limits, usage and OOM kills.

These machines run cgroup v1 with separate ``cpu``, ``cpuacct`` and ``memory``
hierarchies (NOTES.md). Each container gets one group per controller, below the agent's
own group (so whatever limits the agent lives under also bound its containers)::

    /sys/fs/cgroup/<controller>/<agent's group>/wasmop-<node>/<pod uid>-<container>

as the kubelet does with ``kubepods/pod<uid>/<container>``. Limits follow the kubelet's
mapping: ``limits.cpu`` is a CFS quota per 100 ms period, ``requests.cpu`` the CPU
shares (1024 per core), ``limits.memory`` the hard memory limit, past which the kernel
OOM-kills the container (``memory.oom_control`` counts it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from wasmop.node.stats import Throttling

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "cpu", "cpuacct")
CFS_PERIOD_US = 100_000
MIN_SHARES = 2


class CgroupError(Exception):
    """The container's cgroup cannot be made or used; the message says why."""


@dataclass(frozen=True)
class CgroupLimits:
    cpu_limit_millis: int | None = None
    cpu_request_millis: int | None = None
    memory_limit_bytes: int | None = None


def cpu_quota_us(millis: int) -> int:
    """CFS quota per period for a CPU limit in millicores (kubelet: at least 1 ms)."""
    return max(1000, millis * CFS_PERIOD_US // 1000)


def cpu_shares(millis: int | None) -> int:
    """CPU shares for a request in millicores (kubelet's MilliCPUToShares)."""
    if not millis:
        return MIN_SHARES
    return max(MIN_SHARES, millis * 1024 // 1000)


def own_group(controller: str, proc_cgroup: str | None = None) -> str:
    """This process's group in ``controller`` (from /proc/self/cgroup)."""
    text = proc_cgroup if proc_cgroup is not None else Path("/proc/self/cgroup").read_text()
    for line in text.splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    raise CgroupError(f"this process is in no {controller} cgroup (is cgroup v1 mounted?)")


def process_throttling(pid: int, root: Path = CGROUP_ROOT) -> Throttling | None:
    """CFS throttling of the cpu group process ``pid`` is in (a host-process container's:
    the operator Pod's quota), or None where it cannot be read (gone, no cgroup v1)."""
    try:
        group = own_group("cpu", Path(f"/proc/{pid}/cgroup").read_text())
        return _throttling(root / "cpu" / group.lstrip("/") / "cpu.stat")
    except (OSError, CgroupError):
        return None


def _throttling(cpu_stat: Path) -> Throttling:
    stat = _stat(cpu_stat)
    return Throttling(
        stat.get("nr_periods", 0),
        stat.get("nr_throttled", 0),
        stat.get("throttled_time", 0) / 1e9,
    )


def _read_int(path: Path) -> int:
    return int(path.read_text().split()[0])


def _stat(path: Path) -> dict[str, int]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


class ContainerCgroup:
    """One container's groups in the cpu, cpuacct and memory hierarchies."""

    def __init__(self, node: str, name: str, root: Path = CGROUP_ROOT) -> None:
        self.paths = {}
        for controller in CONTROLLERS:
            parent = root / controller / own_group(controller).lstrip("/") / f"wasmop-{node}"
            self.paths[controller] = parent / name

    def create(self, limits: CgroupLimits) -> None:
        """Make the groups (again, empty) and set the limits."""
        try:
            for path in self.paths.values():
                if path.exists():
                    self._kill_members(path)
                    with contextlib.suppress(OSError):
                        path.rmdir()
                path.mkdir(parents=True, exist_ok=True)
            cpu, memory = self.paths["cpu"], self.paths["memory"]
            (cpu / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            quota = cpu_quota_us(limits.cpu_limit_millis) if limits.cpu_limit_millis else -1
            (cpu / "cpu.cfs_quota_us").write_text(str(quota))
            (cpu / "cpu.shares").write_text(str(cpu_shares(limits.cpu_request_millis)))
            if limits.memory_limit_bytes is not None:
                (memory / "memory.limit_in_bytes").write_text(str(limits.memory_limit_bytes))
        except OSError as exc:
            raise CgroupError(f"cannot set up cgroup {self.paths['memory']}: {exc}") from exc

    @property
    def procs_files(self) -> list[Path]:
        """Where a process writes its pid to join the container's groups."""
        return [path / "cgroup.procs" for path in self.paths.values()]

    # --- figures ------------------------------------------------------------------

    def cpu_seconds(self) -> float:
        return _read_int(self.paths["cpuacct"] / "cpuacct.usage") / 1e9

    def memory(self) -> tuple[int, int]:
        """(working set, rss) in bytes: usage minus inactive file pages, as the kubelet
        computes the working set."""
        usage = _read_int(self.paths["memory"] / "memory.usage_in_bytes")
        stat = _stat(self.paths["memory"] / "memory.stat")
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        rss = stat.get("total_rss", stat.get("rss", usage))
        return max(0, usage - inactive), rss

    def memory_limit(self) -> int:
        return _read_int(self.paths["memory"] / "memory.limit_in_bytes")

    def oom_kills(self) -> int:
        """How many processes the kernel killed here for exceeding the memory limit."""
        return _stat(self.paths["memory"] / "memory.oom_control").get("oom_kill", 0)

    def throttling(self) -> Throttling:
        return _throttling(self.paths["cpu"] / "cpu.stat")

    def pids(self) -> list[int]:
        path = self.paths["memory"] / "cgroup.procs"
        with contextlib.suppress(OSError):
            return [int(p) for p in path.read_text().split()]
        return []

    # --- teardown -----------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL every process left in the container (children included)."""
        for path in self.paths.values():
            self._kill_members(path)

    @staticmethod
    def _kill_members(path: Path) -> None:
        with contextlib.suppress(OSError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)

    def remove(self, wait_s: float = 2.0) -> bool:
        """Remove the groups once they are empty (a group with members cannot go: killed
        processes leave it when the kernel has reaped them). True if all went."""
        deadline = time.monotonic() + wait_s
        while True:
            for path in self.paths.values():
                with contextlib.suppress(FileNotFoundError, OSError):
                    path.rmdir()
            if not any(path.exists() for path in self.paths.values()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
