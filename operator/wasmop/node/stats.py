"""A node's resource figures in the kubelet's formats: pure functions over samples.

* ``/metrics/resource`` (Prometheus text): what metrics-server reads. It needs non-zero
  ``node_cpu_usage_seconds_total`` and ``node_memory_working_set_bytes``, and drops a
  Pod unless each container has non-zero CPU and memory and a start time.
* ``/stats/summary`` (the Summary API, stats/v1alpha1): the same figures as JSON, with
  CPU rates (``usageNanoCores``) from the previous sample.
* ``/metrics/cadvisor``: CPU throttling of containers that run under a CFS quota (the
  host-process runtime), under cAdvisor's metric names.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# A rate is computed against a sample at least this old (kubelet: its housekeeping period).
RATE_WINDOW_S = 1.0


@dataclass(frozen=True)
class Throttling:
    """CFS bandwidth figures of a cgroup (cpu.stat)."""

    periods: int
    throttled_periods: int
    throttled_seconds: float

    def since(self, earlier: Throttling) -> Throttling:
        """The figures of the time between ``earlier`` and this reading (counters)."""
        return Throttling(
            self.periods - earlier.periods,
            self.throttled_periods - earlier.throttled_periods,
            self.throttled_seconds - earlier.throttled_seconds,
        )

    @property
    def throttled_share(self) -> float:
        """Of the periods in which the group ran, the share it was stopped at its quota."""
        return self.throttled_periods / self.periods if self.periods else 0.0


@dataclass(frozen=True)
class ContainerUsage:
    """One running container's figures."""

    namespace: str
    pod: str
    pod_uid: str
    container: str
    cpu_seconds: float
    memory_working_set_bytes: int
    started_at: float  # container start, seconds since the epoch
    pod_started_at: float
    memory_rss_bytes: int | None = None
    memory_limit_bytes: int | None = None
    throttling: Throttling | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.pod, self.container)


@dataclass(frozen=True)
class NodeUsage:
    name: str
    cpu_seconds: float
    memory_working_set_bytes: int
    started_at: float
    memory_capacity_bytes: int | None = None


def _labels(c: ContainerUsage, container: bool = True) -> str:
    name = f'container="{c.container}",' if container else ""
    return f'{name}namespace="{c.namespace}",pod="{c.pod}"'


def _series(
    name: str, kind: str, text: str, rows: Iterable[tuple[str, float | int]], stamp: int
) -> list[str]:
    lines = [f"# HELP {name} [STABLE] {text}", f"# TYPE {name} {kind}"]
    for labels, value in rows:
        shown = f"{value:.9f}" if isinstance(value, float) else str(value)
        lines.append(f"{name}{{{labels}}} {shown} {stamp}" if labels else f"{name} {shown} {stamp}")
    return lines


