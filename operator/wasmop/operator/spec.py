"""Typed views of WasmFunction and WasmRuntime objects.

The API server has already applied the CRD defaults by the time kopf hands the operator a
body, but objects written before a default was added, unit tests and hand-made dicts may lack
fields, so every parser here falls back to the same defaults as the schema. Parsing never
judges a spec against a runtime: that is :mod:`wasmop.operator.validation`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from wasmop.operator.quantity import QuantityError, cpu_millis, memory_bytes, parse_quantity
from wasmop.wellknown import RUNTIME_LABEL

__all__ = [
    "DEFAULT_RUNTIME",
    "Capabilities",
    "ConfigMapModuleRef",
    "EngineSpec",
    "EnvCapability",
    "EnvVar",
    "FunctionSpec",
    "HealthCheck",
    "MetricSpec",
    "ModuleSource",
    "Placement",
    "PredictiveSpec",
    "RequestLimits",
    "ResolvedFunction",
    "ResourceList",
    "Resources",
    "Rollout",
    "RuntimeCapabilities",
    "RuntimeDefaults",
    "RuntimeFeatures",
    "RuntimeMaximums",
    "RuntimeSpec",
    "ScalingBehavior",
    "ScalingSpec",
    "SpecError",
    "WasmFunction",
    "WasmRuntime",
    "resolve",
]

DEFAULT_RUNTIME = "default"
DEFAULT_MODULE_KEY = "module.wasm"
DEFAULT_VERSION = "v1"

Quantity = str | int
ScalingEngine = Literal["operator", "hpa"]
Reaction = Literal["Standard", "Fast"]
PredictorModel = Literal["Holt", "SeasonalNaive"]
MetricSourceType = Literal["Resource", "Pods"]
TargetType = Literal["Utilization", "AverageValue"]


class SpecError(ValueError):
    """A spec cannot be parsed at all (wrong types); the operator marks the object Invalid."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.message = message


def _map(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, f"expected an object, got {type(value).__name__}")
    return value


def _int(value: Any, path: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, f"expected an integer, got {value!r}")
    return value


def _opt_int(value: Any, path: str) -> int | None:
    return None if value is None else _int(value, path, 0)


