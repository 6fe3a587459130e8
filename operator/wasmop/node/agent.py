"""The wasm node agent: a virtual kubelet whose Pods are WebAssembly functions.

It registers a Node, keeps its Lease fresh so the node lifecycle controller sees it
Ready, watches the Pods bound to it (list-then-watch with a field selector, exactly as
the Node authorizer allows), and hands each to a `PodWorker`. All API access uses the
node's own client certificate, so NodeRestriction applies to everything it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import resource
import secrets
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from wasmop import __version__
from wasmop.console import exit_after_grace
from wasmop.kube import ApiError, Kube, KubeConfig, WatchEvent
from wasmop.kube.client import api_path
from wasmop.kube.events import EventRecorder
from wasmop.netguard import AddressPolicy
from wasmop.node import fault_client
from wasmop.node.container_logs import LogLimits, remove_orphans
from wasmop.node.container_runtime import ContainerRuntime
from wasmop.node.daemon import serving_context, start_daemon, start_health
from wasmop.node.function_loader import FunctionLoader
from wasmop.node.host_plan import DEFAULT_IMAGES
from wasmop.node.host_process import HostProcessRuntime
from wasmop.node.images import NodeImages
from wasmop.node.ipam import PodAddressAllocator
from wasmop.node.kubelet_auth import KubeletAuth
from wasmop.node.linkemu import LinkEmulator, kernel_has_netem
from wasmop.node.netns import NodeNetwork
from wasmop.node.pod_worker import PodHost, PodWorker, pod_key
from wasmop.node.podspec import micro_time, now_rfc3339
from wasmop.node.prober import HttpProber
from wasmop.node.stats import ContainerUsage, NodeUsage
from wasmop.node.wasm_container import WasmtimeRuntime
from wasmop.oci.cache import ContentStore
from wasmop.oci.policy import RegistryPolicy
from wasmop.operator.quantity import memory_bytes
from wasmop.private_file import write_private
from wasmop.runtime.engine import wasmtime_version
from wasmop.supervision import TaskState, TaskSupervisor
from wasmop.wellknown import (
    DAEMON_PORT,
    ENGINE_VERSION_LABEL,
    HEALTH_PORT,
    HOST_PROCESS_HANDLER,
    HOST_PROCESS_LABEL,
    RUNTIME_LABEL,
    ZONE_LABEL,
)

log = logging.getLogger(__name__)


@dataclass
class NodeSettings:
    """How one agent presents itself to the cluster."""

    name: str
    pod_cidr: str
    kubeconfig: Path
    zone: str = "zone-a"
    cpu: str = "2"
    memory: str = "4Gi"
    max_pods: int = 110
    runtime_name: str = "wasmtime"
    # The node's runtime handler: "wasmtime" (wasm functions, in this process) or
    # "host-process" (the project's own images, allowed_images only, as processes).
    runtime_handler: str = "wasmtime"
    allowed_images: tuple[str, ...] = DEFAULT_IMAGES
    labels: dict[str, str] = field(default_factory=dict)
    lease_duration_s: int = 40
    # The node lifecycle controller judges a node by the age of its Lease against its
    # grace period (4 s in the embedded cluster, ClusterSettings): renewing twice a second
    # leaves a live node 3.25 s of stalled renewals (an API server restart is about 2 s)
    # and notices a dead one within 4.75 s.
    lease_renew_s: float = 0.5
    status_report_s: float = 30.0
    run_dir: Path | None = None  # where the fault-API token and pid file go
    cache_dir: Path | None = None  # precompiled modules
    content_dir: Path | None = None  # pulled module images by digest (None: no images)
    # Registries reached whatever their address (host[:port]); others must pass the
    # cluster's address policy (public unicast, plus or minus these CIDRs), as module URLs
    # and registries must for the operator.
    registry_allow: tuple[str, ...] = ()
    module_url_allow: tuple[str, ...] = ()
    module_url_deny: tuple[str, ...] = ()
    pod_dir: Path | None = None  # one directory per Pod: its container logs (and volumes)
    log_limits: LogLimits = field(default_factory=LogLimits)
    # The kubelet API's TLS: serving certificate (IP SAN: the node's InternalIP) and the CA
    # whose client certificates it accepts. Without them it serves plain HTTP, where only
    # bearer tokens (TokenReview) authenticate.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None

    def registry_policy(self) -> RegistryPolicy:
        """Where this node's image pulls may connect (ValueError for a bad CIDR)."""
        addresses = AddressPolicy.parse(self.module_url_allow, self.module_url_deny)
        return RegistryPolicy.of(self.registry_allow, addresses)


