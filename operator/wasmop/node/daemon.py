"""The node's kubelet API (port 10250, HTTPS) and its health port (10248, plain HTTP).

Served as the API server and metrics-server expect a kubelet to serve it, on the node's
InternalIP with a serving certificate the cluster CA signed (IP SAN for that address):

* ``/containerLogs/{namespace}/{pod}/{container}``: ``kubectl logs`` (follow, tailLines,
  sinceSeconds/sinceTime, timestamps, previous, limitBytes);
* ``/metrics/resource``: CPU seconds, working sets and start times in the kubelet's
  resource-metrics format (metrics-server, the operator's autoscaler);
* ``/stats/summary``: the Summary API;
* ``/metrics/cadvisor``: CPU throttling of containers under a CFS quota;
* ``/pods``: the Pods this node runs (a PodList), ``/metrics``: the agent's own metrics,
  ``/healthz``;
* ``POST /faults/crash`` and ``POST /faults/netem``: fault injection, with the bearer
  token the agent wrote to its run file (readable by root only), not a Kubernetes identity.

Every other request is authenticated and authorized as the kubelet does it
(``kubelet_auth``): 401 without a valid certificate or token, 403 when a
SubjectAccessReview says no. The health port answers ``/healthz`` alone, without
authentication, like the kubelet's 10248.

Both listen on the node's InternalIP, an address inside the node's own namespace, so no
process outside this machine can reach them.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from wasmop.node.container_logs import LogOptions, LogQueryError
from wasmop.node.kubelet_auth import AuthError, KubeletAuth
from wasmop.node.pod_worker import PodWorker
from wasmop.node.stats import (
    ContainerUsage,
    NodeUsage,
    RateTracker,
    cadvisor_metrics,
    resource_metrics,
    summary,
)
from wasmop.supervision import TaskSupervisor, register_metrics

log = logging.getLogger(__name__)

FAULT_PREFIX = "/faults/"


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

    def node_usage(self, containers: list[ContainerUsage]) -> NodeUsage: ...

    @property
    def tasks(self) -> TaskSupervisor: ...  # its long-lived tasks: /healthz and /metrics


def container_usage(agent: DaemonHost) -> list[ContainerUsage]:
    """Figures of every running container on the node."""
    return [u for w in list(agent.workers.values()) if (u := w.usage()) is not None]


def serving_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """TLS for the kubelet port: our certificate; client certificates verified when given
    (the API server's and metrics-server's); tokens are the other way in."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def _fault_authorised(agent: DaemonHost, request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    return hmac.compare_digest(header, f"Bearer {agent.fault_token}")


def kubelet_app(agent: DaemonHost, auth: KubeletAuth | None) -> web.Application:
    """The routes of port 10250; ``auth`` None serves them unauthenticated (unit tests)."""
    rates = RateTracker()

    @web.middleware
    async def authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith(FAULT_PREFIX):
            if not _fault_authorised(agent, request):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401)
            return await handler(request)
        if auth is not None:
            peercert = request.transport.get_extra_info("peercert") if request.transport else None
            try:
                await auth.check(
                    request.method,
                    request.path,
                    peercert,
                    request.headers.get("Authorization", ""),
                )
            except AuthError as exc:
                return web.Response(status=exc.status, text=exc.message)
            except Exception as exc:  # the API server could not be asked
                log.warning("kubelet API authorization failed: %s", exc)
                return web.Response(status=503, text=f"cannot authorize the request: {exc}\n")
        return await handler(request)

    async def healthz(_: web.Request) -> web.Response:
        return health_response(agent)

    registry = CollectorRegistry()
    register_metrics(agent.tasks, registry)

    async def own_metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def metrics_resource(_: web.Request) -> web.Response:
        containers = container_usage(agent)
        text = resource_metrics(agent.node_usage(containers), containers)
        return web.Response(text=text, content_type="text/plain")

    async def metrics_cadvisor(_: web.Request) -> web.Response:
        return web.Response(
            text=cadvisor_metrics(container_usage(agent)), content_type="text/plain"
        )

    async def stats_summary(_: web.Request) -> web.Response:
        containers = container_usage(agent)
        return web.json_response(summary(agent.node_usage(containers), containers, rates))

    async def pods(_: web.Request) -> web.Response:
        items = [dict(w.pod, apiVersion="v1", kind="Pod") for w in list(agent.workers.values())]
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "items": items})

    async def container_logs(request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        pod, container = request.match_info["pod"], request.match_info["container"]
        worker = agent.find_worker(namespace, pod)
        if worker is None:
            return web.Response(
                status=404, text=f'pod "{pod}" in namespace "{namespace}" not found\n'
            )
        if worker.log is None or container != worker.container.name:
            return web.Response(
                status=404, text=f'container "{container}" in pod "{pod}" is not available\n'
            )
        try:
            options = LogOptions.from_query(request.query)
        except LogQueryError as exc:
            return web.Response(status=400, text=f"{exc}\n")
        instance = worker.container.restart_count
        if options.previous:
            instance -= 1
            if instance < 0 or instance not in worker.log.instances():
                return web.Response(
                    status=400,
                    text=f'previous terminated container "{container}" in pod "{pod}" not found\n',
                )
        elif instance not in worker.log.instances():
            reason = worker.container.reason or worker.container.state
            return web.Response(
                status=400,
                text=f'container "{container}" in pod "{pod}" is waiting to start: {reason}\n',
            )
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        try:
            async with contextlib.aclosing(worker.log.read(options, instance)) as chunks:
                async for chunk in chunks:
                    await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:  # the reader went away (kubectl logs -f interrupted)
            log.debug("log reader of %s/%s went away", namespace, pod)
        return response

    async def crash(request: web.Request) -> web.Response:
        body = await request.json()
        worker = agent.find_worker(body.get("namespace", "default"), body.get("pod", ""))
        if worker is None or not worker.crash():
            return web.json_response(
                {"error": "no running pod by that name on this node"}, status=404
            )
        return web.json_response({"crashed": f"{worker.namespace}/{worker.name}"})

    async def netem(request: web.Request) -> web.Response:
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

    app = web.Application(middlewares=[authenticate])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", own_metrics)
    app.router.add_get("/metrics/resource", metrics_resource)
    app.router.add_get("/metrics/cadvisor", metrics_cadvisor)
    app.router.add_get("/stats/summary", stats_summary)
    app.router.add_get("/pods", pods)
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    app.router.add_post("/faults/crash", crash)
    app.router.add_post("/faults/netem", netem)
    return app


def health_response(agent: DaemonHost) -> web.Response:
    """503 with the reasons while an essential task (Pod watch, heartbeat) is down."""
    problems = agent.tasks.problems()
    if problems:
        return web.Response(status=503, text="\n".join(problems) + "\n")
    return web.Response(text="ok")


async def _serve(
    app: web.Application, sock: socket.socket, context: ssl.SSLContext | None = None
) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=context).start()
    return runner


async def start_daemon(
    agent: DaemonHost, sock: socket.socket, context: ssl.SSLContext | None, auth: KubeletAuth | None
) -> web.AppRunner:
    """Serve the kubelet API on ``sock`` (the node address, port 10250)."""
    return await _serve(kubelet_app(agent, auth), sock, context)


async def start_health(agent: DaemonHost, sock: socket.socket) -> web.AppRunner:
    """Serve ``/healthz`` alone, unauthenticated, on ``sock`` (port 10248)."""

    async def healthz(_: web.Request) -> web.Response:
        return health_response(agent)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return await _serve(app, sock)
