"""Checks only the operator can make: a WasmFunction judged against its WasmRuntime.

The CRD schema and its CEL rules reject what is wrong in a single object (shapes, enums,
min <= max). Whether a limit fits depends on another object, the runtime, which may change
later, so those checks live here and their failures mark the function ``Invalid`` with a
machine-readable reason instead of being rejected at admission.

Module compatibility needs the wasm engine; :func:`validate_function` takes it as a
``check_module`` callable so this module stays pure and ``wasmop.runtime`` supplies the
real check.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from wasmop.operator.labels import label_key_problem, label_value_problem, reserved_label
from wasmop.operator.quantity import format_bytes, format_cpu
from wasmop.operator.spec import (
    RequestLimits,
    ResourceList,
    RuntimeSpec,
    SpecError,
    WasmFunction,
    WasmRuntime,
    resolve,
)
from wasmop.wellknown import ZONE_LABEL

__all__ = [
    "RESERVED_ENV_PREFIX",
    "ModuleCheck",
    "Problem",
    "Reason",
    "check_digest",
    "check_pinned_sha256",
    "problem_from_spec_error",
    "summarize",
    "validate_function",
    "validate_runtime",
]

RESERVED_ENV_PREFIX = "WASMOP_"


class Reason(StrEnum):
    """Machine-readable reasons, used in the Validated condition and in Events."""

    INVALID_SPEC = "InvalidSpec"
    RUNTIME_NOT_FOUND = "RuntimeNotFound"
    LIMIT_ABOVE_MAXIMUM = "LimitAboveMaximum"
    RESOURCE_ABOVE_MAXIMUM = "ResourceAboveMaximum"
    REPLICAS_ABOVE_MAXIMUM = "ReplicasAboveMaximum"
    LIMIT_ABOVE_RESOURCES = "LimitAboveResources"
    REQUEST_ABOVE_LIMIT = "RequestAboveLimit"
    CAPABILITY_NOT_ALLOWED = "CapabilityNotAllowed"
    FEATURE_NOT_SUPPORTED = "FeatureNotSupported"
    DIGEST_MISMATCH = "DigestMismatch"
    MODULE_INVALID = "ModuleInvalid"
    MODULE_INCOMPATIBLE = "ModuleIncompatible"
    DEFAULT_ABOVE_MAXIMUM = "DefaultAboveMaximum"
    INVALID_PLACEMENT = "InvalidPlacement"
    PLACEMENT_NOT_ALLOWED = "PlacementNotAllowed"
    PLACEMENT_CONFLICT = "PlacementConflict"


@dataclass(frozen=True)
class Problem:
    """One reason a spec cannot be deployed; ``field`` is a JSON path such as spec.limits."""

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


ModuleCheck = Callable[[bytes, RuntimeSpec], Iterable[Problem] | None]
"""Compiles ``module`` with the runtime's features and reports what it cannot provide.

