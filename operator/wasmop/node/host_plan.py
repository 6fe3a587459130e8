"""What the host-process runtime reads from a Pod spec: pure functions, unit-tested.

The system node runs the project's own images, and only those, as processes of the
installed ``wasmop`` package: ``wasmop/operator:<version>`` with its entrypoint
(``wasmop``) and the container's args becomes ``python -m wasmop <args>``. Anything else
is refused with a reason in the Pod's status, never run:

* an image outside the allow-list, or of another version than the installed package
  (it would silently run different code): ``ErrImageNeverPull``;
* a command other than the image's entrypoint, root, privileged containers, secrets
  in the environment, volume types it cannot provide: ``CreateContainerConfigError``.

What it honours: args, literal env, ``fieldRef`` and ConfigMap values (``env`` and
``envFrom``), ``runAsUser``/``runAsGroup`` (default: the image's user 65532),
``runAsNonRoot``, ``allowPrivilegeEscalation: false`` (no_new_privs), CPU and memory
limits and CPU requests (cgroups), httpGet probes, and projected service-account,
ConfigMap, downward-API and emptyDir volumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wasmop import __version__
from wasmop.node.cgroups import CgroupLimits
from wasmop.node.podspec import PodSpecError, Probe, single_container
from wasmop.operator.quantity import cpu_millis, memory_bytes

# Images this runtime runs, by repository (the tag must be the installed version).
DEFAULT_IMAGES = ("wasmop/operator",)
ENTRYPOINT = ("wasmop",)
DEFAULT_ARGS = ("operator", "run")  # the image's CMD
IMAGE_USER = 65532  # the image's USER (operator/Dockerfile)
CONFIG_ERROR = "CreateContainerConfigError"
IMAGE_ERROR = "ErrImageNeverPull"
FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.podIP",
    "status.hostIP",
)
VOLUME_KINDS = ("projected", "configMap", "downwardAPI", "emptyDir")


@dataclass(frozen=True)
class EnvVar:
    """One variable: a literal, a Pod field, or a ConfigMap key (resolved at start)."""

    name: str
    value: str | None = None
    field_path: str | None = None
    configmap: str | None = None
    key: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class EnvFrom:
    configmap: str
    prefix: str = ""
    optional: bool = False


@dataclass(frozen=True)
class Mount:
    """A volume at ``path``: its kind and its source as the Pod spec has it."""

    path: str
    kind: str
    source: dict[str, Any] = field(default_factory=dict, compare=False)
    read_only: bool = False


@dataclass(frozen=True)
class ProcessPlan:
    """Everything needed to run the Pod's container as a host process."""

    name: str
    image: str
    args: tuple[str, ...]
    env: tuple[EnvVar, ...]
    env_from: tuple[EnvFrom, ...]
    uid: int
    gid: int
    no_new_privileges: bool
    limits: CgroupLimits
    ports: dict[str, int]
    mounts: tuple[Mount, ...]
    readiness: Probe | None = None
    liveness: Probe | None = None
    service_account: str = "default"


