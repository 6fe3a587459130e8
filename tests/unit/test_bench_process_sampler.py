"""Sampling a process's CPU and memory."""

from __future__ import annotations

import os
import time

from wasmop.bench.process_sampler import ProcessSampler, summarise


def test_sampler_reports_cpu_in_millicores_and_rss_in_mib() -> None:
    with ProcessSampler(os.getpid(), interval_s=0.05, label="me") as sampler:
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:  # keep one core busy
            sum(range(1000))
    samples = sampler.table()
    assert len(samples) >= 3
    assert set(samples["process"]) == {"me"} and set(samples["pid"]) == {os.getpid()}
    assert samples["rss_mib"].min() > 1
    assert samples["cpu_millicores"].max() > 100  # busy most of the time
    stats = summarise(samples)
    assert stats["cpu_millicores"]["n"] == len(samples)


def test_a_missing_process_yields_no_samples() -> None:
    with ProcessSampler(lambda: None, interval_s=0.02) as sampler:
        time.sleep(0.1)
    assert sampler.table().empty
