"""Client side of the embedded cluster: bring it up, take it down, ask how it is.

These functions are what ``wasmop cluster …``, the test fixtures and the benchmarks
call. Each failure raises :class:`ClusterError` with one line a user can act on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wasmop.cluster import addons, components
from wasmop.cluster.layout import CLUSTER_MARKER_ENV, StateLayout, controlplane_binary, go_binary
from wasmop.cluster.pki import PKI, PKIError, node_identity, node_serving_identity
from wasmop.cluster.settings import ClusterSettings, SettingsError


class ClusterError(Exception):
    """Something the user must fix; the message is one line."""


@dataclass(frozen=True)
class UpResult:
    already_running: bool
    seconds: float
    kubeconfig: Path


def _pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (e.g. a supervisor we started, killed) is dead."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def supervisor_pid(layout: StateLayout) -> int | None:
    """The running supervisor's pid, or None (a stale pid file is ignored)."""
    try:
        pid = int(layout.supervisor_pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def read_status(layout: StateLayout) -> dict[str, Any] | None:
    try:
        return json.loads(layout.supervisor_status.read_text())
    except (OSError, ValueError):
        return None


def is_running(layout: StateLayout) -> bool:
    status = read_status(layout)
    return supervisor_pid(layout) is not None and bool(status) and status["state"] == "running"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_ports(settings: ClusterSettings) -> None:
    for owner, port in settings.ports().items():
        if not _port_free(port):
            raise ClusterError(
                f"port {port} on 127.0.0.1 (for {owner}) is already in use; stop what holds it"
                " (ss -ltnp) or choose another port in cluster.json"
            )


def check_binary() -> Path:
    """The control plane binary, after checking it and the cluster services are built."""
    binaries = [controlplane_binary(), *(go_binary(name) for name in addons.BINARIES)]
    missing = [b for b in binaries if not b.exists()]
    if not missing:
        return binaries[0]
    names = ", ".join(str(b) for b in missing)
    if shutil.which("go") is None:
        raise ClusterError(
            f"the cluster is not built ({names}) and Go is not installed: install"
            " Go >= 1.26.4 (https://go.dev/doc/install) or use environment.yml, then run"
            " 'make controlplane'"
        )
    raise ClusterError(f"the cluster is not built ({names}): run 'make controlplane'")


# Generations of the state dir. 2: etcd behind TLS with client certificates, Secrets
# encrypted at rest. A dir from generation 1 holds plaintext Secrets in etcd and an etcd
# member that advertises http://, so it is refused rather than half-upgraded.
STATE_FORMAT = 2


def check_state_format(layout: StateLayout) -> None:
    """Refuse a state dir an older wasmop wrote; stamp a new one with the current format."""
    try:
        found = int(layout.state_format.read_text().strip())
    except (OSError, ValueError):
        found = None
    has_data = (layout.etcd_data / "member").exists()
    if found == STATE_FORMAT or (found is None and not has_data):
        layout.root.mkdir(parents=True, exist_ok=True)
        layout.state_format.write_text(f"{STATE_FORMAT}\n")
        return
    if found is None or found < STATE_FORMAT:
        raise ClusterError(
            f"state dir {layout.root} was created by an older wasmop (etcd without TLS,"
            " Secrets stored unencrypted); run 'wasmop cluster up --fresh' to start a new"
            " cluster (this deletes every object in it)"
        )
    raise ClusterError(
        f"state dir {layout.root} was created by a newer wasmop (format {found}, this one"
        f" knows {STATE_FORMAT}); upgrade wasmop or run 'wasmop cluster up --fresh'"
    )


def load_settings(layout: StateLayout, **overrides: Any) -> ClusterSettings:
    try:
        settings = ClusterSettings.load(layout.settings_file) or ClusterSettings()
    except SettingsError as exc:
        raise ClusterError(f"state dir {layout.root} is corrupt: {exc}; run with --fresh") from exc
    try:
        return settings.updated(**overrides)
    except SettingsError as exc:
        raise ClusterError(str(exc)) from exc


def wipe(layout: StateLayout) -> None:
    if supervisor_pid(layout) is not None:
        down(layout)
    if layout.root.exists():
        shutil.rmtree(layout.root)


def up(
    layout: StateLayout,
    *,
    fresh: bool = False,
    timeout: float = 120.0,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> UpResult:
    """Start the cluster (or report the running one) and wait until it is ready."""
    say = progress or (lambda _msg: None)
    if fresh:
        wipe(layout)
    if supervisor_pid(layout) is not None:
        status = read_status(layout) or {}
        if status.get("state") == "running":
            return UpResult(True, 0.0, layout.admin_kubeconfig)
        if status.get("state") == "starting":
            return _wait_running(layout, timeout, time.monotonic(), say)
        state = status.get("state", "in an unknown state")
        raise ClusterError(
            f"a supervisor (pid {supervisor_pid(layout)}) is {state};"
            " run 'wasmop cluster down' first"
        )
    check_binary()
    settings = load_settings(layout, **overrides)
    sweep_strays(layout)
    check_ports(settings)
    check_state_format(layout)
    try:
        layout.ensure()
        pki = components.prepare(layout, settings)
        addons.prepare(layout, settings, pki)
    except PKIError as exc:
        raise ClusterError(f"state dir {layout.root} is corrupt: {exc}; run with --fresh") from exc
    settings.save(layout.settings_file)
    layout.supervisor_status.unlink(missing_ok=True)
    started = time.monotonic()
    with layout.log_for("supervisor").open("ab") as logf:
        subprocess.Popen(
            [sys.executable, "-m", "wasmop.cluster.supervisor", "--state-dir", str(layout.root)],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, CLUSTER_MARKER_ENV: str(layout.root)},
        )
    return _wait_running(layout, timeout, started, say)


def _wait_running(
    layout: StateLayout, timeout: float, started: float, say: Callable[[str], None]
) -> UpResult:
    deadline = started + timeout
    announced: set[str] = set()
    seen_pid = False
    while time.monotonic() < deadline:
        status = read_status(layout)
        pid = supervisor_pid(layout)
        seen_pid = seen_pid or pid is not None
        if status:
            for name, comp in status["components"].items():
                if comp["state"] == "running" and name not in announced:
                    announced.add(name)
                    say(f"{name} ready ({time.monotonic() - started:.1f} s)")
            if status["state"] == "running":
                return UpResult(False, time.monotonic() - started, layout.admin_kubeconfig)
            if status["state"] == "failed":
                _wait_gone(layout)
                raise ClusterError(status["message"])
        if seen_pid and pid is None and (status is None or status["state"] != "running"):
            # Give the supervisor a moment to write its final status.
            time.sleep(0.2)
            status = read_status(layout)
            if status and status.get("message"):
                raise ClusterError(status["message"])
            raise ClusterError(f"the cluster supervisor exited; see {layout.log_for('supervisor')}")
        time.sleep(0.05)
    raise ClusterError(
        f"the cluster was not ready after {timeout:.0f} s; see the logs in {layout.logs}"
    )


def _wait_gone(layout: StateLayout, timeout: float = 10.0) -> None:
    """Let a failed supervisor finish stopping what it started before reporting."""
    deadline = time.monotonic() + timeout
    while _processes_of(layout) and time.monotonic() < deadline:
        time.sleep(0.05)


def _processes_of(layout: StateLayout) -> list[int]:
    """Pids of processes carrying this cluster's marker (strays after a crash)."""
    marker = f"{CLUSTER_MARKER_ENV}={layout.root}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def sweep_strays(layout: StateLayout, grace: float = 5.0) -> list[int]:
    """Stop every process left from this cluster: SIGTERM, then SIGKILL."""
    pids = _processes_of(layout)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def down(layout: StateLayout, timeout: float = 60.0) -> bool:
    """Stop the supervisor and everything it started. True if anything was running."""
    pid = supervisor_pid(layout)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.05)
    strays = sweep_strays(layout)
    layout.supervisor_pid.unlink(missing_ok=True)
    _remove_node_networks(layout)
    return pid is not None or bool(strays)