def _str(value: Any, path: str, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise SpecError(path, f"expected a string, got {value!r}")
    return value


def _opt_str(value: Any, path: str) -> str | None:
    return None if value is None else _str(value, path, "")


def _bool(value: Any, path: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(path, f"expected true or false, got {value!r}")
    return value


def _quantity(value: Any, path: str) -> Quantity | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SpecError(path, f"expected a quantity such as 500Mi or 250m, got {value!r}")
    try:  # checked here, so nothing later trips on it
        amount = parse_quantity(value)
    except QuantityError as exc:
        raise SpecError(path, str(exc)) from exc
    if amount < 0:  # no resource, limit or target is negative (a Pod could not have it)
        raise SpecError(path, f"must not be negative, got {value!r}")
    return value


def _int_or_percent(value: Any, path: str, default: str) -> int | str:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SpecError(path, f"expected an integer or a percentage, got {value!r}")
    if isinstance(value, int) and value < 0:
        raise SpecError(path, f"must not be negative, got {value!r}")
    return value


def _string_map(value: Any, path: str) -> dict[str, str]:
    raw = _map(value, path)
    out: dict[str, str] = {}
    for key, item in raw.items():
        out[str(key)] = _str(item, f"{path}.{key}", "")
    return out


# --------------------------------------------------------------------------- shared pieces


@dataclass(frozen=True)
class ResourceList:
    """CPU and memory quantities as written (``None`` when not set)."""

    cpu: Quantity | None = None
    memory: Quantity | None = None

    @classmethod
    def parse(cls, raw: Any, path: str) -> ResourceList:
        body = _map(raw, path)
        return cls(
            cpu=_quantity(body.get("cpu"), f"{path}.cpu"),
            memory=_quantity(body.get("memory"), f"{path}.memory"),
        )

    @property
    def cpu_millis(self) -> int | None:
        return None if self.cpu is None else cpu_millis(self.cpu)

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else memory_bytes(self.memory)

    def merged_over(self, base: ResourceList) -> ResourceList:
        """This list with unset entries taken from ``base``."""
        return ResourceList(
            cpu=self.cpu if self.cpu is not None else base.cpu,
            memory=self.memory if self.memory is not None else base.memory,
        )

    def to_manifest(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.cpu is not None:
            out["cpu"] = str(self.cpu)
        if self.memory is not None:
            out["memory"] = str(self.memory)
        return out


@dataclass(frozen=True)
class Resources:
    """Pod-level requests and limits, the Kubernetes ``resources`` shape."""

    requests: ResourceList = field(default_factory=ResourceList)
    limits: ResourceList = field(default_factory=ResourceList)

    @classmethod
    def parse(cls, raw: Any, path: str) -> Resources:
        body = _map(raw, path)
        return cls(
            requests=ResourceList.parse(body.get("requests"), f"{path}.requests"),
            limits=ResourceList.parse(body.get("limits"), f"{path}.limits"),
        )

    def merged_over(self, base: Resources) -> Resources:
        return Resources(
            requests=self.requests.merged_over(base.requests),
            limits=self.limits.merged_over(base.limits),
        )


@dataclass(frozen=True)
class RequestLimits:
    """Limits the wasm runtime enforces on every single invocation."""

    timeout_ms: int | None = None
    memory: Quantity | None = None
    output_size: Quantity | None = None
    fuel: int | None = None

    @classmethod
    def parse(cls, raw: Any, path: str) -> RequestLimits:
        body = _map(raw, path)
        return cls(
            timeout_ms=_opt_int(body.get("timeoutMilliseconds"), f"{path}.timeoutMilliseconds"),
            memory=_quantity(body.get("memory"), f"{path}.memory"),
            output_size=_quantity(body.get("outputSize"), f"{path}.outputSize"),
            fuel=_opt_int(body.get("fuel"), f"{path}.fuel"),
        )

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else memory_bytes(self.memory)

    @property
    def output_bytes(self) -> int | None:
        return None if self.output_size is None else memory_bytes(self.output_size)

    def merged_over(self, base: RequestLimits) -> RequestLimits:
        return RequestLimits(
            timeout_ms=self.timeout_ms if self.timeout_ms is not None else base.timeout_ms,
            memory=self.memory if self.memory is not None else base.memory,
            output_size=self.output_size if self.output_size is not None else base.output_size,
            fuel=self.fuel if self.fuel is not None else base.fuel,
        )


# --------------------------------------------------------------------------- WasmFunction


@dataclass(frozen=True)
class ConfigMapModuleRef:
    name: str
    key: str = DEFAULT_MODULE_KEY


@dataclass(frozen=True)
class ModuleSource:
    """Where the module bytes come from; the schema guarantees exactly one source.

    ``image`` is an OCI reference (``REGISTRY/REPOSITORY:TAG`` or ``…@sha256:…``) as
    written; ``pull_secrets`` name dockerconfigjson Secrets in the function's namespace.
    """

    config_map: ConfigMapModuleRef | None = None
    url: str | None = None
    inline: bytes | None = None
    image: str | None = None
    pull_secrets: tuple[str, ...] = ()
    sha256: str | None = None

    @property
    def kind(self) -> Literal["configMapRef", "url", "inline", "image"]:
        if self.config_map is not None:
            return "configMapRef"
        if self.url is not None:
            return "url"
        if self.image is not None:
            return "image"
        return "inline"

    @classmethod
    def parse(cls, raw: Any, path: str) -> ModuleSource:
        body = _map(raw, path)
        ref = body.get("configMapRef")
        config_map = None
        if ref is not None:
            ref_body = _map(ref, f"{path}.configMapRef")
            name = _str(ref_body.get("name"), f"{path}.configMapRef.name", "")
            if not name:
                raise SpecError(f"{path}.configMapRef.name", "a ConfigMap name is required")
            key = _str(ref_body.get("key"), f"{path}.configMapRef.key", DEFAULT_MODULE_KEY)
            config_map = ConfigMapModuleRef(name=name, key=key)
        inline = None
        raw_inline = body.get("inline")
        if raw_inline is not None:
            try:
                inline = base64.b64decode(_str(raw_inline, f"{path}.inline", ""), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise SpecError(f"{path}.inline", "inline must be base64-encoded bytes") from exc
        url = _opt_str(body.get("url"), f"{path}.url")
        image = _opt_str(body.get("image"), f"{path}.image")
        sha = _opt_str(body.get("sha256"), f"{path}.sha256")
        sources = [s for s in (config_map, url, inline, image) if s is not None]
        if len(sources) != 1:
            raise SpecError(path, "exactly one of configMapRef, url, inline or image must be set")
        return cls(
            config_map=config_map,
            url=url,
            inline=inline,
            image=image,
            pull_secrets=_pull_secrets(body.get("imagePullSecrets"), f"{path}.imagePullSecrets"),
            sha256=sha.lower() if sha else None,
        )


def _pull_secrets(raw: Any, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(path, "expected a list of {name: SECRET}")
    names = []
    for i, item in enumerate(raw):
        name = _str(_map(item, f"{path}[{i}]").get("name"), f"{path}[{i}].name", "")
        if not name:
            raise SpecError(f"{path}[{i}].name", "a Secret name is required")
        names.append(name)
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Rollout:
    strategy: Literal["RollingUpdate", "Recreate"] = "RollingUpdate"
    max_surge: int | str = "25%"
    max_unavailable: int | str = "25%"
    min_ready_seconds: int = 0
    progress_deadline_seconds: int = 600

    @classmethod
    def parse(cls, raw: Any, path: str) -> Rollout:
        body = _map(raw, path)
        strategy = _str(body.get("strategy"), f"{path}.strategy", "RollingUpdate")
        if strategy not in ("RollingUpdate", "Recreate"):
            raise SpecError(f"{path}.strategy", f"unknown strategy {strategy!r}")
        min_ready = _int(body.get("minReadySeconds"), f"{path}.minReadySeconds", 0)
        deadline = _int(body.get("progressDeadlineSeconds"), f"{path}.progressDeadlineSeconds", 600)
        if deadline <= min_ready:  # a Deployment refuses it
            raise SpecError(
                f"{path}.progressDeadlineSeconds", "must be greater than minReadySeconds"
            )
        return cls(
            strategy=strategy,  # type: ignore[arg-type]
            max_surge=_int_or_percent(body.get("maxSurge"), f"{path}.maxSurge", "25%"),
            max_unavailable=_int_or_percent(
                body.get("maxUnavailable"), f"{path}.maxUnavailable", "25%"
            ),
            min_ready_seconds=min_ready,
            progress_deadline_seconds=deadline,
        )


@dataclass(frozen=True)
class HealthCheck:
    period_seconds: int = 10
    timeout_seconds: int = 5
    failure_threshold: int = 3
    initial_delay_seconds: int = 0

    @classmethod
    def parse(cls, raw: Any, path: str) -> HealthCheck:
        body = _map(raw, path)
        return cls(
            period_seconds=_int(body.get("periodSeconds"), f"{path}.periodSeconds", 10),
            timeout_seconds=_int(body.get("timeoutSeconds"), f"{path}.timeoutSeconds", 5),
            failure_threshold=_int(body.get("failureThreshold"), f"{path}.failureThreshold", 3),
            initial_delay_seconds=_int(
                body.get("initialDelaySeconds"), f"{path}.initialDelaySeconds", 0
            ),
        )


@dataclass(frozen=True)
class Placement:
    zone: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    toleration_seconds: int | None = None  # None: the cluster's default

    @classmethod
    def parse(cls, raw: Any, path: str) -> Placement:
        body = _map(raw, path)
        return cls(
            zone=_opt_str(body.get("zone"), f"{path}.zone"),
            node_selector=_string_map(body.get("nodeSelector"), f"{path}.nodeSelector"),
            toleration_seconds=_opt_int(body.get("tolerationSeconds"), f"{path}.tolerationSeconds"),
        )


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str = ""


@dataclass(frozen=True)
class Capabilities:
    env: tuple[EnvVar, ...] = ()

    @classmethod
    def parse(cls, raw: Any, path: str) -> Capabilities:
        body = _map(raw, path)
        items = body.get("env") or []
        if not isinstance(items, list):
            raise SpecError(f"{path}.env", "expected a list of {name, value}")
        env = []
        for i, item in enumerate(items):
            entry = _map(item, f"{path}.env[{i}]")
            name = _str(entry.get("name"), f"{path}.env[{i}].name", "")
            if not name:
                raise SpecError(f"{path}.env[{i}].name", "an environment variable needs a name")
            env.append(EnvVar(name=name, value=_str(entry.get("value"), f"{path}.env[{i}]", "")))
        return cls(env=tuple(env))


@dataclass(frozen=True)
class MetricSpec:
    """One HPA-v2-shaped metric: a Resource (cpu, memory) or a Pods metric (rps, concurrency).

    ``target_value`` is the raw quantity for AverageValue targets; ``target_utilization`` the
    percentage of the request for Utilization targets.
    """

    source: MetricSourceType
    name: str
    target_type: TargetType
    target_utilization: int | None = None
    target_value: Quantity | None = None

    @classmethod
    def parse(cls, raw: Any, path: str) -> MetricSpec:
        body = _map(raw, path)
        source = _str(body.get("type"), f"{path}.type", "Resource")
        if source == "Resource":
            res = _map(body.get("resource"), f"{path}.resource")
            name = _str(res.get("name"), f"{path}.resource.name", "cpu")
            target = _map(res.get("target"), f"{path}.resource.target")
            tpath = f"{path}.resource.target"
        elif source == "Pods":
            pods = _map(body.get("pods"), f"{path}.pods")
            metric = _map(pods.get("metric"), f"{path}.pods.metric")
            name = _str(metric.get("name"), f"{path}.pods.metric.name", "")
            if not name:
                raise SpecError(f"{path}.pods.metric.name", "a Pods metric needs a name")
            target = _map(pods.get("target"), f"{path}.pods.target")
            tpath = f"{path}.pods.target"
        else:
            raise SpecError(f"{path}.type", f"unknown metric type {source!r}")
        ttype = _str(target.get("type"), f"{tpath}.type", "")
        utilization = _opt_int(target.get("averageUtilization"), f"{tpath}.averageUtilization")
        value = _quantity(target.get("averageValue"), f"{tpath}.averageValue")
        if not ttype:
            ttype = "Utilization" if utilization is not None else "AverageValue"
        if ttype == "Utilization":
            if source != "Resource":
                raise SpecError(f"{tpath}.type", "Utilization targets need a Resource metric")
            if utilization is None:
                raise SpecError(f"{tpath}.averageUtilization", "required for Utilization")
        elif ttype == "AverageValue":
            if value is None:
                raise SpecError(f"{tpath}.averageValue", "required for AverageValue")
        else:
            raise SpecError(f"{tpath}.type", f"unknown target type {ttype!r}")
        return cls(
            source=source,  # type: ignore[arg-type]
            name=name,
            target_type=ttype,  # type: ignore[arg-type]
            target_utilization=utilization if ttype == "Utilization" else None,
            target_value=value if ttype == "AverageValue" else None,
        )

    def to_manifest(self) -> dict[str, Any]:
        """The metric back in autoscaling/v2 shape (for a native HPA)."""
        target: dict[str, Any] = {"type": self.target_type}
        if self.target_type == "Utilization":
            target["averageUtilization"] = self.target_utilization
        else:
            target["averageValue"] = str(self.target_value)
        if self.source == "Resource":
            return {"type": "Resource", "resource": {"name": self.name, "target": target}}
        return {"type": "Pods", "pods": {"metric": {"name": self.name}, "target": target}}


DEFAULT_METRICS = (
    MetricSpec(source="Resource", name="cpu", target_type="Utilization", target_utilization=70),
    MetricSpec(source="Resource", name="memory", target_type="AverageValue", target_value="500Mi"),
)


@dataclass(frozen=True)
class ScalingBehavior:
    scale_up_window_seconds: int = 0
    scale_down_window_seconds: int = 300

    @classmethod
    def parse(cls, raw: Any, path: str) -> ScalingBehavior:
        body = _map(raw, path)
        up = _map(body.get("scaleUp"), f"{path}.scaleUp")
        down = _map(body.get("scaleDown"), f"{path}.scaleDown")
        return cls(
            scale_up_window_seconds=_int(
                up.get("stabilizationWindowSeconds"),
                f"{path}.scaleUp.stabilizationWindowSeconds",
                0,
            ),
            scale_down_window_seconds=_int(
                down.get("stabilizationWindowSeconds"),
                f"{path}.scaleDown.stabilizationWindowSeconds",
                300,
            ),
        )


@dataclass(frozen=True)
class PredictiveSpec:
    """``scaling.predictive``: scale ahead of a forecast of the request rate.

    ``Holt`` (linear trend) suits load that rises or falls steadily; ``SeasonalNaive``
    repeats what happened one ``seasonSeconds`` ago, for periodic load. Either only ever
    adds replicas to what the reactive algorithm asks for (see
    :mod:`wasmop.operator.predictor`)."""

    enabled: bool = False
    horizon_seconds: int = 10
    model: PredictorModel = "Holt"
    season_seconds: int | None = None

    @classmethod
    def parse(cls, raw: Any, path: str) -> PredictiveSpec:
        body = _map(raw, path)
        model = _str(body.get("model"), f"{path}.model", "Holt")
        if model not in ("Holt", "SeasonalNaive"):
            raise SpecError(f"{path}.model", f"model must be Holt or SeasonalNaive, got {model!r}")
        horizon = _int(body.get("horizonSeconds"), f"{path}.horizonSeconds", 10)
        if not 1 <= horizon <= 600:
            raise SpecError(f"{path}.horizonSeconds", "must lie between 1 and 600 seconds")
        season = _opt_int(body.get("seasonSeconds"), f"{path}.seasonSeconds")
        if model == "SeasonalNaive" and season is None:
            raise SpecError(f"{path}.seasonSeconds", "required for the SeasonalNaive model")
        if season is not None and not 2 <= season <= 3600:
            raise SpecError(f"{path}.seasonSeconds", "must lie between 2 and 3600 seconds")
        return cls(
            enabled=_bool(body.get("enabled"), f"{path}.enabled", False),
            horizon_seconds=horizon,
            model=model,  # type: ignore[arg-type]
            season_seconds=season,
        )


@dataclass(frozen=True)
class ScalingSpec:
    """``spec.scaling``. ``min_replicas`` 0 lets an idle function go to zero replicas
    after ``scale_to_zero_after_seconds`` without requests; ``reaction`` ``Fast`` judges
    the function every half second, the rate of the last ``panic_window_seconds`` raising the
    count at once (``Standard``: once per scaling interval, like an HPA)."""

    max_replicas: int
    min_replicas: int = 1
    engine: ScalingEngine = "operator"
    metrics: tuple[MetricSpec, ...] = DEFAULT_METRICS
    behavior: ScalingBehavior = field(default_factory=ScalingBehavior)
    scale_to_zero_after_seconds: int = 60
    reaction: Reaction = "Standard"
    panic_window_seconds: int = 2
    predictive: PredictiveSpec = field(default_factory=PredictiveSpec)

    @classmethod
    def parse(cls, raw: Any, path: str) -> ScalingSpec:
        body = _map(raw, path)
        engine = _str(body.get("engine"), f"{path}.engine", "operator")
        if engine not in ("operator", "hpa"):
            raise SpecError(f"{path}.engine", f"engine must be operator or hpa, got {engine!r}")
        min_replicas = _int(body.get("minReplicas"), f"{path}.minReplicas", 1)
        if min_replicas < 0:
            raise SpecError(f"{path}.minReplicas", "must not be negative")
        if body.get("maxReplicas") is None:
            raise SpecError(f"{path}.maxReplicas", "required when scaling is set")
        max_replicas = _int(body.get("maxReplicas"), f"{path}.maxReplicas", 0)
        if min_replicas > max_replicas:
            raise SpecError(f"{path}.minReplicas", "minReplicas must not exceed maxReplicas")
        raw_metrics = body.get("metrics")
        if raw_metrics is None:
            metrics = DEFAULT_METRICS
        elif isinstance(raw_metrics, list):
            metrics = tuple(
                MetricSpec.parse(m, f"{path}.metrics[{i}]") for i, m in enumerate(raw_metrics)
            )
        else:
            raise SpecError(f"{path}.metrics", "expected a list of metrics")
        idle = _int(body.get("scaleToZeroAfterSeconds"), f"{path}.scaleToZeroAfterSeconds", 60)
        if idle < 1:
            raise SpecError(f"{path}.scaleToZeroAfterSeconds", "must be at least 1 second")
        reaction = _str(body.get("reaction"), f"{path}.reaction", "Standard")
        if reaction not in ("Standard", "Fast"):
            raise SpecError(f"{path}.reaction", f"must be Standard or Fast, got {reaction!r}")
        panic = _int(body.get("panicWindowSeconds"), f"{path}.panicWindowSeconds", 2)
        if not 1 <= panic <= 60:
            raise SpecError(f"{path}.panicWindowSeconds", "must lie between 1 and 60 seconds")
        predictive = PredictiveSpec.parse(body.get("predictive"), f"{path}.predictive")
        if engine == "hpa":
            operator_only = (
                ("minReplicas", min_replicas == 0, "scaling to zero"),
                ("reaction", reaction != "Standard", "fast reaction"),
                ("predictive", predictive.enabled, "predictive scaling"),
            )
            for name, used, what in operator_only:
                if used:
                    raise SpecError(f"{path}.{name}", f"{what} needs engine operator")
        return cls(
            max_replicas=max_replicas,
            min_replicas=min_replicas,
            engine=engine,  # type: ignore[arg-type]
            metrics=metrics,
            behavior=ScalingBehavior.parse(body.get("behavior"), f"{path}.behavior"),
            scale_to_zero_after_seconds=idle,
            reaction=reaction,  # type: ignore[arg-type]
            panic_window_seconds=panic,
            predictive=predictive,
        )

    @property
    def scales_to_zero(self) -> bool:
        return self.min_replicas == 0

    @property
    def fast(self) -> bool:
        return self.reaction == "Fast"

    def clamp(self, replicas: int) -> int:
        """``replicas`` within the bounds; 0 stays 0 (scaled to zero: the function is
        idle, as ``kubectl scale --replicas=0`` or the idle window left it)."""
        if replicas == 0:
            return 0
        return max(self.min_replicas, 1, min(self.max_replicas, replicas))


@dataclass(frozen=True)
class FunctionSpec:
    module: ModuleSource
    version: str = DEFAULT_VERSION
    runtime: str = DEFAULT_RUNTIME
    replicas: int = 1
    resources: Resources = field(default_factory=Resources)
    limits: RequestLimits = field(default_factory=RequestLimits)
    rollout: Rollout = field(default_factory=Rollout)
    revision_history_limit: int = 5
    health_check: HealthCheck = field(default_factory=HealthCheck)
    placement: Placement = field(default_factory=Placement)
    capabilities: Capabilities = field(default_factory=Capabilities)
    scaling: ScalingSpec | None = None

    @classmethod
    def parse(cls, raw: Any, path: str = "spec") -> FunctionSpec:
        body = _map(raw, path)
        if body.get("module") is None:
            raise SpecError(f"{path}.module", "a module source is required")
        runtime_ref = _map(body.get("runtimeRef"), f"{path}.runtimeRef")
        scaling = body.get("scaling")
        return cls(
            module=ModuleSource.parse(body.get("module"), f"{path}.module"),
            version=_str(body.get("version"), f"{path}.version", DEFAULT_VERSION),
            runtime=_str(runtime_ref.get("name"), f"{path}.runtimeRef.name", DEFAULT_RUNTIME),
            replicas=_int(body.get("replicas"), f"{path}.replicas", 1),
            resources=Resources.parse(body.get("resources"), f"{path}.resources"),
            limits=RequestLimits.parse(body.get("limits"), f"{path}.limits"),
            rollout=Rollout.parse(body.get("rollout"), f"{path}.rollout"),
            revision_history_limit=_int(
                body.get("revisionHistoryLimit"), f"{path}.revisionHistoryLimit", 5
            ),
            health_check=HealthCheck.parse(body.get("healthCheck"), f"{path}.healthCheck"),
            placement=Placement.parse(body.get("placement"), f"{path}.placement"),
            capabilities=Capabilities.parse(body.get("capabilities"), f"{path}.capabilities"),
            scaling=None if scaling is None else ScalingSpec.parse(scaling, f"{path}.scaling"),
        )

    @property
    def desired_replicas(self) -> int:
        """Replicas the Deployment should run: spec.replicas, kept inside the scaling bounds."""
        if self.scaling is None:
            return self.replicas
        return self.scaling.clamp(self.replicas)


@dataclass(frozen=True)
class WasmFunction:
    """A WasmFunction object: identity (for owner references) plus its parsed spec."""

    name: str
    namespace: str
    spec: FunctionSpec
    uid: str = ""
    generation: int = 0

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> WasmFunction:
        meta = _map(body.get("metadata"), "metadata")
        return cls(
            name=_str(meta.get("name"), "metadata.name", ""),
            namespace=_str(meta.get("namespace"), "metadata.namespace", "default"),
            uid=_str(meta.get("uid"), "metadata.uid", ""),
            generation=_int(meta.get("generation"), "metadata.generation", 0),
            spec=FunctionSpec.parse(body.get("spec")),
        )


# --------------------------------------------------------------------------- WasmRuntime


@dataclass(frozen=True)
class EngineSpec:
    name: Literal["wasmtime"] = "wasmtime"
    version: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class RuntimeFeatures:
    """Wasm proposals the engine enables; modules needing anything else are incompatible."""

    wasi: Literal["preview1"] = "preview1"
    simd: bool = True
    bulk_memory: bool = True
    reference_types: bool = True
    multi_value: bool = True
    threads: bool = False
    memory64: bool = False
    multi_memory: bool = False
    fuel: bool = True

    @classmethod
    def parse(cls, raw: Any, path: str) -> RuntimeFeatures:
        body = _map(raw, path)
        wasi = _str(body.get("wasi"), f"{path}.wasi", "preview1")
        if wasi != "preview1":
            raise SpecError(f"{path}.wasi", f"unsupported WASI version {wasi!r}")
        return cls(
            wasi="preview1",
            simd=_bool(body.get("simd"), f"{path}.simd", True),
            bulk_memory=_bool(body.get("bulkMemory"), f"{path}.bulkMemory", True),
            reference_types=_bool(body.get("referenceTypes"), f"{path}.referenceTypes", True),
            multi_value=_bool(body.get("multiValue"), f"{path}.multiValue", True),
            threads=_bool(body.get("threads"), f"{path}.threads", False),
            memory64=_bool(body.get("memory64"), f"{path}.memory64", False),
            multi_memory=_bool(body.get("multiMemory"), f"{path}.multiMemory", False),
            fuel=_bool(body.get("fuel"), f"{path}.fuel", True),
        )

    def enabled(self) -> tuple[str, ...]:
        """Enabled proposals in the spelling the node agent reads from WASMOP_FEATURES."""
        names = {
            "simd": self.simd,
            "bulk-memory": self.bulk_memory,
            "reference-types": self.reference_types,
            "multi-value": self.multi_value,
            "threads": self.threads,
            "memory64": self.memory64,
            "multi-memory": self.multi_memory,
            "fuel": self.fuel,
        }
        return tuple(name for name, on in names.items() if on)


BUILTIN_DEFAULT_RESOURCES = Resources(
    requests=ResourceList(cpu="100m", memory="64Mi"),
    limits=ResourceList(cpu="500m", memory="128Mi"),
)
BUILTIN_DEFAULT_LIMITS = RequestLimits(timeout_ms=5000, memory="64Mi", output_size="1Mi")
BUILTIN_MAX_RESOURCES = ResourceList(cpu="2", memory="1Gi")
BUILTIN_MAX_LIMITS = RequestLimits(timeout_ms=60000, memory="512Mi", output_size="16Mi")
BUILTIN_MAX_MODULE_SIZE = "64Mi"


@dataclass(frozen=True)
class RuntimeDefaults:
    resources: Resources = BUILTIN_DEFAULT_RESOURCES
    limits: RequestLimits = BUILTIN_DEFAULT_LIMITS

    @classmethod
    def parse(cls, raw: Any, path: str) -> RuntimeDefaults:
        body = _map(raw, path)
        return cls(
            resources=Resources.parse(body.get("resources"), f"{path}.resources").merged_over(
                BUILTIN_DEFAULT_RESOURCES
            ),
            limits=RequestLimits.parse(body.get("limits"), f"{path}.limits").merged_over(
                BUILTIN_DEFAULT_LIMITS
            ),
        )


@dataclass(frozen=True)
class RuntimeMaximums:
    """Ceilings for any function on this runtime; ``fuel``/``replicas`` None means unbounded.

    ``module_size`` bounds a module's uncompressed bytes: what the operator fetches and
    validates and what a node pulls and compiles (64Mi, the engine's own default).
    """

    resources: ResourceList = BUILTIN_MAX_RESOURCES
    limits: RequestLimits = BUILTIN_MAX_LIMITS
    replicas: int | None = None
    module_size: Quantity = BUILTIN_MAX_MODULE_SIZE

    @property
    def module_bytes(self) -> int:
        return memory_bytes(self.module_size)

    @classmethod
    def parse(cls, raw: Any, path: str) -> RuntimeMaximums:
        body = _map(raw, path)
        return cls(
            resources=ResourceList.parse(body.get("resources"), f"{path}.resources").merged_over(
                BUILTIN_MAX_RESOURCES
            ),
            limits=RequestLimits.parse(body.get("limits"), f"{path}.limits").merged_over(
                BUILTIN_MAX_LIMITS
            ),
            replicas=_opt_int(body.get("replicas"), f"{path}.replicas"),
            module_size=_quantity(body.get("moduleSize"), f"{path}.moduleSize")
            or BUILTIN_MAX_MODULE_SIZE,
        )


@dataclass(frozen=True)
class EnvCapability:
    """Whether functions may set guest environment variables, and which names (globs)."""

    allowed: bool = False
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuntimeCapabilities:
    env: EnvCapability = field(default_factory=EnvCapability)

    @classmethod
    def parse(cls, raw: Any, path: str) -> RuntimeCapabilities:
        body = _map(raw, path)
        env = _map(body.get("env"), f"{path}.env")
        names = env.get("names") or []
        if not isinstance(names, list):
            raise SpecError(f"{path}.env.names", "expected a list of names or glob patterns")
        return cls(
            env=EnvCapability(
                allowed=_bool(env.get("allowed"), f"{path}.env.allowed", False),
                names=tuple(_str(n, f"{path}.env.names[{i}]", "") for i, n in enumerate(names)),
            )
        )


@dataclass(frozen=True)
class RuntimeSpec:
    engine: EngineSpec = field(default_factory=EngineSpec)
    features: RuntimeFeatures = field(default_factory=RuntimeFeatures)
    defaults: RuntimeDefaults = field(default_factory=RuntimeDefaults)
    maximums: RuntimeMaximums = field(default_factory=RuntimeMaximums)
    capabilities: RuntimeCapabilities = field(default_factory=RuntimeCapabilities)
    node_selector: Mapping[str, str] = field(default_factory=lambda: {RUNTIME_LABEL: "wasmtime"})

    @classmethod
    def parse(cls, raw: Any, path: str = "spec") -> RuntimeSpec:
        body = _map(raw, path)
        engine = _map(body.get("engine"), f"{path}.engine")
        engine_name = _str(engine.get("name"), f"{path}.engine.name", "wasmtime")
        if engine_name != "wasmtime":
            raise SpecError(f"{path}.engine.name", f"unsupported engine {engine_name!r}")
        node_selector = body.get("nodeSelector")
        image = _opt_str(engine.get("image"), f"{path}.engine.image")
        if image is not None and (not image or any(c.isspace() for c in image)):
            raise SpecError(f"{path}.engine.image", f"not a container image: {image!r}")
        return cls(
            engine=EngineSpec(
                name="wasmtime",
                version=_opt_str(engine.get("version"), f"{path}.engine.version"),
                image=image,
            ),
            features=RuntimeFeatures.parse(body.get("features"), f"{path}.features"),
            defaults=RuntimeDefaults.parse(body.get("defaults"), f"{path}.defaults"),
            maximums=RuntimeMaximums.parse(body.get("maximums"), f"{path}.maximums"),
            capabilities=RuntimeCapabilities.parse(
                body.get("capabilities"), f"{path}.capabilities"
            ),
            node_selector=(
                {RUNTIME_LABEL: "wasmtime"}
                if node_selector is None
                else _string_map(node_selector, f"{path}.nodeSelector")
            ),
        )


@dataclass(frozen=True)
class WasmRuntime:
    name: str
    spec: RuntimeSpec = field(default_factory=RuntimeSpec)
    uid: str = ""
    generation: int = 0

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> WasmRuntime:
        meta = _map(body.get("metadata"), "metadata")
        return cls(
            name=_str(meta.get("name"), "metadata.name", ""),
            uid=_str(meta.get("uid"), "metadata.uid", ""),
            generation=_int(meta.get("generation"), "metadata.generation", 0),
            spec=RuntimeSpec.parse(body.get("spec")),
        )


# --------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class ResolvedFunction:
    """A function's effective settings once the runtime's defaults fill what it left unset."""

    function: WasmFunction
    runtime: WasmRuntime
    resources: Resources
    limits: RequestLimits

    @property
    def spec(self) -> FunctionSpec:
        return self.function.spec


def resolve(function: WasmFunction, runtime: WasmRuntime) -> ResolvedFunction:
    """Fill unset resources and per-request limits from the runtime's defaults."""
    defaults = runtime.spec.defaults
    own = function.spec.resources
    merged = own.merged_over(defaults.resources)
    # A function that lowers a limit below the runtime's default request must not end up with
    # request > limit (the API server would reject the pod): the request follows the limit,
    # as Kubernetes itself defaults a missing request to the limit.
    requests = merged.requests
    if own.requests.cpu is None and _exceeds(requests.cpu_millis, merged.limits.cpu_millis):
        requests = ResourceList(cpu=merged.limits.cpu, memory=requests.memory)
    if own.requests.memory is None and _exceeds(requests.memory_bytes, merged.limits.memory_bytes):
        requests = ResourceList(cpu=requests.cpu, memory=merged.limits.memory)
    return ResolvedFunction(
        function=function,
        runtime=runtime,
        resources=Resources(requests=requests, limits=merged.limits),
        limits=function.spec.limits.merged_over(defaults.limits),
    )


def _exceeds(value: int | None, ceiling: int | None) -> bool:
    return value is not None and ceiling is not None and value > ceiling
