"""The ``WASMOP_*`` environment contract between a function's Pod template and whatever
runs the Pod: a wasm node agent (many Pods per process) or the runtime container image
on a real cluster (one Pod, one process). Both read it here, so they cannot drift.

    WASMOP_MODULE_PATH      where the module file is mounted (plain or gzip)
    WASMOP_MODULE_IMAGE     or: the module's OCI image by digest (REGISTRY/REPO@sha256:...),
                            pulled by the node (or the runtime image) itself
    WASMOP_MODULE_SHA256    sha256 of the module the operator validated
    WASMOP_REGISTRY_AUTH    mounted dockerconfigjson files for the pull, comma-separated
    WASMOP_MAX_MODULE_BYTES the largest module pulled and compiled (the runtime's moduleSize)
    WASMOP_FEATURES         enabled proposals, e.g. simd,bulk-memory,multi-value,fuel
    WASMOP_TIMEOUT_MS       per-request time bound
    WASMOP_MEMORY_BYTES     per-request linear-memory cap
    WASMOP_OUTPUT_BYTES     per-request output cap
    WASMOP_FUEL             per-request instruction budget (needs "fuel" in the features)
    WASMOP_GUEST_ENV        names of the Pod's env vars the module may see
    WASMOP_MAX_CONCURRENCY  requests running at once per Pod (default 4)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from wasmop.runtime.config import EngineFeatures, FunctionConfig, Limits, RuntimeConfig
from wasmop.runtime.errors import RuntimeConfigError

MODULE_PATH_ENV = "WASMOP_MODULE_PATH"
MODULE_IMAGE_ENV = "WASMOP_MODULE_IMAGE"
MODULE_DIGEST_ENV = "WASMOP_MODULE_SHA256"
REGISTRY_AUTH_ENV = "WASMOP_REGISTRY_AUTH"
MAX_MODULE_BYTES_ENV = "WASMOP_MAX_MODULE_BYTES"

# The most a WasmRuntime may allow (spec.maximums.moduleSize is at most 1Gi).
MAX_MODULE_BYTES = 2**30

# Proposals the operator may switch; reference types stay on (wasmtime needs them).
SWITCHABLE_FEATURES = (
    "simd",
    "bulk-memory",
    "multi-value",
    "threads",
    "memory64",
    "multi-memory",
)


def engine_features(names: Iterable[str]) -> EngineFeatures:
    """The engine for a list of enabled feature names, as ``WASMOP_FEATURES`` and
    ``WasmRuntime`` features spell them: each switchable proposal is on exactly when
    named; the others keep their defaults. Names that are no proposal ("fuel") are
    ignored here."""
    named = set(names)
    return EngineFeatures.from_mapping(
        {name.replace("-", "_"): name in named for name in SWITCHABLE_FEATURES}
    )


@dataclass(frozen=True)
class PodEnvironment:
    module_path: str | None
    features: EngineFeatures
    consume_fuel: bool
    function: FunctionConfig
    module_image: str | None = None
    module_digest: str | None = None
    registry_auth: tuple[str, ...] = ()
    max_module_bytes: int = RuntimeConfig.max_module_bytes

    @property
    def engine_key(self) -> tuple[Any, ...]:
        """Pods with equal keys can share one engine."""
        return (self.features, self.consume_fuel, self.max_module_bytes)


def from_env(env: Mapping[str, str], name: str) -> PodEnvironment:
    """Read the contract; raises RuntimeConfigError naming the variable that is wrong."""
    names = {n for n in env.get("WASMOP_FEATURES", "").split(",") if n}
    # Without the variable (the runtime image run by hand), the engine's defaults.
    features = engine_features(names) if names else EngineFeatures()
    limits: dict[str, Any] = {}
    numbers = (
        ("WASMOP_TIMEOUT_MS", "timeout_ms", float),
        ("WASMOP_MEMORY_BYTES", "memory_bytes", int),
        ("WASMOP_OUTPUT_BYTES", "output_bytes", int),
        ("WASMOP_FUEL", "fuel", int),
    )
    for variable, field_name, kind in numbers:
        if variable in env:
            try:
                limits[field_name] = kind(env[variable])
            except ValueError as exc:
                raise RuntimeConfigError(f"{variable}={env[variable]!r} is not a number") from exc
    try:
        concurrency = int(env.get("WASMOP_MAX_CONCURRENCY", "4"))
    except ValueError as exc:
        raise RuntimeConfigError("WASMOP_MAX_CONCURRENCY is not a number") from exc
    max_module = env.get(MAX_MODULE_BYTES_ENV)
    try:
        max_module_bytes = int(max_module) if max_module else RuntimeConfig.max_module_bytes
    except ValueError as exc:
        raise RuntimeConfigError(f"{MAX_MODULE_BYTES_ENV} is not a number") from exc
    if not 8 < max_module_bytes <= MAX_MODULE_BYTES:
        raise RuntimeConfigError(f"{MAX_MODULE_BYTES_ENV} must be between 9 and {MAX_MODULE_BYTES}")
    granted = [n for n in env.get("WASMOP_GUEST_ENV", "").split(",") if n]
    function = FunctionConfig(
        name=name,
        limits=Limits.from_mapping(limits),
        env={n: env[n] for n in granted if n in env},
        max_concurrency=concurrency,
    )
    return PodEnvironment(
        module_path=env.get(MODULE_PATH_ENV),
        features=features,
        consume_fuel="fuel" in names and "WASMOP_FUEL" in env,
        function=function,
        module_image=env.get(MODULE_IMAGE_ENV) or None,
        module_digest=(env.get(MODULE_DIGEST_ENV) or "").lower() or None,
        registry_auth=tuple(p for p in env.get(REGISTRY_AUTH_ENV, "").split(",") if p),
        max_module_bytes=max_module_bytes,
    )
