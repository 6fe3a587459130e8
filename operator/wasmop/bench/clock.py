"""The harness's one clock: wall-clock milliseconds since the epoch.

Watch events, probes, samples, Locust's raw request log and the operator's own
``status.timings`` are all stamped on this scale, so they line up in one timeline.
"""

from __future__ import annotations

import time


def now_ms() -> float:
    """Wall-clock milliseconds since the epoch (comparable with the operator's timings)."""
    return time.time_ns() / 1e6