def _remove_node_networks(layout: StateLayout) -> None:
    """A killed agent cannot remove its namespace; do it for it.

    Only namespaces named in this cluster's own run files are touched, never ones that
    merely share a node name with another cluster on the machine.
    """
    from wasmop.node.netns import remove_namespace

    for run_file in layout.run.glob("node-*.json") if layout.run.exists() else ():
        try:
            namespace = json.loads(run_file.read_text())["namespace"]
        except (OSError, ValueError, KeyError):
            continue
        remove_namespace(namespace)
        run_file.unlink(missing_ok=True)


def partition_node(layout: StateLayout, node: str, *, cut: bool) -> None:
    """Cut (or restore) a wasm node's link while its agent keeps running: a network
    partition between the node and everything else (gateway, probes, API server)."""
    from wasmop.node.netns import NetworkError, NodeNetwork

    settings = load_settings(layout)
    names = settings.node_names()
    if node not in names:
        raise ClusterError(f"no wasm node {node!r}; this cluster has {', '.join(names)}")
    network = NodeNetwork.for_node(node, settings.node_pod_cidr(names.index(node) + 1))
    if not network.exists():
        raise ClusterError(f"{node} has no network namespace: is its agent running?")
    try:
        if cut:
            network.cut_link()
        else:
            network.restore_link()
    except NetworkError as exc:
        raise ClusterError(str(exc)) from exc