Either return problems (None or empty when compatible) or raise: an exception with a string
``reason`` attribute (``wasmop.runtime.errors.ModuleError``: NotWasm, ForbiddenImport, ...)
keeps that reason and its ``message``; any other exception becomes ``ModuleInvalid``. The
exception never propagates, so a bad module cannot crash the operator.
"""


def problem_from_spec_error(error: SpecError) -> Problem:
    """A parse failure of :mod:`wasmop.operator.spec` as a problem of its own."""
    return Problem(field=error.field, reason=Reason.INVALID_SPEC, message=error.message)


def summarize(problems: Sequence[Problem]) -> tuple[str, str]:
    """Reason and message for a condition or Event: the first reason, every message."""
    if not problems:
        return "Valid", "the spec fits its runtime"
    return problems[0].reason, "; ".join(str(p) for p in problems)


def check_digest(
    module: bytes, expected_sha256: str | None, *, reveal: bool = True
) -> list[Problem]:
    """A pinned spec.module.sha256 must match the bytes actually fetched.

    ``reveal=False`` leaves the actual digest out of the message: for a module fetched
    from a URL it would tell the tenant a hash of whatever that address served.
    """
    if not expected_sha256:
        return []
    problems = check_pinned_sha256(hashlib.sha256(module).hexdigest(), expected_sha256)
    if reveal or not problems:
        return problems
    message = f"the module fetched from spec.module.url does not have sha256:{expected_sha256}"
    return [Problem(field="spec.module.sha256", reason=Reason.DIGEST_MISMATCH, message=message)]


def check_pinned_sha256(actual: str, expected_sha256: str | None) -> list[Problem]:
    """The same check from the module's digest alone (an image's, known without bytes)."""
    if not expected_sha256 or actual == expected_sha256.lower():
        return []
    return [
        Problem(
            field="spec.module.sha256",
            reason=Reason.DIGEST_MISMATCH,
            message=f"module digest is sha256:{actual}, the spec pins sha256:{expected_sha256}",
        )
    ]


def validate_function(
    function: WasmFunction,
    runtime: WasmRuntime | None,
    *,
    module: bytes | None = None,
    check_module: ModuleCheck | None = None,
) -> list[Problem]:
    """Every problem that keeps ``function`` from running on ``runtime``; empty when fine.

    ``module`` are the fetched module bytes, when the caller has them; with ``check_module``
    they are also checked for compatibility with the runtime's features.
    """
    spec = function.spec
    if runtime is None:
        return [
            Problem(
                field="spec.runtimeRef.name",
                reason=Reason.RUNTIME_NOT_FOUND,
                message=f'WasmRuntime "{spec.runtime}" does not exist',
            )
        ]
    rt = runtime.spec
    where = f'WasmRuntime "{runtime.name}"'
    problems: list[Problem] = []
    problems += _limits_within(spec.limits, rt.maximums.limits, "spec.limits", where)
    if spec.limits.fuel is not None and not rt.features.fuel:
        problems.append(
            Problem(
                "spec.limits.fuel",
                Reason.FEATURE_NOT_SUPPORTED,
                f"{where} does not enable fuel metering",
            )
        )
    for kind in ("requests", "limits"):
        own: ResourceList = getattr(spec.resources, kind)
        problems += _resources_within(own, rt.maximums.resources, f"spec.resources.{kind}", where)
    problems += _replicas_within(function, rt, where)
    problems += _capabilities_allowed(function, rt, where)
    problems += _placement_within(function, rt, where)

    resolved = resolve(function, runtime)
    problems += _requests_within_limits(
        function, resolved.resources.requests, resolved.resources.limits
    )
    memory = resolved.limits.memory_bytes
    pod_memory = resolved.resources.limits.memory_bytes
    if memory is not None and pod_memory is not None and memory > pod_memory:
        problems.append(
            Problem(
                "spec.limits.memory",
                Reason.LIMIT_ABOVE_RESOURCES,
                f"per-request memory {format_bytes(memory)} is above the pod memory limit "
                f"{format_bytes(pod_memory)} (spec.resources.limits.memory)",
            )
        )

    if module is not None:
        problems += check_digest(module, spec.module.sha256, reveal=spec.module.url is None)
        if check_module is not None:
            problems += _run_module_check(check_module, module, rt)
    return problems


def validate_runtime(runtime: WasmRuntime) -> list[Problem]:
    """A runtime whose defaults exceed its own maxima would make every function Invalid."""
    rt = runtime.spec
    where = "its maximum"
    problems = _limits_within(
        rt.defaults.limits, rt.maximums.limits, "spec.defaults.limits", where, own_default=True
    )
    for kind in ("requests", "limits"):
        own: ResourceList = getattr(rt.defaults.resources, kind)
        problems += _resources_within(
            own, rt.maximums.resources, f"spec.defaults.resources.{kind}", where, own_default=True
        )
    for key, value in rt.node_selector.items():
        problem = _label_problem(key, value, f"spec.nodeSelector[{key}]")
        if problem is not None:
            problems.append(problem)
    return problems


# --------------------------------------------------------------------------- helpers


def _limits_within(
    own: RequestLimits,
    maximum: RequestLimits,
    path: str,
    where: str,
    *,
    own_default: bool = False,
) -> list[Problem]:
    reason = Reason.DEFAULT_ABOVE_MAXIMUM if own_default else Reason.LIMIT_ABOVE_MAXIMUM
    suffix = "" if own_default else f" of {where}"
    problems = []
    checks: list[tuple[str, int | None, int | None, Callable[[int], str]]] = [
        ("timeoutMilliseconds", own.timeout_ms, maximum.timeout_ms, lambda v: f"{v}ms"),
        ("memory", own.memory_bytes, maximum.memory_bytes, format_bytes),
        ("outputSize", own.output_bytes, maximum.output_bytes, format_bytes),
        ("fuel", own.fuel, maximum.fuel, str),
    ]
    for name, value, ceiling, fmt in checks:
        if value is not None and ceiling is not None and value > ceiling:
            problems.append(
                Problem(
                    f"{path}.{name}",
                    reason,
                    f"{fmt(value)} is above the maximum {fmt(ceiling)}{suffix}",
                )
            )
    return problems


def _resources_within(
    own: ResourceList,
    maximum: ResourceList,
    path: str,
    where: str,
    *,
    own_default: bool = False,
) -> list[Problem]:
    reason = Reason.DEFAULT_ABOVE_MAXIMUM if own_default else Reason.RESOURCE_ABOVE_MAXIMUM
    suffix = "" if own_default else f" of {where}"
    problems = []
    cpu, cpu_max = own.cpu_millis, maximum.cpu_millis
    if cpu is not None and cpu_max is not None and cpu > cpu_max:
        problems.append(
            Problem(
                f"{path}.cpu",
                reason,
                f"cpu {format_cpu(cpu)} is above the maximum {format_cpu(cpu_max)}{suffix}",
            )
        )
    mem, mem_max = own.memory_bytes, maximum.memory_bytes
    if mem is not None and mem_max is not None and mem > mem_max:
        problems.append(
            Problem(
                f"{path}.memory",
                reason,
                f"memory {format_bytes(mem)} is above the maximum {format_bytes(mem_max)}{suffix}",
            )
        )
    return problems


def _requests_within_limits(
    function: WasmFunction, requests: ResourceList, limits: ResourceList
) -> list[Problem]:
    """After the runtime's defaults are merged, a request must still fit under its limit."""
    problems = []
    pairs = [
        ("cpu", requests.cpu_millis, limits.cpu_millis, format_cpu),
        ("memory", requests.memory_bytes, limits.memory_bytes, format_bytes),
    ]
    own = function.spec.resources
    for name, request, limit, fmt in pairs:
        if request is None or limit is None or request <= limit:
            continue
        # Name the field the user wrote: the request when they set it, else the limit.
        field = (
            f"spec.resources.requests.{name}"
            if getattr(own.requests, name) is not None
            else f"spec.resources.limits.{name}"
        )
        problems.append(
            Problem(
                field,
                Reason.REQUEST_ABOVE_LIMIT,
                f"{name} request {fmt(request)} is above the {name} limit {fmt(limit)}",
            )
        )
    return problems


