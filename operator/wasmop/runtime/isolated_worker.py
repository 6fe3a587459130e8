"""An isolated worker process: ``python -m wasmop.runtime.isolated_worker``.

Started at nice 19 by :class:`wasmop.runtime.isolation.IsolatedWorker` (or kept as a spare
by `keep_spare`); serves one heavy function's
requests from its stdin until it closes. A module of its own, which nothing imports: it
needs the engine, and the engine's functions need the isolation module.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable

from wasmop.runtime.engine import Runtime
from wasmop.runtime.isolation import WorkerSetup, read_frame, write_frame


def serve_worker() -> None:
    """The worker process: load the module sent by the parent, then run each request
    it sends with the function's own limits and send back the response."""
    requests = sys.stdin.buffer.fileno()
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nothing else may write the pipe
    try:
        setup: WorkerSetup = read_frame(requests)
    except EOFError:
        return  # a spare whose parent exited before it needed it
    runtime = Runtime(setup.runtime_config)
    started = threading.Event()
    normal_priority: queue.SimpleQueue[Callable[[], object]] | None = globals().get(
        "NORMAL_PRIORITY"
    )
    if normal_priority is not None:  # started by `isolation._start_process`
        normal_priority.put(lambda: (runtime.ticker.start(), started.set()))
        started.wait(10)
    function = runtime.function(runtime.adopt(setup.info, setup.artefact), setup.function_config)
    write_frame(replies, "ready")
    while True:
        try:
            request, queued_s = read_frame(requests)
        except EOFError:
            break  # the parent closed the pipe or exited
        response = function.invoke_sync(request)
        if response.stats is not None:
            response.stats.queue_s = queued_s
        write_frame(replies, response)
    runtime.close(timeout=1.0)


if __name__ == "__main__":
    serve_worker()
