"""What a wasm node reads from a Pod spec and writes to a Pod status: pure functions.

Kept apart from the agent's I/O so the mapping between Kubernetes' Pod API and the
wasm runtime can be unit-tested and read in one place.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from wasmop.runtime.podenv import MODULE_IMAGE_ENV, MODULE_PATH_ENV, REGISTRY_AUTH_ENV

DEFAULT_MODULE_KEYS = ("module.wasm", "module.wasm.gz")
DEFAULT_PORT = 8080


class PodSpecError(Exception):
    """The Pod cannot run on a wasm node as written; ``reason`` is CamelCase."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Probe:
    """An httpGet probe, with Kubernetes' defaults."""

    path: str = "/"
    port: int = DEFAULT_PORT
    initial_delay_s: float = 0.0
    period_s: float = 10.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def parse(
        cls, raw: dict[str, Any] | None, ports: dict[str, int], default_port: int
    ) -> Probe | None:
        if not raw:
            return None
        http = raw.get("httpGet")
        if http is None:
            raise PodSpecError(
                "UnsupportedProbe",
                "wasm nodes run httpGet probes only (no exec, tcpSocket or grpc)",
            )
        port = http.get("port", default_port)
        if isinstance(port, str) and not port.isdigit():
            if port not in ports:
                raise PodSpecError(
                    "InvalidProbe", f"probe port {port!r} is not a named container port"
                )
            port = ports[port]
        return cls(
            path=http.get("path", "/"),
            port=int(port),
            initial_delay_s=float(raw.get("initialDelaySeconds", 0)),
            period_s=float(raw.get("periodSeconds", 10)),
            timeout_s=float(raw.get("timeoutSeconds", 1)),
            success_threshold=int(raw.get("successThreshold", 1)),
            failure_threshold=int(raw.get("failureThreshold", 3)),
        )


@dataclass(frozen=True)
class ModuleSource:
    """Which ConfigMap key holds the Pod's module."""

    configmap: str
    key: str | None  # None: the first of DEFAULT_MODULE_KEYS that exists


@dataclass(frozen=True)
class ImageSource:
    """The module is an OCI image the node pulls; ``pull_secrets`` are the Secrets whose
    volumes hold the files ``WASMOP_REGISTRY_AUTH`` names (the Node authorizer lets this
    node read them because this Pod mounts them)."""

    image: str
    pull_secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class ContainerPlan:
    """Everything needed to run the Pod's one container as a wasm function."""

    name: str
    image: str
    port: int
    module: ModuleSource | ImageSource
    env: dict[str, str] = field(default_factory=dict)
    readiness: Probe | None = None
    liveness: Probe | None = None
    pre_stop_sleep_s: float = 0.0  # lifecycle.preStop.sleep: keep serving this long


def _pre_stop_sleep(container: dict[str, Any]) -> float:
    """Seconds of a ``lifecycle.preStop.sleep`` hook (0 without one). A wasm node runs no
    commands, so an exec or httpGet hook cannot be honoured and is refused."""
    hook = (container.get("lifecycle") or {}).get("preStop")
    if not hook:
        return 0.0
    if set(hook) != {"sleep"}:
        raise PodSpecError(
            "UnsupportedLifecycleHook", "wasm nodes run preStop sleep hooks only (no exec, httpGet)"
        )
    seconds = hook["sleep"].get("seconds", 0)
    if not isinstance(seconds, int) or seconds < 0:
        raise PodSpecError("InvalidLifecycleHook", f"preStop sleep of {seconds!r} seconds")
    return float(seconds)


def _env(container: dict[str, Any]) -> dict[str, str]:
    # valueFrom (secrets, fieldRefs) is not supported: wasm functions get literal values.
    return {e["name"]: str(e.get("value", "")) for e in container.get("env", []) if "name" in e}


def _mounted(
    mounts: list[tuple[str, str]], volumes: dict[str, str], path: str
) -> tuple[str, str] | None:
    """(the volume's source name, the path inside it) of a file in a mounted volume."""
    for mount_path, volume in mounts:
        if path.startswith(mount_path + "/") and volume in volumes:
            return volumes[volume], path[len(mount_path) + 1 :]
    return None


def _image_source(
    pod: dict[str, Any], container: dict[str, Any], env: dict[str, str]
) -> ImageSource:
    secrets = {
        v["name"]: v["secret"]["secretName"]
        for v in pod["spec"].get("volumes", [])
        if v.get("secret", {}).get("secretName")
    }
    mounts = [(m["mountPath"].rstrip("/"), m["name"]) for m in container.get("volumeMounts", [])]
    names = []
    for path in (p for p in env.get(REGISTRY_AUTH_ENV, "").split(",") if p):
        found = _mounted(mounts, secrets, path)
        if found is None:
            raise PodSpecError(
                "RegistryAuthNotMounted",
                f"{REGISTRY_AUTH_ENV} names {path}, which is not inside a mounted Secret volume",
            )
        names.append(found[0])
    return ImageSource(env[MODULE_IMAGE_ENV], tuple(dict.fromkeys(names)))


