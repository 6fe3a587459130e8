"""The wasm nodes' runtime: a Pod's module served by a wasmtime function server inside
the agent, on the Pod's own address in the node's network namespace.

Each request the server answers is a line in the container's log (method, path, status,
duration, CPU, memory, the runtime's fault reason) and whatever the module wrote to
stderr follows it, so ``kubectl logs`` shows a function as it shows any container.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from wasmop.node.container_logs import ContainerLog
from wasmop.node.container_runtime import ContainerExit, ContainerFigures, Notify
from wasmop.node.function_loader import FunctionLoader
from wasmop.node.ipam import PodAddressAllocator
from wasmop.node.netns import NodeNetwork
from wasmop.node.podspec import ContainerPlan, PodSpecError, plan_container
from wasmop.runtime import Function, Request, Response, ServerHandle, start_server
from wasmop.runtime.server import access_line


@dataclass
class FunctionContainer:
    """A running wasm container: a function and its server."""

    function: Function
    server: ServerHandle
    container_id: str
    probe_host: str
    description: str
    _crashed: asyncio.Event = field(default_factory=asyncio.Event)

    def figures(self) -> ContainerFigures:
        # The server's own CPU for probes and metrics counts too: an idle, probed
        # container is not at zero (metrics-server would drop it).
        return ContainerFigures(
            cpu_seconds=self.function.cpu_seconds() + self.server.reserved_cpu_seconds,
            memory_working_set_bytes=self.function.memory_bytes(),
        )

    def crash(self) -> None:
        self._crashed.set()

    async def exited(self) -> ContainerExit:
        # A function server never stops by itself: only a crash fault ends it.
        await self._crashed.wait()
        return ContainerExit("Error", 137, "container crashed (fault injected)")

    async def stop(self, grace: float) -> None:
        with contextlib.suppress(Exception):
            await self.server.stop(grace=grace)
        with contextlib.suppress(Exception):
            await self.function.aclose(grace)


def request_logger(log: ContainerLog | None) -> Any:
    """The server's request hook writing to ``log`` (None: no log kept)."""
    if log is None:
        return None

    def record(request: Request, response: Response, seconds: float) -> None:
        log.write("stdout", access_line(request, response, seconds))
        if response.stderr:  # what the module wrote to stderr during this request
            log.write("stderr", response.stderr)

    return record


class WasmtimeRuntime:
    """Runs each Pod's module in this process, many Pods per node."""

    def __init__(
        self, network: NodeNetwork, addresses: PodAddressAllocator, functions: FunctionLoader
    ) -> None:
        self.network = network
        self.addresses = addresses
        self.functions = functions

    def plan(self, pod: dict[str, Any]) -> ContainerPlan:
        return plan_container(pod)

    def pod_ip(self, uid: str, preferred: str | None) -> str:
        return self.addresses.allocate(uid, preferred)

    def release(self, uid: str) -> None:
        self.addresses.release(uid)

    async def start(
        self,
        pod: dict[str, Any],
        pod_ip: str,
        plan: Any,
        log: ContainerLog | None,
        notify: Notify | None = None,
    ) -> FunctionContainer:
        """Load the module, create the function and its server on podIP:port."""
        assert isinstance(plan, ContainerPlan)
        meta = pod["metadata"]
        started = time.perf_counter()
        function = await self.functions.load(meta["namespace"], meta["name"], plan, notify)
        loaded = time.perf_counter()
        try:
            sock = self.network.listen(pod_ip, plan.port)
        except OSError as exc:
            await function.aclose(0)
            raise PodSpecError(
                "PortUnavailable", f"cannot listen on {pod_ip}:{plan.port}: {exc}"
            ) from exc
        server = await start_server(function, sock=sock, request_log=request_logger(log))
        digest = function.module.digest
        return FunctionContainer(
            function,
            server,
            container_id=f"wasmtime://{digest[:12]}-{meta['uid'][:8]}",
            probe_host=pod_ip,
            description=f"Serving module sha256:{digest[:12]} on {pod_ip}:{plan.port}"
            f" (load {(loaded - started) * 1000:.1f} ms)",
        )
