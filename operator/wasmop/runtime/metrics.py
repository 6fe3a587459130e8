"""Prometheus metrics of functions, read from their plain counters at scrape time.

Functions keep their own counters (`Function.stats`, `cpu_seconds()`, `memory_bytes()`),
so the request path pays for no metric objects and many servers in one process never
share a registry: each server builds its own with `registry_for(functions)`.
All names start with `wasmop_function_` and carry a `function` label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from wasmop.runtime.function import DURATION_BUCKETS, Function

PREFIX = "wasmop_function_"


class FunctionCollector(Collector):
    """Exposes the live figures of whatever functions `source()` returns."""

    def __init__(self, source: Callable[[], Iterable[Function]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        functions = list(self.source())
        requests = CounterMetricFamily(
            PREFIX + "requests",
            "Requests by HTTP status and fault reason (ok when the function answered).",
            labels=["function", "code", "reason"],
        )
        duration = HistogramMetricFamily(
            PREFIX + "request_duration_seconds",
            "Time from arrival to response, including queueing.",
            labels=["function"],
        )
        instantiate = SummaryMetricFamily(
            PREFIX + "instantiate_seconds",
            "Time to create a Store and instantiate the module for one request.",
            labels=["function"],
        )
        cpu = CounterMetricFamily(
            PREFIX + "cpu_seconds",
            "Thread CPU time spent instantiating and running the function's wasm.",
            labels=["function"],
        )
        memory = GaugeMetricFamily(
            PREFIX + "memory_bytes",
            "Compiled code image plus linear memory of running instances.",
            labels=["function"],
        )
        peak = GaugeMetricFamily(
            PREFIX + "memory_peak_bytes",
            "Largest linear memory any single request reached.",
            labels=["function"],
        )
        in_flight = GaugeMetricFamily(
            PREFIX + "in_flight", "Requests holding a concurrency slot.", labels=["function"]
        )
        queued = GaugeMetricFamily(
            PREFIX + "queued", "Requests waiting for a concurrency slot.", labels=["function"]
        )
        concurrency = GaugeMetricFamily(
            PREFIX + "concurrency_limit", "Configured concurrency limit.", labels=["function"]
        )
        module_bytes = GaugeMetricFamily(
            PREFIX + "module_bytes", "Size of the wasm module.", labels=["function"]
        )
        info = GaugeMetricFamily(
            PREFIX + "info", "The module a function serves.", labels=["function", "digest"]
        )
        for function in functions:
            name = function.name
            with function.stats.lock:
                counts = dict(function.stats.requests)
                buckets = list(function.stats.duration_buckets)
                duration_sum = function.stats.duration_sum
                instantiate_sum = function.stats.instantiate_sum
                instantiate_count = function.stats.instantiate_count
                cpu_seconds = function.stats.cpu_seconds
                peak_bytes = function.stats.peak_memory_bytes
            for (status, reason), count in sorted(counts.items()):
                requests.add_metric([name, str(status), reason], count)
            cumulative, running = [], 0
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), buckets, strict=True):
                running += count
                cumulative.append((_le(bound), running))
            duration.add_metric([name], cumulative, duration_sum)
            instantiate.add_metric([name], instantiate_count, instantiate_sum)
            cpu.add_metric([name], cpu_seconds)
            memory.add_metric([name], function.memory_bytes())
            peak.add_metric([name], peak_bytes)
            in_flight.add_metric([name], function.in_flight)
            queued.add_metric([name], function.queued)
            concurrency.add_metric([name], function.config.max_concurrency)
            module_bytes.add_metric([name], function.module.info.size)
            info.add_metric([name, function.digest], 1)
        yield from (
            requests, duration, instantiate, cpu, memory, peak, in_flight, queued,
            concurrency, module_bytes, info,
        )  # fmt: skip


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def registry_for(
    functions: Iterable[Function] | Callable[[], Iterable[Function]],
) -> CollectorRegistry:
    """A registry of its own for a set of functions (a fixed set, or a callable for live sets)."""
    registry = CollectorRegistry(auto_describe=False)
    if callable(functions):
        source = functions
    else:
        fixed = list(functions)

        def source() -> list[Function]:
            return fixed

    registry.register(FunctionCollector(source))
    return registry