def control(layout: StateLayout, op: str, **fields: Any) -> dict[str, Any]:
    """Send one command to the supervisor: status, or stop/start/restart/kill a component,
    or freeze it for ``seconds`` (thaw ends a freeze early)."""
    if supervisor_pid(layout) is None:
        raise ClusterError("the embedded cluster is not running; run 'wasmop cluster up'")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(120)
        s.connect(str(layout.control_socket))
        s.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    if not reply.get("ok"):
        raise ClusterError(reply.get("error", "the supervisor refused the command"))
    return reply


@dataclass(frozen=True)
class APIServiceStatus:
    """An aggregated API as the API server's availability controller last saw it."""

    name: str
    available: str  # True, False or Unknown, the condition's status
    reason: str
    message: str


def aggregated_apis(layout: StateLayout, timeout: float = 5.0) -> list[APIServiceStatus]:
    """The APIServices served by another server (metrics.k8s.io), with their Available
    condition: ``False`` with a reason when the aggregator cannot reach the backend."""
    import asyncio

    import aiohttp

    from wasmop.kube import ApiError, Kube, KubeConfig

    async def fetch() -> list[dict[str, Any]]:
        config = KubeConfig.from_file(layout.admin_kubeconfig)
        async with Kube(config, user_agent="wasmop-status") as kube:
            listed = await kube.get("/apis/apiregistration.k8s.io/v1/apiservices")
        return [item for item in listed["items"] if item["spec"].get("service")]

    try:
        items = asyncio.run(asyncio.wait_for(fetch(), timeout))
    except (OSError, aiohttp.ClientError, ApiError, TimeoutError) as exc:
        raise ClusterError(f"the API server did not answer: {exc}") from exc
    result = []
    for item in items:
        conditions = (item.get("status") or {}).get("conditions") or []
        available = next((c for c in conditions if c["type"] == "Available"), {})
        result.append(
            APIServiceStatus(
                item["metadata"]["name"],
                available.get("status", "Unknown"),
                available.get("reason", ""),
                available.get("message", ""),
            )
        )
    return result


@dataclass(frozen=True)
class NodeCredentials:
    """What a node agent of the embedded cluster authenticates and serves with."""

    kubeconfig: Path  # as system:node:<name> (group system:nodes)
    serving_cert: Path  # its kubelet API's certificate, IP SAN for its InternalIP
    serving_key: Path
    client_ca: Path  # the cluster CA: client certificates it accepts


def issue_node_credentials(layout: StateLayout, node_name: str, address: str) -> NodeCredentials:
    """A kubeconfig for a wasm node agent, authenticating as ``system:node:<name>``, and
    the serving certificate of its kubelet API on ``address`` (its InternalIP)."""
    from wasmop.cluster import kubeconfig

    settings = load_settings(layout)
    pki = PKI(layout.pki)
    try:
        cert, key = pki.ensure_identity(node_identity(node_name))
        serving_cert, serving_key = pki.ensure_identity(node_serving_identity(node_name, address))
    except PKIError as exc:
        raise ClusterError(f"state dir {layout.root} is corrupt: {exc}; run with --fresh") from exc
    config = kubeconfig.write(
        layout.kubeconfig_for(f"node-{node_name}"),
        settings.api_url,
        pki.ca_cert,
        cert,
        key,
        f"system:node:{node_name}",
    )
    return NodeCredentials(config, serving_cert, serving_key, pki.ca_cert)
