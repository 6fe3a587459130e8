"""A harness that dies leaves no load behind: Locust stops with the process that started it.

Found when a killed chaos run (whose Locust is bounded only by the soak's schedule) left
Locust sending requests to loopback for 25 minutes, into the next cluster on that port.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HARNESS = textwrap.dedent(
    """
    import os, sys, time
    from wasmop.bench.load import LocustConfig, start_locust
    from wasmop.bench.mix import MixEntry

    config = LocustConfig(
        host="http://127.0.0.1:9",  # nothing listens: refused at once, loopback only
        functions=(MixEntry("default", "nobody"),),
        users=1, spawn_rate=1, user_rps=1, run_time_s=300, fail_ratio=1.0,
    )
    locust = start_locust(config, sys.argv[1])
    pid = locust.process.pid
    # Killed mid-run, as the chaos run was: by then setpriv has set the death signal and
    # exec'd Locust (a harness gone within a millisecond of the start would beat it).
    for _ in range(200):
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if not cmdline.read().split(b"\\0")[0].endswith(b"setpriv"):
                break
        time.sleep(0.05)
    print(pid, flush=True)
    os._exit(0)  # as a kill -9 of the harness would: no stop(), no cleanup
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead; only its parent (init here) has yet to reap it.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_locust_ends_when_the_harness_that_started_it_dies(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, str(tmp_path / "locust")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        assert not _alive(pid), "Locust outlived the harness that started it"
    finally:
        if _alive(pid):
            os.kill(pid, 9)
