"""Sampling a process's CPU and memory."""

from __future__ import annotations

import os
import time

from wasmop.bench.process_sampler import ProcessSampler, summarise


def test_sampler_reports_cpu_in_millicores_and_rss_in_mib() -> None:
    with ProcessSampler(os.getpid(), interval_s=0.05, label="me") as sampler:
        # Keep one core busy for half a second, and on until three samples are in: on a
        # loaded machine the sampler's thread may wait its turn for the GIL (CI once saw
        # 2 samples in 0.5 s), which is the machine's delay, not the sampler's.
        start = time.monotonic()
        while time.monotonic() - start < 0.5 or (
            len(sampler.samples) < 3 and time.monotonic() - start < 10
        ):
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
