"""The system node's runtime: the project's own images as host processes under cgroups.

A Pod of ``wasmop/operator:<version>`` (``host_plan`` says what is accepted) runs as
``python -m wasmop <args>`` from the installed package, like a Windows HostProcess
container or a ``hostNetwork`` Pod:

* in the host's network namespace; wildcard listen addresses are bound to loopback
  (``WASMOP_BIND_LOOPBACK``), so the gateway is on 127.0.0.1:8000 for the harness and
  nothing is exposed beyond this machine; its Pod IP is the node's InternalIP;
* as the container's user (default the image's 65532), without new privileges, its
  parent-death signal set (it dies with the agent, which restarts it on adoption);
* in its own cgroups (``cgroups``): CPU quota and shares, memory limit; a process the
  kernel kills at the limit is reported ``OOMKilled``, exit 137;
* with its volumes under ``<pod dir>/sandbox`` and ``CONTAINER_SANDBOX_MOUNT_POINT``
  naming it (the HostProcess convention, which ``wasmop.kube`` honours): the
  service-account token (requested for the Pod, renewed at 80 % of its life), the
  cluster CA and namespace, ConfigMaps, downward-API files, emptyDirs;
* with ``KUBERNETES_SERVICE_HOST``/``PORT`` naming the API server this node talks to;
* stdout and stderr lines into the container's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wasmop.cluster.layout import CLUSTER_MARKER_ENV
from wasmop.kube import ApiError, Kube
from wasmop.kube.client import SANDBOX_ENV, api_path
from wasmop.node import graph_reads
from wasmop.node.cgroups import CgroupError, ContainerCgroup
from wasmop.node.container_logs import ContainerLog
from wasmop.node.container_runtime import ContainerExit, ContainerFigures, Notify
from wasmop.node.host_plan import (
    CONFIG_ERROR,
    DEFAULT_IMAGES,
    EnvVar,
    Mount,
    ProcessPlan,
    field_value,
    plan_process,
)
from wasmop.node.podspec import PodSpecError
from wasmop.wellknown import BIND_LOOPBACK_ENV

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# How long a start waits for a port a stopping container of this node still holds.
PORT_WAIT_S = 15.0
TOKEN_SECONDS = 3607  # the service-account admission's default projection
READ_CHUNK = 65536
STOP_DRAIN_S = 5.0
# Joins the container's cgroups, then becomes the container's process through setpriv.
JOIN_AND_EXEC = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"'


@dataclass
class ProjectedToken:
    """A service-account token file the runtime keeps fresh."""

    path: Path
    audiences: list[str]
    seconds: int


@dataclass
class ProcessContainer:
    """A running host-process container."""

    process: asyncio.subprocess.Process
    cgroup: ContainerCgroup
    plan: ProcessPlan
    log: ContainerLog | None
    container_id: str
    description: str
    probe_host: str = LOOPBACK
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _exit: asyncio.Future[ContainerExit] | None = None
    _stderr_tail: list[bytes] = field(default_factory=list)

    def watch(self, refresh: Any) -> None:
        """Start reading its output, renewing its tokens, and waiting for its exit."""
        assert self.process.stdout is not None and self.process.stderr is not None
        readers = [
            asyncio.create_task(self._read(self.process.stdout, "stdout")),
            asyncio.create_task(self._read(self.process.stderr, "stderr")),
        ]
        self._tasks = [*readers]
        if refresh is not None:
            self._tasks.append(asyncio.create_task(refresh))
        self._exit = asyncio.ensure_future(self._wait(readers))

    async def _read(self, stream: asyncio.StreamReader, name: str) -> None:
        pending = b""
        while chunk := await stream.read(READ_CHUNK):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._line(name, line)
            if len(pending) > READ_CHUNK:
                self._line(name, pending)
                pending = b""
        if pending:
            self._line(name, pending)

    def _line(self, stream: str, line: bytes) -> None:
        if self.log is not None:
            self.log.write(stream, line)
        if stream == "stderr" and line.strip():
            self._stderr_tail = [*self._stderr_tail[-2:], line]

    async def _wait(self, readers: list[asyncio.Task[None]]) -> ContainerExit:
        code = await self.process.wait()
        # Whatever it started goes with it; then its output pipes close.
        self.cgroup.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*readers), STOP_DRAIN_S)
        for task in self._tasks:
            task.cancel()
        exit_code = 128 - code if code < 0 else code
        if code == -signal.SIGKILL and self.cgroup.oom_kills() > 0:
            limit = self.plan.limits.memory_limit_bytes
            return ContainerExit(
                "OOMKilled", 137, f"the container exceeded its memory limit ({limit} bytes)"
            )
        if code == 0:
            return ContainerExit("Completed", 0)
        tail = b"\n".join(self._stderr_tail).decode("utf-8", errors="replace")
        return ContainerExit("Error", exit_code, tail[-1024:])

    # --- RunningContainer ---------------------------------------------------------

    def figures(self) -> ContainerFigures:
        try:
            working_set, rss = self.cgroup.memory()
            return ContainerFigures(
                cpu_seconds=self.cgroup.cpu_seconds(),
                memory_working_set_bytes=working_set,
                memory_rss_bytes=rss,
                memory_limit_bytes=self.plan.limits.memory_limit_bytes,
                throttling=self.cgroup.throttling(),
            )
        except OSError:  # the cgroup went (the container stopped meanwhile)
            return ContainerFigures(0.0, 0)

    def crash(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)

    async def exited(self) -> ContainerExit:
        assert self._exit is not None
        return await asyncio.shield(self._exit)

    async def stop(self, grace: float) -> None:
        """SIGTERM, up to ``grace`` seconds, then SIGKILL to all of it; cgroups removed."""
        assert self._exit is not None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exit), grace)
        self.cgroup.kill()
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(asyncio.shield(self._exit), STOP_DRAIN_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.to_thread(self.cgroup.remove)


def container_python(directory: Path) -> str:
    """An interpreter of the installed package that any user can execute.

    A virtualenv's interpreter is a link to the Python it was made from, which may live
    where the container's user may not go (pyenv under a 0700 /root): the process would
    start (the runtime execs it) but could not start its own children (the operator's
    compile pool). Here the interpreter is copied next to a ``pyvenv.cfg`` whose
    site-packages is the installed package's, so ``sys.executable`` works for the user
    too. Outside a virtualenv the interpreter is used as it is.
    """
    if sys.prefix == sys.base_prefix:
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    real = Path(os.path.realpath(sys.executable))
    binary = directory / "bin" / version
    site = directory / "lib" / version / "site-packages"
    config = (
        f"home = {real.parent}\ninclude-system-site-packages = false\n"
        f"version = {sys.version.split()[0]}\n"
    )
    fresh = (
        binary.exists()
        and binary.stat().st_size == real.stat().st_size
        and (directory / "pyvenv.cfg").read_text() == config
    )
    if not fresh:
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(real, binary)
        os.chmod(binary, 0o755)
        (directory / "pyvenv.cfg").write_text(config)
        site.parent.mkdir(parents=True, exist_ok=True)
        site.unlink(missing_ok=True)
        site.symlink_to(sysconfig.get_paths()["purelib"], target_is_directory=True)
    for path in (directory, *directory.rglob("*")):
        if not path.is_symlink():
            os.chmod(path, 0o755)
    return str(binary)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


class HostProcessRuntime:
    """Runs each Pod of the project's own images as a process on this machine."""

    def __init__(
        self,
        node: str,
        node_address: str,
        kube: Kube,
        pod_root: Path,
        allowed_images: tuple[str, ...] = DEFAULT_IMAGES,
        python: str | None = None,
    ) -> None:
        self.node = node
        self.node_address = node_address
        self.kube = kube
        self.pod_root = pod_root
        self.allowed_images = allowed_images
        self.python = python or container_python(pod_root.parent / "python")
        server = urlsplit(kube.config.server)
        self.api_host = server.hostname or LOOPBACK
        self.api_port = server.port or 443
        self.setpriv = shutil.which("setpriv")

    def plan(self, pod: dict[str, Any]) -> ProcessPlan:
        return plan_process(pod, self.allowed_images)

    def pod_ip(self, uid: str, preferred: str | None) -> str:
        return self.node_address  # the host's network, as a hostNetwork Pod

    def release(self, uid: str) -> None:
        pass

    async def start(
        self,
        pod: dict[str, Any],
        pod_ip: str,
        plan: Any,
        log: ContainerLog | None,
        notify: Notify | None = None,
    ) -> ProcessContainer:
        assert isinstance(plan, ProcessPlan)
        if self.setpriv is None:
            raise PodSpecError("RuntimeUnavailable", "setpriv (util-linux) is not installed")
        meta = pod["metadata"]
        await self._wait_for_ports(plan)
        sandbox = self.pod_root / f"{meta['namespace']}_{meta['name']}_{meta['uid']}" / "sandbox"
        tokens = await self._volumes(pod, plan, sandbox)
        env = await self._environment(pod, plan, pod_ip, sandbox)
        cgroup = ContainerCgroup(self.node, f"{meta['uid']}-{plan.name}")
        try:
            cgroup.create(plan.limits)
        except CgroupError as exc:
            raise PodSpecError("RunContainerError", str(exc)) from exc
        privileges = ["--no-new-privs"] if plan.no_new_privileges else []
        argv = [
            "/bin/sh", "-c", JOIN_AND_EXEC, "wasmop-host-process",
            *map(str, cgroup.procs_files), "--",
            self.setpriv, f"--reuid={plan.uid}", f"--regid={plan.gid}", "--clear-groups",
            *privileges, "--pdeathsig=KILL", "--",
            self.python, "-m", "wasmop", *plan.args,
        ]  # fmt: skip
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            await asyncio.to_thread(cgroup.remove)
            raise PodSpecError("RunContainerError", f"cannot start the process: {exc}") from exc
        args = " ".join(plan.args)
        container = ProcessContainer(
            process,
            cgroup,
            plan,
            log,
            container_id=f"hostprocess://{process.pid}-{meta['uid'][:8]}",
            description=f"Started host process {plan.image} as pid {process.pid},"
            f" uid {plan.uid}: wasmop {args}",
        )
        refresh = self._refresh_tokens(pod, plan, tokens) if tokens else None
        container.watch(refresh)
        return container

    async def _wait_for_ports(self, plan: ProcessPlan) -> None:
        """A container being replaced may hold its ports for a moment (they are the
        host's): wait for them, then say which one is taken."""
        deadline = time.monotonic() + PORT_WAIT_S
        while True:
            busy = [p for p in plan.ports.values() if not _port_free(p)]
            if not busy:
                return
            if time.monotonic() > deadline:
                raise PodSpecError(
                    "PortInUse",
                    f"port {busy[0]} on {LOOPBACK} is in use; host-process containers share"
                    " the host's network",
                )
            await asyncio.sleep(0.1)

    # --- environment ----------------------------------------------------------------

    async def _configmap(self, namespace: str, name: str, optional: bool) -> dict[str, str]:
        path = api_path("v1", "configmaps", namespace, name)
        try:
            body = await graph_reads.for_pod(lambda: self.kube.get(path))
        except ApiError as exc:
            if exc.not_found and optional:
                return {}
            reason = "not found" if exc.not_found else str(exc)
            raise PodSpecError(CONFIG_ERROR, f"configmap {name!r}: {reason}") from exc
        return dict(body.get("data") or {})

    async def _environment(
        self, pod: dict[str, Any], plan: ProcessPlan, pod_ip: str, sandbox: Path
    ) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env = {
            "PATH": PATH,
            "HOME": "/",
            "HOSTNAME": pod["metadata"]["name"],
            "KUBERNETES_SERVICE_HOST": self.api_host,
            "KUBERNETES_SERVICE_PORT": str(self.api_port),
            SANDBOX_ENV: str(sandbox),
            BIND_LOOPBACK_ENV: "1",
        }
        marker = os.environ.get(CLUSTER_MARKER_ENV)
        if marker:  # so 'wasmop cluster down' finds what this cluster started
            env[CLUSTER_MARKER_ENV] = marker
        for source in plan.env_from:
            data = await self._configmap(namespace, source.configmap, source.optional)
            env.update({source.prefix + k: v for k, v in data.items()})
        for var in plan.env:
            value = await self._env_value(pod, var, pod_ip, namespace)
            if value is not None:
                env[var.name] = value
        return env

    async def _env_value(
        self, pod: dict[str, Any], var: EnvVar, pod_ip: str, namespace: str
    ) -> str | None:
        if var.field_path is not None:
            return field_value(pod, var.field_path, pod_ip, self.node_address)
        if var.configmap is not None:
            data = await self._configmap(namespace, var.configmap, var.optional)
            if var.key not in data:
                if var.optional:
                    return None
                raise PodSpecError(
                    CONFIG_ERROR,
                    f"couldn't find key {var.key} in ConfigMap {namespace}/{var.configmap}",
                )
            return data[var.key]
        return var.value

    # --- volumes --------------------------------------------------------------------

    async def _volumes(
        self, pod: dict[str, Any], plan: ProcessPlan, sandbox: Path
    ) -> list[ProjectedToken]:
        """Write each volume's files under the sandbox; the tokens to keep fresh."""
        directories: list[str] = []
        files: list[tuple[str, bytes, ProjectedToken | None]] = []
        for mount in plan.mounts:
            base = mount.path.lstrip("/")
            directories.append(base)
            for relative, content, token in await self._volume_files(pod, plan, mount):
                files.append((f"{base}/{relative}", content, token))
        return _lay_out(sandbox, directories, files, plan)

    async def _volume_files(
        self, pod: dict[str, Any], plan: ProcessPlan, mount: Mount
    ) -> list[tuple[str, bytes, ProjectedToken | None]]:
        """(path in the volume, content, the token it is, if one) of each file."""
        namespace = pod["metadata"]["namespace"]
        files: list[tuple[str, bytes, ProjectedToken | None]] = []
        if mount.kind == "emptyDir":
            return files
        if mount.kind == "projected":
            sources = mount.source.get("sources") or []
        else:
            sources = [{mount.kind: mount.source}]
        for source in sources:
            if "serviceAccountToken" in source:
                spec = source["serviceAccountToken"]
                audience = spec.get("audience")
                seconds = int(spec.get("expirationSeconds") or TOKEN_SECONDS)
                token = ProjectedToken(Path(), [audience] if audience else [], seconds)
                value = await self._token(pod, plan, token)
                files.append((spec.get("path", "token"), value.encode(), token))
            elif "configMap" in source:
                spec = source["configMap"]
                data = await self._configmap(namespace, spec["name"], bool(spec.get("optional")))
                items = spec.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    if item["key"] in data:
                        files.append((item["path"], data[item["key"]].encode(), None))
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    path = (item.get("fieldRef") or {}).get("fieldPath", "")
                    if path not in ("metadata.name", "metadata.namespace", "metadata.uid"):
                        raise PodSpecError(
                            CONFIG_ERROR, f"downwardAPI {path!r} is not supported here"
                        )
                    value = field_value(pod, path, self.node_address, self.node_address)
                    files.append((item["path"], value.encode(), None))
            else:
                kind = next(iter(source), "?")
                raise PodSpecError(CONFIG_ERROR, f"projected {kind} is not supported here")
        for relative, _, _ in files:
            if relative.startswith("/") or ".." in relative.split("/"):
                raise PodSpecError(
                    CONFIG_ERROR, f"volume file path {relative!r} escapes its volume"
                )
        return files

    async def _token(self, pod: dict[str, Any], plan: ProcessPlan, token: ProjectedToken) -> str:
        """A token for the Pod's ServiceAccount, bound to the Pod (as the kubelet asks)."""
        meta = pod["metadata"]
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": token.audiences,
                "expirationSeconds": token.seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        path = api_path("v1", "serviceaccounts", meta["namespace"], plan.service_account, "token")
        try:
            answer = await graph_reads.for_pod(lambda: self.kube.create(path, request))
        except ApiError as exc:
            raise PodSpecError(
                CONFIG_ERROR, f"cannot get a token for serviceaccount {plan.service_account}: {exc}"
            ) from exc
        return str(answer["status"]["token"])

    async def _refresh_tokens(
        self, pod: dict[str, Any], plan: ProcessPlan, tokens: list[ProjectedToken]
    ) -> None:
        """Renew each token at 80 % of its life, as the kubelet does."""
        while True:
            await asyncio.sleep(0.8 * min(t.seconds for t in tokens))
            for token in tokens:
                try:
                    value = await self._token(pod, plan, token)
                except PodSpecError as exc:
                    log.warning("token renewal for %s failed: %s", pod["metadata"]["name"], exc)
                    continue
                _write(token.path, value.encode(), plan, secret=True)


def _write(path: Path, content: bytes, plan: ProcessPlan, secret: bool) -> None:
    """Replace a volume file at once (a reader never sees half a token), owned by the
    container's user; a token readable by it alone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(content)
    os.chmod(temporary, 0o600 if secret else 0o644)
    os.chown(temporary, plan.uid, plan.gid)
    temporary.replace(path)


def _lay_out(
    sandbox: Path,
    directories: list[str],
    files: list[tuple[str, bytes, ProjectedToken | None]],
    plan: ProcessPlan,
) -> list[ProjectedToken]:
    """A fresh sandbox with the volumes' directories and files; the tokens in it."""
    if sandbox.exists():
        shutil.rmtree(sandbox)
    sandbox.mkdir(parents=True, mode=0o755)
    for directory in directories:
        (sandbox / directory).mkdir(parents=True, exist_ok=True)
    tokens = []
    for relative, content, token in files:
        _write(sandbox / relative, content, plan, secret=token is not None)
        if token is not None:
            token.path = sandbox / relative
            tokens.append(token)
    for path in [sandbox, *sandbox.rglob("*")]:
        os.chown(path, plan.uid, plan.gid, follow_symlinks=False)
    return tokens
