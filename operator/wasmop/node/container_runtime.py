"""What a node's container runtime does for a Pod worker, whichever runtime it is.

A node runs every Pod with one runtime, as a kubelet runs them with its CRI handler:
wasm nodes with wasmtime (``wasm_container``: the Pod's module served inside the agent)
and the system node with host processes (``host_process``: the project's own images run
from the installed package under cgroup limits). The Pod worker (``pod_worker``) owns
the rest of a Pod's life, the same for both: status, Events, probes, restarts with
back-off, graceful deletion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from wasmop.node.container_logs import ContainerLog
from wasmop.node.podspec import Probe
from wasmop.node.stats import Throttling

Notify = Callable[[str, str], None]


class ContainerExit(Exception):
    """The container stopped; ``reason`` and ``exit_code`` go into its status."""

    def __init__(self, reason: str, exit_code: int, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.exit_code = exit_code
        self.message = message


@dataclass(frozen=True)
class ContainerFigures:
    """A running container's resource use, as the kubelet API reports it."""

    cpu_seconds: float
    memory_working_set_bytes: int
    memory_rss_bytes: int | None = None
    memory_limit_bytes: int | None = None
    throttling: Throttling | None = None


class ContainerPlan(Protocol):
    """What the Pod worker reads of a runtime's plan for the Pod's container."""

    @property
    def name(self) -> str: ...

    @property
    def readiness(self) -> Probe | None: ...

    @property
    def liveness(self) -> Probe | None: ...


class RunningContainer(Protocol):
    """One started instance of a container."""

    @property
    def container_id(self) -> str: ...

    @property
    def probe_host(self) -> str: ...  # where httpGet probes go

    @property
    def description(self) -> str: ...  # one line for the Started Event and the log

    def figures(self) -> ContainerFigures: ...

    def crash(self) -> None:
        """Fault injection: end it as a crash would (exit 137)."""

    async def exited(self) -> ContainerExit:
        """Wait until it stops by itself (a crash, an exit, an OOM kill)."""

    async def stop(self, grace: float) -> None:
        """Stop it: gracefully within ``grace`` seconds, then for good."""


class ContainerRuntime(Protocol):
    """A node's runtime handler."""

    def plan(self, pod: dict[str, Any]) -> ContainerPlan:
        """The Pod's container as this runtime runs it, or PodSpecError saying why not."""

    def pod_ip(self, uid: str, preferred: str | None) -> str:
        """The Pod's address (kept across restarts of the container)."""

    def release(self, uid: str) -> None:
        """The Pod is gone: its address and anything else it held."""

    async def start(
        self,
        pod: dict[str, Any],
        pod_ip: str,
        plan: ContainerPlan,
        log: ContainerLog | None,
        notify: Notify | None = None,
    ) -> RunningContainer:
        """Start one instance; PodSpecError if it cannot (retried by the worker).
        ``notify(reason, message)`` records a normal Event on the Pod (Pulling, Pulled)."""
