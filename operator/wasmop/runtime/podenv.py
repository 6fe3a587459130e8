"""The ``WASMOP_*`` environment contract between a function's Pod template and whatever
runs the Pod: a wasm node agent (many Pods per process) or the runtime container image
on a real cluster (one Pod, one process). Both read it here, so they cannot drift.

    WASMOP_MODULE_PATH      where the module file is mounted (plain or gzip)
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

from wasmop.runtime.config import EngineFeatures, FunctionConfig, Limits
from wasmop.runtime.errors import RuntimeConfigError

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

    @property
    def engine_key(self) -> tuple[Any, ...]:
        """Pods with equal keys can share one engine."""
        return (self.features, self.consume_fuel)


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
    granted = [n for n in env.get("WASMOP_GUEST_ENV", "").split(",") if n]
    function = FunctionConfig(
        name=name,
        limits=Limits.from_mapping(limits),
        env={n: env[n] for n in granted if n in env},
        max_concurrency=concurrency,
    )
    return PodEnvironment(
        module_path=env.get("WASMOP_MODULE_PATH"),
        features=features,
        consume_fuel="fuel" in names and "WASMOP_FUEL" in env,
        function=function,
    )