def resource_metrics(
    node: NodeUsage, containers: list[ContainerUsage], now: float | None = None
) -> str:
    """The kubelet's /metrics/resource exposition."""
    stamp = int((time.time() if now is None else now) * 1000)
    pods: dict[tuple[str, str], list[ContainerUsage]] = {}
    for c in containers:
        pods.setdefault((c.namespace, c.pod), []).append(c)
    pod_rows = [(_labels(cs[0], container=False), cs) for cs in pods.values()]
    lines = [
        *_series(
            "container_cpu_usage_seconds_total", "counter",
            "Cumulative cpu time consumed by the container in core-seconds",
            ((_labels(c), c.cpu_seconds) for c in containers), stamp,
        ),
        *_series(
            "container_memory_working_set_bytes", "gauge",
            "Current working set of the container in bytes",
            ((_labels(c), c.memory_working_set_bytes) for c in containers), stamp,
        ),
        *_series(
            "container_start_time_seconds", "gauge",
            "Start time of the container since unix epoch in seconds",
            ((_labels(c), float(c.started_at)) for c in containers), stamp,
        ),
        *_series(
            "pod_cpu_usage_seconds_total", "counter",
            "Cumulative cpu time consumed by the pod in core-seconds",
            ((labels, sum(c.cpu_seconds for c in cs)) for labels, cs in pod_rows), stamp,
        ),
        *_series(
            "pod_memory_working_set_bytes", "gauge",
            "Current working set of the pod in bytes",
            ((labels, sum(c.memory_working_set_bytes for c in cs)) for labels, cs in pod_rows),
            stamp,
        ),
        *_series(
            "node_cpu_usage_seconds_total", "counter",
            "Cumulative cpu time consumed by the node in core-seconds",
            [("", node.cpu_seconds)], stamp,
        ),
        *_series(
            "node_memory_working_set_bytes", "gauge",
            "Current working set of the node in bytes",
            [("", node.memory_working_set_bytes)], stamp,
        ),
        "# HELP scrape_error [STABLE] 1 if there was an error while getting container metrics,"
        " 0 otherwise",
        "# TYPE scrape_error gauge",
        "scrape_error 0",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def cadvisor_metrics(containers: list[ContainerUsage], now: float | None = None) -> str:
    """CPU throttling and limits under cAdvisor's names (containers with a CFS quota)."""
    stamp = int((time.time() if now is None else now) * 1000)
    limited = [c for c in containers if c.throttling is not None]
    lines: list[str] = []
    for name, kind, text, value in (
        ("container_cpu_cfs_periods_total", "counter",
         "Number of elapsed enforcement period intervals.", lambda t: t.periods),
        ("container_cpu_cfs_throttled_periods_total", "counter",
         "Number of throttled period intervals.", lambda t: t.throttled_periods),
        ("container_cpu_cfs_throttled_seconds_total", "counter",
         "Total time duration the container has been throttled.",
         lambda t: float(t.throttled_seconds)),
    ):  # fmt: skip
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for c in limited:
            shown = value(c.throttling)
            shown = f"{shown:.9f}" if isinstance(shown, float) else str(shown)
            lines.append(f"{name}{{{_labels(c)}}} {shown} {stamp}")
    lines += [
        "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.",
        "# TYPE container_cpu_usage_seconds_total counter",
    ]
    for c in containers:
        lines.append(
            f"container_cpu_usage_seconds_total{{{_labels(c)}}} {c.cpu_seconds:.9f} {stamp}"
        )
    lines += [
        "# HELP container_spec_memory_limit_bytes Memory limit for the container.",
        "# TYPE container_spec_memory_limit_bytes gauge",
    ]
    for c in containers:
        if c.memory_limit_bytes is not None:
            lines.append(
                f"container_spec_memory_limit_bytes{{{_labels(c)}}} {c.memory_limit_bytes} {stamp}"
            )
    return "\n".join(lines) + "\n"


class RateTracker:
    """CPU rates from cumulative figures: each against a sample at least RATE_WINDOW_S old."""

    def __init__(self) -> None:
        self._previous: dict[Any, tuple[float, float]] = {}
        self._rates: dict[Any, float] = {}

    def rate(self, key: Any, value: float, now: float) -> float | None:
        previous = self._previous.get(key)
        if previous is None or value < previous[1]:
            self._previous[key] = (now, value)
            return None
        if now - previous[0] >= RATE_WINDOW_S:
            self._rates[key] = (value - previous[1]) / (now - previous[0])
            self._previous[key] = (now, value)
        return self._rates.get(key)

    def forget_except(self, keys: set[Any]) -> None:
        for key in set(self._previous) - keys:
            self._previous.pop(key, None)
            self._rates.pop(key, None)


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _cpu(seconds: float, rate: float | None, when: str) -> dict[str, Any]:
    cpu: dict[str, Any] = {"time": when, "usageCoreNanoSeconds": int(seconds * 1e9)}
    if rate is not None:
        cpu["usageNanoCores"] = int(rate * 1e9)
    return cpu


def _memory(working_set: int, rss: int | None, when: str, limit: int | None) -> dict[str, Any]:
    memory: dict[str, Any] = {
        "time": when,
        "usageBytes": working_set,
        "workingSetBytes": working_set,
        "rssBytes": rss if rss is not None else working_set,
        "pageFaults": 0,
        "majorPageFaults": 0,
    }
    if limit is not None:
        memory["availableBytes"] = max(0, limit - working_set)
    return memory


def summary(
    node: NodeUsage,
    containers: list[ContainerUsage],
    rates: RateTracker,
    now: float | None = None,
) -> dict[str, Any]:
    """The kubelet's Summary API (``/stats/summary``) for this node."""
    now = time.time() if now is None else now
    when = _rfc3339(now)
    node_rate = rates.rate(("node",), node.cpu_seconds, now)
    pods: dict[tuple[str, str, str], list[ContainerUsage]] = {}
    for c in containers:
        pods.setdefault((c.namespace, c.pod, c.pod_uid), []).append(c)
    keys: set[Any] = {("node",)}
    pod_list = []
    for (namespace, name, uid), cs in pods.items():
        entries = []
        for c in cs:
            keys.add(c.key)
            entries.append(
                {
                    "name": c.container,
                    "startTime": _rfc3339(c.started_at),
                    "cpu": _cpu(c.cpu_seconds, rates.rate(c.key, c.cpu_seconds, now), when),
                    "memory": _memory(
                        c.memory_working_set_bytes, c.memory_rss_bytes, when, c.memory_limit_bytes
                    ),
                }
            )
        pod_cpu = sum(c.cpu_seconds for c in cs)
        pod_key = (namespace, name, "")
        keys.add(pod_key)
        pod_list.append(
            {
                "podRef": {"name": name, "namespace": namespace, "uid": uid},
                "startTime": _rfc3339(min(c.pod_started_at for c in cs)),
                "containers": entries,
                "cpu": _cpu(pod_cpu, rates.rate(pod_key, pod_cpu, now), when),
                "memory": _memory(sum(c.memory_working_set_bytes for c in cs), None, when, None),
            }
        )
    rates.forget_except(keys)
    return {
        "node": {
            "nodeName": node.name,
            "startTime": _rfc3339(node.started_at),
            "cpu": _cpu(node.cpu_seconds, node_rate, when),
            "memory": _memory(
                node.memory_working_set_bytes, None, when, node.memory_capacity_bytes
            ),
        },
        "pods": pod_list,
    }
