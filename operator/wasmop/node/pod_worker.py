"""The life of one Pod on a node: start its container with the node's runtime, probe it,
restart it, and end it when the API server asks.

One asyncio task per Pod (``PodWorker.run``). Everything that fails inside it becomes
Pod status and an Event, never an exception that reaches the agent: a broken module
affects its own Pod only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import shutil
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.kube.events import EventRecorder
from wasmop.node.container_logs import ContainerLog, LogLimits, pod_log_directory
from wasmop.node.container_runtime import (
    ContainerExit,
    ContainerPlan,
    ContainerRuntime,
    RunningContainer,
)
from wasmop.node.podspec import (
    ContainerState,
    PodSpecError,
    Probe,
    now_rfc3339,
    pod_status,
)
from wasmop.node.prober import HttpProber, probe_url
from wasmop.node.stats import ContainerUsage
from wasmop.supervision import TaskSupervisor

log = logging.getLogger(__name__)

# Back-off between restarts of a failed container (upstream: 10 s doubling to 5 min;
# shorter here so recovery experiments measure the system rather than the back-off).
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
# Retry of a Pod that cannot start (module missing or invalid).
START_RETRY_S = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0)


def pod_key(pod: dict[str, Any]) -> str:
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


@dataclass(frozen=True)
class PodHost:
    """What a pod worker may use of the node that runs it, and nothing more."""

    kube: Kube  # the node's own client: the Pod's status, its final deletion
    events: EventRecorder  # Events about the Pod
    node_address: str  # the node's InternalIP (the Pod's hostIP)
    runtime: ContainerRuntime  # starts the Pod's container: wasmtime, or a host process
    prober: HttpProber  # readiness and liveness probes
    spawn: Callable[[Coroutine[Any, Any, None]], None]  # a short background task
    tasks: TaskSupervisor  # long-lived ones (probe loops), restarted if they fail
    pod_root: Path | None = None  # per Pod (<root>/<ns>_<pod>_<uid>/): logs, volumes
    log_limits: LogLimits = field(default_factory=LogLimits)


class PodWorker:
    """Runs one Pod bound to this node."""

    def __init__(self, host: PodHost, pod: dict[str, Any]) -> None:
        self.host = host
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.key = pod_key(pod)
        self.namespace: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.plan: ContainerPlan | None = None
        previous = pod.get("status", {})
        restart_count = 0
        last_terminated = None
        for status in previous.get("containerStatuses", []):
            restart_count = int(status.get("restartCount", 0))
            running = (status.get("state") or {}).get("running")
            if running is not None:
                # Adopted after an agent restart: the container ran inside (or died with)
                # the agent that died, so it did restart; say so, as a kubelet would.
                restart_count += 1
                last_terminated = {
                    "exitCode": 137,
                    "reason": "NodeAgentRestarted",
                    "message": "the wasm node agent hosting this container restarted",
                    "startedAt": running.get("startedAt"),
                    "finishedAt": now_rfc3339(),
                }
        spec_container = pod["spec"]["containers"][0] if pod["spec"].get("containers") else {}
        self.container = ContainerState(
            name=spec_container.get("name", "function"),
            image=spec_container.get("image", ""),
            restart_count=restart_count,
            last_terminated=last_terminated,
        )
        self.pod_ip: str | None = None
        self.start_time: str = previous.get("startTime") or now_rfc3339()
        self.started_epoch = time.time()  # when the running container started
        self.log: ContainerLog | None = None
        self.directory: Path | None = None
        if host.pod_root is not None:
            self.directory = pod_log_directory(host.pod_root, self.namespace, self.name, self.uid)
            self.log = ContainerLog(self.directory / self.container.name, host.log_limits)
        self.running: RunningContainer | None = None
        self.deleting = asyncio.Event()
        self._liveness_failed = asyncio.Event()
        self._published: dict[str, Any] | None = None
        self.publish_failed = False  # the last status write did not reach the API server
        self._publish_lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()

    # --- inputs from the agent ------------------------------------------------------

    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()
            return
        if self._published is not None and self._status_overwritten(pod):
            # Someone else rewrote our status: the node lifecycle controller marks Pods
            # not ready while their node is NotReady (after an API server outage, say).
            # Write what we know again instead of trusting our last write.
            self._published = None
            self.host.spawn(self.publish())

    def _status_overwritten(self, pod: dict[str, Any]) -> bool:
        if self.container.state != "running":
            return False
        conditions = (pod.get("status") or {}).get("conditions") or []
        ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
        return ready is not None and (ready == "True") != self.container.ready

    def crash(self) -> bool:
        """Fault injection: the container dies as if its process had crashed. False if
        no container is running."""
        if self.running is None:
            return False
        self.running.crash()
        return True

    # --- figures and logs -------------------------------------------------------------

    def usage(self) -> ContainerUsage | None:
        """The running container's CPU and memory (None while it does not run)."""
        running = self.running
        if running is None:
            return None
        figures = running.figures()
        return ContainerUsage(
            namespace=self.namespace,
            pod=self.name,
            pod_uid=self.uid,
            container=self.container.name,
            cpu_seconds=figures.cpu_seconds,
            memory_working_set_bytes=figures.memory_working_set_bytes,
            started_at=self.started_epoch,
            pod_started_at=_epoch(self.start_time),
            memory_rss_bytes=figures.memory_rss_bytes,
            memory_limit_bytes=figures.memory_limit_bytes,
            throttling=figures.throttling,
        )

    def _say(self, text: str, stream: str = "stdout") -> None:
        """A line in the container's log, as its own output would be."""
        if self.log is not None:
            self.log.write(stream, text)

    @property
    def grace_seconds(self) -> float:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(grace)

    # --- status and events ----------------------------------------------------------

    async def publish(self) -> None:
        """Write the Pod's status if it changed since the last write."""
        async with self._publish_lock:
            status = pod_status(
                self.pod,
                self.container,
                host_ip=self.host.node_address,
                pod_ip=self.pod_ip,
                start_time=self.start_time,
            )
            comparable = _without_times(status)
            if comparable == self._published:
                return
            path = api_path("v1", "pods", self.namespace, self.name, "status")
            try:
                updated = await self.host.kube.patch(path, {"status": status})
            except ApiError as exc:
                if exc.not_found:
                    self.deleting.set()
                    return
                log.warning("status update of %s failed: %s", self.key, exc)
                self.publish_failed = True
                return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                # The API server is away (restarting, say): the heartbeat writes it again.
                log.warning("status update of %s failed: %s", self.key, exc)
                self.publish_failed = True
                return
            self.pod = updated
            self._published = comparable
            self.publish_failed = False

    async def event(self, reason: str, message: str, warning: bool = False) -> None:
        """An Event about the Pod, posted in the background: Pod start never waits for it."""
        self.host.events.record(
            {"apiVersion": "v1", "kind": "Pod", **self.pod}, reason, message, warning=warning,
            field_path=f"spec.containers{{{self.container.name}}}",
        )  # fmt: skip

    def _notify(self, reason: str, message: str) -> None:
        self.host.spawn(self.event(reason, message))

    # --- lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            await self._stop_container(0)
            raise
        except Exception:
            log.exception("pod %s failed unexpectedly", self.key)
            await self._stop_container(0)
        finally:
            self.host.runtime.release(self.uid)
            if self.log is not None:
                self.log.end_instance()

    async def _run(self) -> None:
        if not self.deleting.is_set():
            try:
                self.plan = self.host.runtime.plan(self.pod)
            except PodSpecError as exc:
                await self._cannot_run(exc.reason, exc.message)
                await self.deleting.wait()
            else:
                self.pod_ip = self.host.runtime.pod_ip(
                    self.uid, self.pod.get("status", {}).get("podIP")
                )
                await self._supervise(self.plan)
        await self._finish_deletion()

    async def _supervise(self, plan: ContainerPlan) -> None:
        """Start the container, restart it when it dies, until the Pod is deleted."""
        start_failures = 0
        restarts = 0
        while not self.deleting.is_set():
            try:
                await self._start(plan)
            except PodSpecError as exc:
                await self._cannot_run(exc.reason, exc.message)
                delay = START_RETRY_S[min(start_failures, len(START_RETRY_S) - 1)]
                start_failures += 1
                if await _wait_or(self.deleting, delay):
                    return
                continue
            start_failures = 0
            exit_ = await self._serve_until_exit(plan)
            if exit_ is None:  # deletion
                return
            await self._stop_container(0)
            self._say(f"container stopped: {exit_.reason}: {exit_.message}", "stderr")
            if self.log is not None:
                self.log.end_instance()
            self.container.last_terminated = {
                "exitCode": exit_.exit_code,
                "reason": exit_.reason,
                "message": exit_.message,
                "startedAt": self.container.started_at,
                "finishedAt": now_rfc3339(),
            }
            self.container.state = "terminated"
            self.container.reason = exit_.reason
            self.container.exit_code = exit_.exit_code
            self.container.message = exit_.message
            self.container.ready = False
            await self.publish()
            await self.event(
                "Killing" if exit_.reason == "Unhealthy" else "BackOff", exit_.message, True
            )
            if self.pod["spec"].get("restartPolicy", "Always") == "Never":
                await self.deleting.wait()
                return
            delay = RESTART_BACKOFF_S[min(restarts, len(RESTART_BACKOFF_S) - 1)]
            restarts += 1
            self.container.state = "waiting"
            self.container.reason = "CrashLoopBackOff"
            self.container.message = f"back-off {delay:g}s restarting failed container"
            await self.publish()
            if await _wait_or(self.deleting, delay):
                return
            self.container.restart_count += 1

    async def _cannot_run(self, reason: str, message: str) -> None:
        repeated = (self.container.reason, self.container.message) == (reason, message)
        self.container.state = "waiting"
        self.container.reason = reason
        self.container.message = message
        self.container.ready = False
        await self.publish()
        if not repeated:  # retries of the same failure add no new Event
            await self.event("Failed", f"{reason}: {message}", warning=True)
            log.warning("pod %s cannot run: %s: %s", self.key, reason, message)

    async def _start(self, plan: ContainerPlan) -> None:
        """Start an instance of the container with the node's runtime."""
        assert self.pod_ip is not None
        if self.log is not None:
            self.log.start_instance(self.container.restart_count)
        try:
            self.running = await self.host.runtime.start(
                self.pod, self.pod_ip, plan, self.log, self._notify
            )
        except BaseException:
            if self.log is not None:
                self.log.end_instance()
            raise
        self.started_epoch = time.time()
        self.container.state = "running"
        self.container.reason = ""
        self.container.message = ""
        self.container.exit_code = None
        self.container.started_at = now_rfc3339()
        self.container.container_id = self.running.container_id
        self._liveness_failed.clear()
        log.info("pod %s: %s", self.key, self.running.description)
        self._say(self.running.description)
        await self.event("Started", self.running.description)

    async def _serve_until_exit(self, plan: ContainerPlan) -> ContainerExit | None:
        """Probe while serving; return why the container stopped (None: Pod deleted)."""
        self.container.ready = plan.readiness is None
        probes = []
        readiness = plan.readiness
        if readiness is not None and readiness.initial_delay_s == 0:
            # Probe once right away, so a healthy Pod goes from Pending to Running and
            # Ready in a single status write instead of waiting a probe period.
            ok, _ = await self.host.prober.probe(self._probe_url(readiness), readiness.timeout_s)
            self.container.ready = ok and readiness.success_threshold <= 1
        await self.publish()
        tasks = self.host.tasks
        if readiness is not None:
            probed = readiness.initial_delay_s == 0
            probes.append(
                tasks.start(
                    f"readiness probe of {self.key} ({self.uid[:8]})",
                    lambda _: self._probe_loop(readiness, readiness=True, probed=probed),
                    kind="probe",
                    essential=False,
                ).name
            )
        liveness = plan.liveness
        if liveness is not None:
            probes.append(
                tasks.start(
                    f"liveness probe of {self.key} ({self.uid[:8]})",
                    lambda _: self._probe_loop(liveness, readiness=False),
                    kind="probe",
                    essential=False,
                ).name
            )
        assert self.running is not None
        deleted = asyncio.create_task(self.deleting.wait())
        exited = asyncio.create_task(self.running.exited())
        unhealthy = asyncio.create_task(self._liveness_failed.wait())
        try:
            await asyncio.wait((deleted, exited, unhealthy), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (deleted, exited, unhealthy):
                task.cancel()
            await tasks.stop(*probes)
        if self.deleting.is_set():
            return None
        if exited.done() and not exited.cancelled():
            return exited.result()
        return ContainerExit("Unhealthy", 137, "liveness probe failed: container will be restarted")

    def _probe_url(self, probe: Probe) -> URL:
        """Probes go where the runtime says the container listens (its Pod IP, or the
        loopback of a host process)."""
        host = self.running.probe_host if self.running is not None else self.pod_ip
        assert host is not None
        return probe_url(host, probe.port, probe.path)

    async def _probe_loop(self, probe: Probe, *, readiness: bool, probed: bool = False) -> None:
        """Kubernetes probe semantics: thresholds of consecutive results, every period.
        Runs supervised (restarted if it fails) until the container stops."""
        url = self._probe_url(probe)
        successes = 1 if probed and self.container.ready else 0
        failures = 0
        await asyncio.sleep(probe.period_s if probed else probe.initial_delay_s)
        while True:
            ok, detail = await self.host.prober.probe(url, probe.timeout_s)
            if ok:
                successes, failures = successes + 1, 0
                if readiness and not self.container.ready and successes >= probe.success_threshold:
                    self.container.ready = True
                    await self.publish()
            else:
                successes, failures = 0, failures + 1
                if failures >= probe.failure_threshold:
                    kind = "Readiness" if readiness else "Liveness"
                    await self.event("Unhealthy", f"{kind} probe failed: {detail}", warning=True)
                    if readiness and self.container.ready:
                        self.container.ready = False
                        await self.publish()
                    if not readiness:
                        self._liveness_failed.set()  # the container restarts, and
                        await asyncio.Event().wait()  # this loop is stopped with it
            await asyncio.sleep(probe.period_s)

    async def _stop_container(self, grace: float) -> None:
        running, self.running = self.running, None
        if running is not None:
            with contextlib.suppress(Exception):
                await running.stop(grace)

    async def _finish_deletion(self) -> None:
        """Stop within the grace period, then remove the Pod object (as a kubelet does).

        A preStop sleep keeps the server answering first: the EndpointSlice controller
        has marked the Pod terminating, and the gateway needs a moment to stop sending
        it requests. Then the server stops accepting and the requests in flight finish
        within what is left of the grace period."""
        grace = min(self.grace_seconds, 30.0)
        started = time.monotonic()
        if self.running is not None:
            self._say(f"stopping: the Pod is being deleted (grace {grace:g} s)")
            await self.event("Killing", f"Stopping container {self.container.name}")
            drain = min(getattr(self.plan, "pre_stop_sleep_s", 0.0), grace)
            if drain > 0:
                await asyncio.sleep(drain)
            self.container.ready = False
        await self._stop_container(max(0.0, grace - (time.monotonic() - started)))
        if self.log is not None:
            self.log.end_instance()
        if self.directory is not None:  # logs and volumes go with the Pod
            shutil.rmtree(self.directory, ignore_errors=True)
        path = api_path("v1", "pods", self.namespace, self.name)
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        try:
            await self.host.kube.delete(path, body)
        except ApiError as exc:
            if not (exc.not_found or exc.conflict):
                log.warning("deleting pod %s failed: %s", self.key, exc)
        log.info("pod %s removed", self.key)


def _epoch(rfc3339: str) -> float:
    try:
        return (
            dt.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
        )
    except ValueError:
        return time.time()


async def _wait_or(event: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early if ``event`` is set; return whether it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


def _without_times(status: dict[str, Any]) -> dict[str, Any]:
    """The status minus timestamps that change on every build (for change detection)."""
    conditions = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]
    ]
    containers = []
    for c in status["containerStatuses"]:
        c = dict(c)
        state = dict(c["state"])
        if "terminated" in state:
            state["terminated"] = {
                k: v for k, v in state["terminated"].items() if k != "finishedAt"
            }
        c["state"] = state
        containers.append(c)
    return {**status, "conditions": conditions, "containerStatuses": containers}
