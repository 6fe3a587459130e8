"""The raw per-request log that Locust runs write next to their CSV statistics.

Locust rounds response times in its percentile columns; the raw log keeps every request
(one CSV row each) so the harness computes exact quantiles and can line requests up with
Kubernetes events by time. Dependency-free: the gevent Locust process writes it, the
notebooks read it with :func:`wasmop.bench.load.read_raw_log`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import IO, Any

RAW_COLUMNS = (
    "timestamp_ms",  # client wall clock when the request started, ms since the epoch
    "request_type",  # GET, POST, ... or K8S for deployment-storm requests
    "name",  # request name in Locust's statistics: <namespace>/<service>, or deploy
    "latency_ms",
    "status",  # HTTP status, 0 when no answer came
    "ok",  # 1 success, 0 failure (as Locust counted it)
    "pod",  # X-Wasmop-Pod: the Pod that served it
    "cold_start",  # 1 when the gateway waited for a first ready Pod
    "upstream_ms",  # Server-Timing upstream duration from the gateway
    "response_bytes",
    "error",
)


class RawLogWriter:
    """Append rows to an open text file, flushing every ``flush_every`` rows."""

    def __init__(self, stream: IO[str], flush_every: int = 200) -> None:
        self.stream = stream
        self.flush_every = flush_every
        self._writer = csv.writer(stream)
        self._pending = 0
        self.rows = 0
        self._writer.writerow(RAW_COLUMNS)

    def write(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow(["" if row.get(c) is None else row.get(c) for c in RAW_COLUMNS])
        self.rows += 1
        self._pending += 1
        if self._pending >= self.flush_every:
            self.stream.flush()
            self._pending = 0

    def close(self) -> None:
        self.stream.flush()
        self.stream.close()


def parse_server_timing(value: str | None) -> dict[str, float]:
    """``gateway;dur=0.3, upstream;dur=1.2`` -> {"gateway": 0.3, "upstream": 1.2}."""
    result: dict[str, float] = {}
    for part in (value or "").split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "dur":
                try:
                    result[name.strip()] = float(number)
                except ValueError:
                    continue
    return result


def header(headers: Any, name: str) -> str:
    """A response header from any mapping-like headers object, case-insensitively."""
    if headers is None:
        return ""
    try:
        value = headers.get(name)
        if value is None:
            value = headers.get(name.lower())
    except AttributeError:
        return ""
    return "" if value is None else str(value)


def to_csv_text(rows: list[Mapping[str, Any]]) -> str:
    """Rows in the raw-log format, for tests."""
    buffer = io.StringIO()
    writer = RawLogWriter(buffer)
    for row in rows:
        writer.write(row)
    return buffer.getvalue()