def check_image(image: str, allowed: tuple[str, ...] = DEFAULT_IMAGES) -> None:
    """Refuse an image this node may not run (PodSpecError, reason ErrImageNeverPull)."""
    name = image
    for prefix in ("docker.io/", "index.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    repository, _, tag = name.partition(":")
    if "@" in image:
        raise PodSpecError(
            IMAGE_ERROR,
            f"image {image!r}: host-process nodes run wasmop's own images by tag, not digest",
        )
    if repository not in allowed:
        raise PodSpecError(
            IMAGE_ERROR,
            f"image {image!r} is not allowed on host-process nodes, which run only"
            f" {', '.join(f'{a}:{__version__}' for a in allowed)} from the installed package",
        )
    if tag not in ("", __version__):
        raise PodSpecError(
            IMAGE_ERROR,
            f"image {image!r}: this node has wasmop {__version__} installed, not {tag}",
        )


def _security(pod: dict[str, Any], container: dict[str, Any]) -> tuple[int, int, bool]:
    pod_sc = pod["spec"].get("securityContext") or {}
    sc = container.get("securityContext") or {}
    if sc.get("privileged"):
        raise PodSpecError(CONFIG_ERROR, "host-process containers cannot be privileged")
    uid = sc.get("runAsUser", pod_sc.get("runAsUser", IMAGE_USER))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", uid))
    if int(uid) == 0:
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        detail = "container has runAsNonRoot and image will run as root" if non_root else ""
        raise PodSpecError(
            CONFIG_ERROR, detail or "host-process containers run as a non-root user only"
        )
    no_new_privileges = sc.get("allowPrivilegeEscalation") is not True
    return int(uid), int(gid), no_new_privileges


def _env(container: dict[str, Any]) -> tuple[tuple[EnvVar, ...], tuple[EnvFrom, ...]]:
    variables = []
    for item in container.get("env") or []:
        name = item["name"]
        source = item.get("valueFrom")
        if source is None:
            variables.append(EnvVar(name, value=str(item.get("value", ""))))
        elif "fieldRef" in source:
            path = source["fieldRef"].get("fieldPath", "")
            if path not in FIELD_PATHS:
                raise PodSpecError(CONFIG_ERROR, f"env {name}: fieldRef {path!r} is not supported")
            variables.append(EnvVar(name, field_path=path))
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            variables.append(
                EnvVar(
                    name, configmap=ref["name"], key=ref["key"], optional=bool(ref.get("optional"))
                )
            )
        else:
            kind = next(iter(source), "valueFrom")
            raise PodSpecError(
                CONFIG_ERROR, f"env {name}: {kind} is not supported on host-process nodes"
            )
    sources = []
    for item in container.get("envFrom") or []:
        if "configMapRef" not in item:
            raise PodSpecError(CONFIG_ERROR, "envFrom: only configMapRef is supported here")
        ref = item["configMapRef"]
        sources.append(EnvFrom(ref["name"], item.get("prefix", ""), bool(ref.get("optional"))))
    return tuple(variables), tuple(sources)


def _mounts(pod: dict[str, Any], container: dict[str, Any]) -> tuple[Mount, ...]:
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    mounts = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise PodSpecError(CONFIG_ERROR, f"volumeMount {mount['name']!r} names no volume")
        kind = next((k for k in VOLUME_KINDS if k in volume), None)
        if kind is None:
            other = next((k for k in volume if k != "name"), "?")
            raise PodSpecError(
                CONFIG_ERROR, f"volume {mount['name']!r}: {other} volumes are not supported here"
            )
        path = mount["mountPath"]
        if not path.startswith("/") or ".." in path.split("/"):
            raise PodSpecError(CONFIG_ERROR, f"mountPath {path!r} must be absolute, without ..")
        mounts.append(Mount(path, kind, volume[kind] or {}, bool(mount.get("readOnly"))))
    return tuple(mounts)


def _limits(container: dict[str, Any]) -> CgroupLimits:
    resources = container.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    try:
        return CgroupLimits(
            cpu_limit_millis=cpu_millis(limits["cpu"]) if "cpu" in limits else None,
            cpu_request_millis=cpu_millis(requests["cpu"]) if "cpu" in requests else None,
            memory_limit_bytes=memory_bytes(limits["memory"]) if "memory" in limits else None,
        )
    except (ValueError, ArithmeticError) as exc:
        raise PodSpecError(CONFIG_ERROR, f"resources: {exc}") from exc


def plan_process(pod: dict[str, Any], allowed: tuple[str, ...] = DEFAULT_IMAGES) -> ProcessPlan:
    """Read the Pod's single container as a host process, or say why it cannot run."""
    container = single_container(pod, "host-process nodes")
    check_image(container.get("image", ""), allowed)
    command = tuple(container.get("command") or ENTRYPOINT)
    if command != ENTRYPOINT:
        raise PodSpecError(
            CONFIG_ERROR, f"command {list(command)}: host-process nodes run the image's entrypoint"
        )
    uid, gid, no_new_privileges = _security(pod, container)
    env, env_from = _env(container)
    ports = {p.get("name", ""): int(p["containerPort"]) for p in container.get("ports") or []}
    default_port = next(iter(ports.values()), 8080)
    return ProcessPlan(
        name=container["name"],
        image=container.get("image", ""),
        args=tuple(str(a) for a in container.get("args") or DEFAULT_ARGS),
        env=env,
        env_from=env_from,
        uid=uid,
        gid=gid,
        no_new_privileges=no_new_privileges,
        limits=_limits(container),
        ports=ports,
        mounts=_mounts(pod, container),
        readiness=Probe.parse(container.get("readinessProbe"), ports, default_port),
        liveness=Probe.parse(container.get("livenessProbe"), ports, default_port),
        service_account=pod["spec"].get("serviceAccountName") or "default",
    )


def field_value(pod: dict[str, Any], path: str, pod_ip: str, host_ip: str) -> str:
    """A ``fieldRef`` value of the Pod."""
    meta, spec = pod["metadata"], pod["spec"]
    return {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.hostIP": host_ip,
    }[path]
