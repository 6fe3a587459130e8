"""HTTP users invoking a weighted mix of functions through the gateway.

    locust -f loadtests/http_mix.py --headless --host http://127.0.0.1:8000 \
        --functions 'bench/hello@3,bench/fib?n=20@1' -u 10 -r 10 --run-time 30s

Each user picks a function per request by weight (at random, or with ``--pick rotate``
in turns: :class:`wasmop.bench.mix.Rotation`) and paces itself to ``--user-rps``
requests per second, so the offered load is users x rate regardless of latency (up to
saturation). Requests are named ``<namespace>/<service>``: one statistics row per
function. Run it through :func:`wasmop.bench.load.run_locust`, which adds the CSV, raw
log and bounds.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import _common  # registers the shared options and listeners
from locust import FastHttpUser, constant, constant_throughput, task
from locust.exception import StopUser
from wasmop.bench.mix import MixEntry, Rotation, parse_mix

_serials = itertools.count()  # users in the order they start: where each one's turns begin


class FunctionUser(FastHttpUser):
    """One client invoking functions through the gateway."""

    # Gateway connection reuse, as a real client library would do.
    concurrency = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = self.environment.parsed_options
        if not options or not options.functions:
            raise ValueError("set --functions (or WASMOP_FUNCTIONS) to the function mix")
        self.entries: list[MixEntry] = parse_mix(options.functions)
        self.weights = [e.weight for e in self.entries]
        self.rotation = (
            Rotation(self.weights, start=next(_serials)) if options.pick == "rotate" else None
        )
        rate = options.user_rps
        self._pace = constant_throughput(rate) if rate > 0 else constant(0)

    def wait_time(self) -> float:
        return self._pace(self)

    @task
    def invoke(self) -> None:
        # Once --max-requests is reached the runner quits in a greenlet of its own, which a
        # loaded machine may schedule late; until then no user starts another request.
        if _common.stopping():
            raise StopUser()
        if self.rotation is not None:
            entry = self.entries[self.rotation.next()]
        else:
            entry = random.choices(self.entries, weights=self.weights)[0]
        self.client.get(entry.target, name=entry.name)
