"""A load shape (step, spike or ramp) driving the users of the other scenarios.

Combine with a scenario: ``-f loadtests/http_mix.py,loadtests/shape.py --shape
step:peak=20,base=2,steps=4,duration=60``. The shape is the pure function
:func:`wasmop.bench.shapes.users_at`; this class only hands it to Locust, which calls
``tick`` about once a second. ``--run-time`` still bounds the run.
"""

from __future__ import annotations

import _common  # noqa: F401 - registers the shared options and listeners
from locust import LoadTestShape
from wasmop.bench.shapes import Shape, users_at


class WasmopShape(LoadTestShape):
    """Users over time from ``--shape``."""

    # --run-time stays a hard bound; -u/-r are ignored in favour of the shape.
    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self._shape: Shape | None = None

    @property
    def shape(self) -> Shape:
        if self._shape is None:
            assert self.runner is not None
            options = self.runner.environment.parsed_options
            text = options.shape if options and options.shape else ""
            if not text:
                raise ValueError("set --shape (or WASMOP_SHAPE), e.g. step:peak=20,duration=60")
            self._shape = Shape.parse(text)
        return self._shape

    def tick(self) -> tuple[int, float] | None:
        users = users_at(self.shape, self.get_run_time())
        return None if users is None else (users, self.shape.spawn_rate)
