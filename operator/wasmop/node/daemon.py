"""The node's daemon endpoint (the kubelet's port 10250, inside the node's namespace).

Serves what the operator's autoscaler and the experiments read, in the kubelet's own
formats where one exists:

* ``/metrics/resource``: per-container, per-pod and node CPU seconds and working-set
  bytes, in the kubelet's resource-metrics (Prometheus text) format;
* ``/pods``: the Pods this agent runs, with their addresses and runtime figures;
* ``/healthz``: 503 with the reasons while an essential task (the Pod watch, the
  heartbeat) is not working, as the Node's Ready condition says too;
* ``/metrics``: the agent's own Prometheus metrics (supervised tasks working, restarts);
* ``POST /faults/crash`` and ``POST /faults/netem``: fault injection, with the bearer
  token the agent wrote to its run file (readable by root only).

It listens on the node's InternalIP, an address inside the node's own namespace, so no
process outside this machine can reach it.
"""

from __future__ import annotations

import hmac
import os
import resource
import socket
import time
from collections.abc import Mapping
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from wasmop.node.pod_worker import PodWorker
from wasmop.supervision import TaskSupervisor, register_metrics


class DaemonHost(Protocol):
    """What the daemon serves and acts on: the node agent's Pods and its faults."""

    @property
    def name(self) -> str: ...

    @property
    def fault_token(self) -> str: ...

    @property
    def workers(self) -> Mapping[str, PodWorker]: ...

    def find_worker(self, namespace: str, name: str) -> PodWorker | None: ...

    def set_link(self, delay_ms: float = 0.0, loss_percent: float = 0.0) -> str: ...

    @property
    def tasks(self) -> TaskSupervisor: ...  # its long-lived tasks: /healthz and /metrics


def resource_metrics(agent: DaemonHost) -> str:
    """Prometheus text exposition in the kubelet's /metrics/resource shape."""
    now_ms = int(time.time() * 1000)
    lines = [
        "# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the"
        " container in core-seconds",
        "# TYPE container_cpu_usage_seconds_total counter",
    ]
    rows = []
    for worker in agent.workers.values():
        function = worker.function
        if function is None:
            continue
        rows.append((worker, function.cpu_seconds(), function.memory_bytes()))
    for worker, cpu, _ in rows:
        lines.append(
            f'container_cpu_usage_seconds_total{{container="{worker.container.name}",'
            f'namespace="{worker.namespace}",pod="{worker.name}"}} {cpu:.6f} {now_ms}'
        )
    lines += [
        "# HELP container_memory_working_set_bytes [STABLE] Current working set of the"
        " container in bytes",
        "# TYPE container_memory_working_set_bytes gauge",
    ]
    for worker, _, memory in rows:
        lines.append(
            f'container_memory_working_set_bytes{{container="{worker.container.name}",'
            f'namespace="{worker.namespace}",pod="{worker.name}"}} {memory} {now_ms}'
        )
    lines += [
        "# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod"
        " in core-seconds",
        "# TYPE pod_cpu_usage_seconds_total counter",
    ]
    for worker, cpu, _ in rows:
        labels = f'namespace="{worker.namespace}",pod="{worker.name}"'
        lines.append(f"pod_cpu_usage_seconds_total{{{labels}}} {cpu:.6f} {now_ms}")
    lines += [
        "# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes",
        "# TYPE pod_memory_working_set_bytes gauge",
    ]
    for worker, _, memory in rows:
        labels = f'namespace="{worker.namespace}",pod="{worker.name}"'
        lines.append(f"pod_memory_working_set_bytes{{{labels}}} {memory} {now_ms}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss = _rss_bytes()
    lines += [
        "# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node"
        " in core-seconds",
        "# TYPE node_cpu_usage_seconds_total counter",
        f"node_cpu_usage_seconds_total {usage.ru_utime + usage.ru_stime:.6f} {now_ms}",
        "# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes",
        "# TYPE node_memory_working_set_bytes gauge",
        f"node_memory_working_set_bytes {rss} {now_ms}",
        "# HELP scrape_error [STABLE] 1 if there was an error while getting container metrics,"
        " 0 otherwise",
        "# TYPE scrape_error gauge",
        "scrape_error 0",
    ]
    return "\n".join(lines) + "\n"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _authorised(agent: DaemonHost, request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    return hmac.compare_digest(header, f"Bearer {agent.fault_token}")


async def start_daemon(agent: DaemonHost, sock: socket.socket) -> web.AppRunner:
    """Serve the daemon's endpoints on ``sock`` (the node address, port 10250)."""

    async def healthz(_: web.Request) -> web.Response:
        problems = agent.tasks.problems()
        if problems:
            return web.Response(status=503, text="\n".join(problems) + "\n")
        return web.Response(text="ok")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=resource_metrics(agent), content_type="text/plain")

    registry = CollectorRegistry()
    register_metrics(agent.tasks, registry)

    async def own_metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def pods(_: web.Request) -> web.Response:
        listing = []
        for w in agent.workers.values():
            f = w.function
            listing.append(
                {
                    "namespace": w.namespace,
                    "name": w.name,
                    "uid": w.uid,
                    "ip": w.pod_ip,
                    "state": w.container.state,
                    "ready": w.container.ready,
                    "restartCount": w.container.restart_count,
                    "cpuSeconds": f.cpu_seconds() if f else 0.0,
                    "memoryBytes": f.memory_bytes() if f else 0,
                }
            )
        return web.json_response({"node": agent.name, "rssBytes": _rss_bytes(), "pods": listing})

    async def crash(request: web.Request) -> web.Response:
        if not _authorised(agent, request):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        body = await request.json()
        worker = agent.find_worker(body.get("namespace", "default"), body.get("pod", ""))
        if worker is None or worker.function is None:
            return web.json_response(
                {"error": "no running pod by that name on this node"}, status=404
            )
        worker.crash()
        return web.json_response({"crashed": f"{worker.namespace}/{worker.name}"})

    async def netem(request: web.Request) -> web.Response:
        if not _authorised(agent, request):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        body = await request.json()
        delay, loss = float(body.get("delayMs", 0)), float(body.get("lossPercent", 0))
        if delay < 0 or not 0 <= loss <= 100:
            return web.json_response(
                {"error": "delayMs >= 0 and 0 <= lossPercent <= 100"}, status=400
            )
        try:
            method = agent.set_link(delay_ms=delay, loss_percent=loss)
        except Exception as exc:
            return web.json_response({"error": str(exc)}, status=500)
        return web.json_response({"delayMs": delay, "lossPercent": loss, "method": method})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", own_metrics)
    app.router.add_get("/metrics/resource", metrics)
    app.router.add_get("/pods", pods)
    app.router.add_post("/faults/crash", crash)
    app.router.add_post("/faults/netem", netem)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    return runner