def _replicas_within(function: WasmFunction, rt: RuntimeSpec, where: str) -> list[Problem]:
    ceiling = rt.maximums.replicas
    if ceiling is None:
        return []
    spec = function.spec
    problems = []
    if spec.scaling is not None and spec.scaling.max_replicas > ceiling:
        problems.append(
            Problem(
                "spec.scaling.maxReplicas",
                Reason.REPLICAS_ABOVE_MAXIMUM,
                f"{spec.scaling.max_replicas} is above the maximum {ceiling} replicas of {where}",
            )
        )
    elif spec.replicas > ceiling:
        problems.append(
            Problem(
                "spec.replicas",
                Reason.REPLICAS_ABOVE_MAXIMUM,
                f"{spec.replicas} is above the maximum {ceiling} replicas of {where}",
            )
        )
    return problems


def _capabilities_allowed(function: WasmFunction, rt: RuntimeSpec, where: str) -> list[Problem]:
    allowed = rt.capabilities.env
    problems = []
    for i, var in enumerate(function.spec.capabilities.env):
        path = f"spec.capabilities.env[{i}].name"
        if var.name.upper().startswith(RESERVED_ENV_PREFIX):
            problems.append(
                Problem(
                    path,
                    Reason.CAPABILITY_NOT_ALLOWED,
                    f"{var.name} uses the reserved prefix {RESERVED_ENV_PREFIX}",
                )
            )
        elif not allowed.allowed:
            problems.append(
                Problem(
                    path,
                    Reason.CAPABILITY_NOT_ALLOWED,
                    f"{where} does not allow environment variables ({var.name})",
                )
            )
        elif allowed.names and not any(fnmatch.fnmatchcase(var.name, p) for p in allowed.names):
            problems.append(
                Problem(
                    path,
                    Reason.CAPABILITY_NOT_ALLOWED,
                    f"{var.name} is not among the environment variables {where} allows "
                    f"({', '.join(allowed.names)})",
                )
            )
    return problems


def _label_problem(key: str, value: str, path: str) -> Problem | None:
    why = label_key_problem(key) or label_value_problem(value)
    return None if why is None else Problem(path, Reason.INVALID_PLACEMENT, why)


def _placement_within(function: WasmFunction, rt: RuntimeSpec, where: str) -> list[Problem]:
    """Placement narrows the runtime's nodes: valid labels, none of the platform's own, and
    none that contradicts the runtime's node selector (which the Pods keep regardless)."""
    placement = function.spec.placement
    wanted = [
        (f"spec.placement.nodeSelector[{key}]", key, value)
        for key, value in placement.node_selector.items()
    ]
    if placement.zone is not None:
        wanted.append(("spec.placement.zone", ZONE_LABEL, placement.zone))
    problems = []
    for path, key, value in wanted:
        problem = _label_problem(key, value, path)
        if problem is not None:
            problems.append(problem)
        elif reserved_label(key):
            problems.append(
                Problem(
                    path,
                    Reason.PLACEMENT_NOT_ALLOWED,
                    f"{key} is set by the function's WasmRuntime, not by its placement",
                )
            )
        elif key in rt.node_selector and rt.node_selector[key] != value:
            problems.append(
                Problem(
                    path,
                    Reason.PLACEMENT_CONFLICT,
                    f"{where} selects {key}={rt.node_selector[key]}, so no node of it has "
                    f"{key}={value}",
                )
            )
    return problems


def _run_module_check(check: ModuleCheck, module: bytes, rt: RuntimeSpec) -> list[Problem]:
    try:
        return list(check(module, rt) or ())
    except Exception as exc:  # a bad module must never crash the operator
        reason = getattr(exc, "reason", None)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        if isinstance(reason, str) and reason:
            return [Problem("spec.module", reason, str(message))]
        return [
            Problem(
                "spec.module",
                Reason.MODULE_INVALID,
                f"module check failed: {type(exc).__name__}: {message}",
            )
        ]