def _module_source(
    pod: dict[str, Any], container: dict[str, Any], env: dict[str, str]
) -> ModuleSource | ImageSource:
    if env.get(MODULE_IMAGE_ENV):
        return _image_source(pod, container, env)
    volumes = {
        v["name"]: v["configMap"]["name"]
        for v in pod["spec"].get("volumes", [])
        if v.get("configMap", {}).get("name")
    }
    mounts = [(m["mountPath"].rstrip("/"), m["name"]) for m in container.get("volumeMounts", [])]
    path = env.get(MODULE_PATH_ENV)
    if path:
        found = _mounted(mounts, volumes, path)
        if found is not None:
            return ModuleSource(*found)
        raise PodSpecError(
            "ModuleNotMounted", f"{MODULE_PATH_ENV}={path} is not inside a mounted ConfigMap volume"
        )
    for _, volume in mounts:
        if volume in volumes:
            return ModuleSource(volumes[volume], None)
    if volumes:
        return ModuleSource(next(iter(volumes.values())), None)
    raise PodSpecError(
        "ModuleNotMounted",
        f"the Pod has no ConfigMap volume holding a WebAssembly module (nor {MODULE_IMAGE_ENV})",
    )


def single_container(pod: dict[str, Any], nodes: str) -> dict[str, Any]:
    """The Pod's one container; PodSpecError if it has several or init containers, which
    ``nodes`` ("wasm nodes", "host-process nodes") do not run."""
    containers = pod["spec"].get("containers") or []
    if len(containers) != 1:
        raise PodSpecError(
            "UnsupportedPod", f"{nodes} run Pods with exactly one container, got {len(containers)}"
        )
    if pod["spec"].get("initContainers"):
        raise PodSpecError("UnsupportedPod", f"{nodes} do not run init containers")
    return dict(containers[0])


def plan_container(pod: dict[str, Any]) -> ContainerPlan:
    """Read the Pod's single container as a wasm function, or say why it cannot run."""
    container = single_container(pod, "wasm nodes")
    ports = {p.get("name", ""): int(p["containerPort"]) for p in container.get("ports", [])}
    port = next(iter(ports.values()), DEFAULT_PORT)
    env = _env(container)
    return ContainerPlan(
        name=container["name"],
        image=container.get("image", ""),
        port=port,
        module=_module_source(pod, container, env),
        env=env,
        readiness=Probe.parse(container.get("readinessProbe"), ports, port),
        liveness=Probe.parse(container.get("livenessProbe"), ports, port),
        pre_stop_sleep_s=_pre_stop_sleep(container),
    )


# --- status -----------------------------------------------------------------------


@dataclass
class ContainerState:
    """What the agent knows about the Pod's one container."""

    name: str
    image: str
    state: str = "waiting"  # waiting, running, terminated
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: str | None = None
    ready: bool = False
    restart_count: int = 0
    exit_code: int | None = None
    last_terminated: dict[str, Any] | None = None
    container_id: str = ""

    def to_status(self) -> dict[str, Any]:
        if self.state == "running":
            state: dict[str, Any] = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {
                "terminated": {
                    "exitCode": self.exit_code if self.exit_code is not None else 1,
                    "reason": self.reason,
                    "message": self.message,
                    "startedAt": self.started_at,
                    "finishedAt": now_rfc3339(),
                }
            }
        else:
            state = {
                "waiting": {
                    "reason": self.reason,
                    **({"message": self.message} if self.message else {}),
                }
            }
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "started": self.state == "running",
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


def _condition(
    kind: str, ok: bool, previous: dict[str, dict[str, Any]], reason: str = ""
) -> dict[str, Any]:
    status = "True" if ok else "False"
    old = previous.get(kind)
    since = old["lastTransitionTime"] if old and old.get("status") == status else now_rfc3339()
    condition = {"type": kind, "status": status, "lastTransitionTime": since, "lastProbeTime": None}
    if reason and not ok:
        condition["reason"] = reason
    return condition


def pod_status(
    pod: dict[str, Any],
    container: ContainerState,
    *,
    host_ip: str,
    pod_ip: str | None,
    start_time: str,
) -> dict[str, Any]:
    """The status a kubelet would report for this Pod (full lists: merge-patch safe)."""
    previous = {c["type"]: c for c in pod.get("status", {}).get("conditions", [])}
    started = container.state == "running"
    phase = "Running" if started else "Pending"
    if container.state == "terminated" and pod["spec"].get("restartPolicy") == "Never":
        phase = "Succeeded" if container.exit_code == 0 else "Failed"
    not_ready = "ContainersNotReady"
    conditions = [
        _condition("PodReadyToStartContainers", pod_ip is not None, previous),
        _condition("Initialized", True, previous),
        _condition("Ready", container.ready, previous, not_ready),
        _condition("ContainersReady", container.ready, previous, not_ready),
        _condition("PodScheduled", True, previous),
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "containerStatuses": [container.to_status()],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status