def beat_wait(started: float, now: float, interval: float) -> float:
    """Seconds until the next heartbeat of one that started at ``started``: renewals keep
    their interval from start to start, so slow API calls on a loaded machine do not
    stretch it (the node controller's grace period budgets for the interval alone)."""
    return max(0.0, started + interval - now)


class NodeAgent:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.network = NodeNetwork.for_node(settings.name, settings.pod_cidr)
        self.ipam = PodAddressAllocator(self.network.pod_addresses())
        self.kube = Kube(
            KubeConfig.from_file(settings.kubeconfig), user_agent=f"wasmop-node/{self.name}"
        )
        self.workers: dict[str, PodWorker] = {}
        self.started = time.time()
        self.fault_token = secrets.token_urlsafe(24)
        self.events = EventRecorder(self.kube, "wasmop-node", self.name)
        self.images = (
            NodeImages(ContentStore(settings.content_dir), settings.registry_policy())
            if settings.content_dir is not None
            else None
        )
        self.functions = FunctionLoader(self.kube, settings.cache_dir, self.images)
        self.prober = HttpProber()
        # Watches, heartbeat and probe loops: restarted when they fail; the node is Ready
        # only while its essential ones work.
        self.tasks = TaskSupervisor(f"node {self.name}")
        self.host = PodHost(
            kube=self.kube,
            events=self.events,
            node_address=self.network.node_address,
            runtime=self._runtime(),
            prober=self.prober,
            spawn=self.spawn,
            tasks=self.tasks,
            pod_root=settings.pod_dir,
            log_limits=settings.log_limits,
        )
        self._stop = asyncio.Event()
        self._netem: bool | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._link: LinkEmulator | None = None
        self._health_changed = asyncio.Event()
        self._ready: tuple[bool, str] | None = None  # (ready, since) as last reported
        self._servers: list[web.AppRunner] = []  # the kubelet API and the health port

    @property
    def host_process(self) -> bool:
        return self.settings.runtime_handler == HOST_PROCESS_HANDLER

    def _runtime(self) -> ContainerRuntime:
        if not self.host_process:
            return WasmtimeRuntime(self.network, self.ipam, self.functions)
        if self.settings.pod_dir is None:
            raise ValueError("a host-process node needs a Pod directory (pod_dir)")
        return HostProcessRuntime(
            self.name,
            self.network.node_address,
            self.kube,
            self.settings.pod_dir,
            self.settings.allowed_images,
        )

    # --- background tasks ----------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a short task in the background, keeping a reference until it ends."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- node object and heartbeat --------------------------------------------------

    def node_labels(self) -> dict[str, str]:
        if self.host_process:
            return {
                "kubernetes.io/arch": _machine_arch(),
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": self.name,
                ZONE_LABEL: self.settings.zone,
                HOST_PROCESS_LABEL: "true",
                **self.settings.labels,
            }
        return {
            "kubernetes.io/arch": "wasm32-wasi",
            "kubernetes.io/os": "wasi",
            "kubernetes.io/hostname": self.name,
            ZONE_LABEL: self.settings.zone,
            RUNTIME_LABEL: self.settings.runtime_name,
            ENGINE_VERSION_LABEL: wasmtime_version(),
            **self.settings.labels,
        }

    def taint(self) -> dict[str, str]:
        """Only Pods meant for this node's runtime tolerate it."""
        if self.host_process:
            return {"key": HOST_PROCESS_LABEL, "value": "true", "effect": "NoSchedule"}
        return {"key": RUNTIME_LABEL, "value": self.settings.runtime_name, "effect": "NoSchedule"}

    def node_status(self) -> dict[str, Any]:
        resources = {
            "cpu": self.settings.cpu,
            "memory": self.settings.memory,
            "pods": str(self.settings.max_pods),
        }
        heartbeat = now_rfc3339()

        def condition(
            kind: str, status: str, reason: str, message: str, since: str = heartbeat
        ) -> dict[str, Any]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": since,
            }

        problems = self.tasks.problems()
        ready = not problems
        if self._ready is None or self._ready[0] != ready:
            self._ready = (ready, heartbeat)
        if ready:
            readiness = ("True", "KubeletReady", "wasm node agent is posting ready status")
        else:
            readiness = ("False", "KubeletNotReady", "; ".join(problems))
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("Ready", *readiness, since=self._ready[1]),
                condition(
                    "MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"
                ),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.network.node_address},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": DAEMON_PORT}},
            "nodeInfo": {
                "machineID": self.name,
                "systemUUID": self.name,
                "bootID": f"{int(self.started)}",
                "kernelVersion": platform.release(),
                "kubeletVersion": f"v{__version__}-wasmop",
                "kubeProxyVersion": "",
                **self._runtime_info(),
            },
        }

    def _runtime_info(self) -> dict[str, str]:
        if self.host_process:
            return {
                "osImage": "wasmop system node",
                "containerRuntimeVersion": f"host-process://wasmop-{__version__}",
                "operatingSystem": "linux",
                "architecture": _machine_arch(),
            }
        return {
            "osImage": "wasmop wasm node",
            "containerRuntimeVersion": f"wasmtime://{wasmtime_version()}",
            "operatingSystem": "wasi",
            "architecture": "wasm32",
        }

    async def register(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": self.node_labels()},
            "spec": {
                "podCIDR": str(self.network.pod_cidr),
                "podCIDRs": [str(self.network.pod_cidr)],
                "taints": [self.taint()],
            },
        }
        try:
            await self.kube.create(api_path("v1", "nodes"), body)
            log.info("registered node %s", self.name)
        except ApiError as exc:
            if not exc.conflict:
                raise
            # Re-registration after a restart: refresh labels (taints are set at creation only).
            await self.kube.patch(
                api_path("v1", "nodes", name=self.name),
                {"metadata": {"labels": self.node_labels()}},
            )
            log.info("node %s already registered; resuming", self.name)
        await self.report_status()

    async def report_status(self) -> None:
        await self.kube.patch(
            api_path("v1", "nodes", name=self.name, subresource="status"),
            {"status": self.node_status()},
        )

    async def renew_lease(self) -> None:
        path = api_path("coordination.k8s.io/v1", "leases", "kube-node-lease", self.name)
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": self.settings.lease_duration_s,
            "renewTime": micro_time(),
        }
        try:
            await self.kube.patch(path, {"spec": spec})
        except ApiError as exc:
            if not exc.not_found:
                raise
            node = await self.kube.get(api_path("v1", "nodes", name=self.name))
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": self.name,
                            "uid": node["metadata"]["uid"],
                        }
                    ],
                },
                "spec": spec,
            }
            await self.kube.create(
                api_path("coordination.k8s.io/v1", "leases", "kube-node-lease"), body
            )

    async def _heartbeat(self, task: TaskState) -> None:
        """Renew the Lease; post the Node's status every status_report_s, and at once when
        its readiness changes (an essential task stopped or came back)."""
        last_status = time.monotonic()
        while True:
            beat_started = time.monotonic()
            if not self.network.exists():
                await self._rebuild_network()
            try:
                await self.renew_lease()
                ready = not self.tasks.problems()
                due = time.monotonic() - last_status >= self.settings.status_report_s
                changed = self._ready is None or self._ready[0] != ready
                if due or changed or await self._ready_overwritten(ready):
                    await self.report_status()
                    last_status = time.monotonic()
                task.progress()
                for worker in list(self.workers.values()):
                    if worker.publish_failed:  # while the API server was away
                        self.spawn(worker.publish())
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)
            self._health_changed.clear()
            wait = beat_wait(beat_started, time.monotonic(), self.settings.lease_renew_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._health_changed.wait(), wait)

    async def _ready_overwritten(self, ready: bool) -> bool:
        """True when the Node's Ready condition on the server is not what this agent last
        said, as after an API server outage the node controller marks it Unknown: then the
        status is posted at once, as a kubelet does, not at the next periodic report."""
        node = await self.kube.get(api_path("v1", "nodes", name=self.name), resourceVersion="0")
        conditions = (node.get("status") or {}).get("conditions") or []
        held = next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
        return held != ("True" if ready else "False")

    async def _rebuild_network(self) -> None:
        """Someone removed the node's namespace: make it again, listen again for the
        kubelet API and health port, and restart every wasm Pod, whose listening sockets
        went with the old one. (Host-process Pods listen on the host's loopback and keep
        running.)"""
        log.warning("network namespace %s vanished; rebuilding it", self.network.namespace)
        await asyncio.to_thread(self.network.setup)
        stale, self._servers = self._servers, []
        await self._serve()
        if not self.host_process:
            for worker in list(self.workers.values()):
                worker.crash()
        # In the background: a runner's cleanup waits up to a minute for requests still
        # in progress on the old sockets (a log follower's), and the heartbeat must not.
        self.spawn(self._stop_serving(stale))

    async def _serve(self) -> None:
        """The kubelet API (10250) and the health port (10248) on the node's address,
        inside its namespace."""
        settings = self.settings
        context = None
        if settings.tls_cert and settings.tls_key and settings.client_ca:
            context = serving_context(settings.tls_cert, settings.tls_key, settings.client_ca)
        address = self.network.node_address
        self._servers.append(
            await start_daemon(
                self, self.network.listen(address, DAEMON_PORT), context, self.kubelet_auth()
            )
        )
        self._servers.append(await start_health(self, self.network.listen(address, HEALTH_PORT)))

    async def _stop_serving(self, servers: list[web.AppRunner] | None = None) -> None:
        """Close the given listeners, or all of this agent's."""
        if servers is None:
            servers, self._servers = self._servers, []
        for runner in servers:
            with contextlib.suppress(Exception):
                await runner.cleanup()

    # --- pods -----------------------------------------------------------------------

    async def _pod_changed(self, event: WatchEvent) -> None:
        if event.type == "SYNCED":
            self._health_changed.set()  # the watch works (again): the heartbeat may tell
            if self.settings.pod_dir is not None:  # Pods that went while we were away
                remove_orphans(self.settings.pod_dir, set(self.workers))
            return
        self._handle_pod(event.type, event.object)

    def _handle_pod(self, event_type: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if event_type == "DELETED":
            if worker is not None:
                worker.deleting.set()
            return
        phase = pod.get("status", {}).get("phase")
        if worker is None:
            if phase in ("Succeeded", "Failed") and not pod["metadata"].get("deletionTimestamp"):
                return
            worker = PodWorker(self.host, pod)
            self.workers[uid] = worker
            worker.task = asyncio.create_task(self._run_worker(worker))
            log.debug("adopted pod %s", pod_key(pod))
        else:
            worker.update(pod)

    async def _run_worker(self, worker: PodWorker) -> None:
        try:
            await worker.run()
        finally:
            self.workers.pop(worker.uid, None)

    def start_pod_watch(self) -> TaskState:
        """Watch the Pods bound here (the field selector the Node authorizer allows)."""
        return self.tasks.start_watch(
            "Pod watch",
            self.kube,
            api_path("v1", "pods"),
            self._pod_changed,
            fieldSelector=f"spec.nodeName={self.name}",
        )

    def find_worker(self, namespace: str, name: str) -> PodWorker | None:
        return next(
            (w for w in self.workers.values() if w.namespace == namespace and w.name == name), None
        )

    def node_usage(self, containers: list[ContainerUsage]) -> NodeUsage:
        """The node's own figures: this process (which hosts every function a wasm node
        runs), plus the host-process containers' cgroups."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu, memory = usage.ru_utime + usage.ru_stime, _rss_bytes()
        if self.host_process:
            cpu += sum(c.cpu_seconds for c in containers)
            memory += sum(c.memory_working_set_bytes for c in containers)
        return NodeUsage(
            name=self.name,
            cpu_seconds=cpu,
            memory_working_set_bytes=memory,
            started_at=self.started,
            memory_capacity_bytes=memory_bytes(self.settings.memory),
        )

    def kubelet_auth(self) -> KubeletAuth:
        """TokenReviews and SubjectAccessReviews go through the node's own client (the
        Node authorizer lets every node create both)."""
        return KubeletAuth(self.name, self.kube.create)

    # --- main -----------------------------------------------------------------------

    def _write_run_files(self) -> None:
        run_dir = self.settings.run_dir
        if run_dir is None:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        # It carries the fault API's token: 0600 from its first byte.
        write_private(
            fault_client.run_file(run_dir, self.name),
            json.dumps(
                {
                    "pid": os.getpid(),
                    "address": self.network.node_address,
                    "port": DAEMON_PORT,
                    "token": self.fault_token,
                    "namespace": self.network.namespace,
                    "caFile": str(self.settings.client_ca) if self.settings.client_ca else None,
                }
            ),
        )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await asyncio.to_thread(self.network.setup)
        try:
            await self._serve()
            self._write_run_files()
            # Register once the Pod watch has listed, so the Node is Ready from the start.
            watch = self.start_pod_watch()
            while watch.problem() is not None and not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._health_changed.wait(), 1.0)
            await self.register()
            await self.renew_lease()
            self.tasks.start("heartbeat", self._heartbeat)
            log.info("node %s ready (pod range %s)", self.name, self.network.pod_cidr)
            await self._stop.wait()
            exit_after_grace()  # Pods get up to 30 s each, in parallel; this is the backstop
            await self.tasks.stop()
            await self.shutdown_pods()
        finally:
            await self.tasks.stop()
            await self._stop_serving()
            await self.prober.close()
            if self._link is not None:
                self._link.stop()
            await self.events.drain()
            await self.kube.close()
            self.functions.close()
            if self.images is not None:
                await self.images.close()
            await asyncio.to_thread(self.network.teardown)
            if self.settings.run_dir is not None:
                fault_client.run_file(self.settings.run_dir, self.name).unlink(missing_ok=True)
            log.info("node %s stopped", self.name)

    def set_link(self, delay_ms: float = 0.0, loss_percent: float = 0.0) -> str:
        """Edge-network emulation on this node's link: tc netem where the kernel has it,
        else the agent's own user-space link (see linkemu). Returns which was used."""
        if self._netem is None:
            self._netem = kernel_has_netem()
        if self._netem:
            self.network.set_netem(delay_ms=delay_ms, loss_percent=loss_percent)
            return "tc-netem"
        if self._link is None:
            self._link = LinkEmulator(self.network)
        self._link.configure(delay_ms, loss_percent)
        return "user-space"

    async def shutdown_pods(self) -> None:
        """Stop serving (the Pods stay bound to this node and are re-adopted on restart)."""
        tasks = [w.task for w in self.workers.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _machine_arch() -> str:
    """The host's architecture in Kubernetes' words (GOARCH)."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
