"""Configuration of the runtime (engine-wide) and of each function (per request).

Everything is a frozen dataclass with a `from_mapping` that accepts the spellings a
Kubernetes object uses (kebab-case or camelCase keys, MiB instead of bytes), so the
operator can pass `spec.features` / `spec.limits` straight through. Values are checked
here, before wasmtime sees them: some invalid wasmtime feature combinations abort the
whole process instead of raising.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasmop.runtime.errors import RuntimeConfigError
from wasmop.wellknown import MAX_REQUEST_BODY_BYTES

MIB = 1024 * 1024
WASM_PAGE = 64 * 1024
# Below this uncompressed size the compression ratio is not checked: small modules cannot
# be bombs, and tiny ones compress oddly well.
RATIO_FLOOR_BYTES = 256 * 1024

# CGI names the runtime sets itself (docs/abi.md); a granted env var may not shadow them.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_ENV = frozenset(
    {
        "GATEWAY_INTERFACE",
        "SERVER_SOFTWARE",
        "SERVER_PROTOCOL",
        "SERVER_NAME",
        "SERVER_PORT",
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "REMOTE_ADDR",
        "X_FULL_URL",
        "X_WASMOP_FUNCTION",
        "X_WASMOP_DIGEST",
    }
)


def _key(name: str) -> str:
    """Normalise `bulk-memory`, `bulkMemory` and `bulk_memory` to `bulk_memory`."""
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    return name.replace("-", "_").lower()


def _normalise(data: Mapping[str, Any]) -> dict[str, Any]:
    return {_key(str(k)): v for k, v in data.items()}


@dataclass(frozen=True)
class EngineFeatures:
    """WebAssembly proposals the engine accepts; a module using another one is refused.

    Defaults follow what C compilers for wasm32-wasi emit today (bulk memory, reference
    types, multi-value, SIMD). Relaxed SIMD is off because its results may differ between
    hosts, which a benchmark should not silently depend on; threads are off because WASI
    preview 1 command modules have no way to start one. Multi-memory is off unless a
    runtime enables it: no C toolchain emits it, and with it on the per-request memory cap
    is shared out between a module's memories.
    """

    simd: bool = True
    relaxed_simd: bool = False
    bulk_memory: bool = True
    reference_types: bool = True
    multi_value: bool = True
    threads: bool = False
    tail_call: bool = True
    multi_memory: bool = False
    memory64: bool = False

    def __post_init__(self) -> None:
        if not self.reference_types:
            # wasmtime 50's C API enables component-model-async, which needs reference
            # types; turning them off aborts the process inside Engine().
            raise RuntimeConfigError("reference-types cannot be disabled with this wasmtime")
        if self.relaxed_simd and not self.simd:
            raise RuntimeConfigError("relaxed-simd needs simd")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> EngineFeatures:
        """Build from e.g. `{"simd": false, "bulk-memory": true}`; unknown names are errors."""
        values = _normalise(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RuntimeConfigError(
                f"unknown engine features: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(**{k: bool(v) for k, v in values.items()})

    def enabled(self) -> list[str]:
        """Names of the enabled proposals, kebab-case, for status fields and logs."""
        return [f.name.replace("_", "-") for f in dataclasses.fields(self) if getattr(self, f.name)]


@dataclass(frozen=True)
class RuntimeConfig:
    """Engine-wide settings: one `Runtime` (one wasmtime Engine) per distinct config."""

    features: EngineFeatures = field(default_factory=EngineFeatures)
    # Precompiled modules are kept here as <digest>-<engine fingerprint>.cwasm; only point
    # it at a directory this process alone writes (deserialising is trusted input).
    cache_dir: Path | None = None
    # One shared thread advances the engine's epoch every tick while any request runs; a
    # request's CPU bound is a number of ticks, so it is accurate to about one tick.
    epoch_tick_s: float = 0.01
    # Fuel counts instructions deterministically but costs more per instruction than
    # epochs; when on, every request also gets `Limits.fuel`.
    consume_fuel: bool = False
    cranelift_opt_level: str = "speed"
    max_module_bytes: int = 64 * MIB  # uncompressed
    # A gzip-compressed module larger than `RATIO_FLOOR_BYTES` once uncompressed may be at
    # most this many times its compressed size (wasm compresses 2-4x; a bomb, 100x+).
    max_compression_ratio: float = 20.0
    # Compiling one module may take this long; then its compiler process is killed.
    compile_timeout_s: float = 10.0
    # A compiled module no function has served for this long leaves memory and disk.
    evict_after_s: float = 60.0
    # Import modules a function may use. Only WASI preview 1 is linked.
    allowed_import_modules: tuple[str, ...] = ("wasi_snapshot_preview1",)
    # A function judged heavy beside others runs its requests in a worker process of its
    # own at nice 19 (`wasmop.runtime.isolation`), not on threads beside its neighbours.
    isolate_heavy: bool = True

    def __post_init__(self) -> None:
        if not 0.0005 <= self.epoch_tick_s <= 1.0:
            raise RuntimeConfigError("epoch_tick_s must be between 0.0005 and 1 second")
        if self.cranelift_opt_level not in ("none", "speed", "speed_and_size"):
            raise RuntimeConfigError("cranelift_opt_level must be none, speed or speed_and_size")
        if self.max_module_bytes <= 8:
            raise RuntimeConfigError("max_module_bytes is too small")
        if self.max_compression_ratio < 1:
            raise RuntimeConfigError("max_compression_ratio must be at least 1")
        if not 0 < self.compile_timeout_s <= 600:
            raise RuntimeConfigError("compile_timeout_s must be between 0 and 600 seconds")
        unknown = set(self.allowed_import_modules) - {"wasi_snapshot_preview1"}
        if unknown:
            raise RuntimeConfigError(
                f"only wasi_snapshot_preview1 can be linked, not {', '.join(sorted(unknown))}"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> RuntimeConfig:
        """Build from a WasmRuntime-like spec: features, cacheDir, epochTickS, maxModuleMib."""
        values = _normalise(data or {})
        kwargs: dict[str, Any] = {}
        if "features" in values:
            kwargs["features"] = EngineFeatures.from_mapping(values.pop("features"))
        if "cache_dir" in values:
            cache = values.pop("cache_dir")
            kwargs["cache_dir"] = Path(cache) if cache else None
        if "max_module_mib" in values:
            kwargs["max_module_bytes"] = int(float(values.pop("max_module_mib")) * MIB)
        for name in (
            "epoch_tick_s",
            "consume_fuel",
            "cranelift_opt_level",
            "max_module_bytes",
            "max_compression_ratio",
            "compile_timeout_s",
            "evict_after_s",
        ):
            if name in values:
                kwargs[name] = values.pop(name)
        if values:
            raise RuntimeConfigError(f"unknown runtime settings: {', '.join(sorted(values))}")
        return cls(**kwargs)

    def fingerprint(self) -> str:
        """What a precompiled module depends on besides its bytes (for the disk cache key)."""
        parts = [*self.features.enabled(), f"fuel={self.consume_fuel}", self.cranelift_opt_level]
        return ",".join(parts)


@dataclass(frozen=True)
class Limits:
    """Per-request limits. Every request runs in a fresh instance bounded by these."""

    # Linear memory cap (Store limits): all of a module's memories together; growth past
    # it fails. A module with several memories gets an equal share of it for each.
    memory_bytes: int = 128 * MIB
    # Table elements, all of a module's tables together (each element takes 8 bytes);
    # growth past it fails. 64 Ki elements is far above what compilers emit for C.
    table_elements: int = 65536
    timeout_s: float = 10.0  # wall-clock bound on wasm execution (epoch deadline)
    output_bytes: int = 16 * MIB  # stdout cap; writes past it fail and the request is a 502
    # Request body cap; larger bodies get 413. Never above the platform-wide cap the
    # gateway enforces too (wellknown.MAX_REQUEST_BODY_BYTES).
    body_bytes: int = MAX_REQUEST_BODY_BYTES
    stderr_bytes: int = 64 * 1024  # stderr kept for the log; the rest is dropped silently
    fuel: int | None = None  # instructions, only when the runtime consumes fuel

    def __post_init__(self) -> None:
        if self.memory_bytes < WASM_PAGE:
            raise RuntimeConfigError("memory limit must be at least one wasm page (64 KiB)")
        if self.table_elements < 0:
            raise RuntimeConfigError("table_elements must not be negative")
        if not 0 < self.timeout_s <= 3600:
            raise RuntimeConfigError("timeout must be between 0 and 3600 seconds")
        for name in ("output_bytes", "body_bytes", "stderr_bytes"):
            if getattr(self, name) < 0:
                raise RuntimeConfigError(f"{name} must not be negative")
        if self.fuel is not None and self.fuel <= 0:
            raise RuntimeConfigError("fuel must be positive")
        if self.body_bytes > MAX_REQUEST_BODY_BYTES:
            raise RuntimeConfigError(
                f"body_bytes must not exceed the platform's cap of {MAX_REQUEST_BODY_BYTES} bytes"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Limits:
        """Accepts bytes or MiB: `memory_mib`/`memoryMiB`, `timeout_s`, `output_mib`, ..."""
        values = _normalise(data or {})
        kwargs: dict[str, Any] = {}
        for unit_name, name in (
            ("memory_mib", "memory_bytes"),
            ("memory_mi_b", "memory_bytes"),
            ("output_mib", "output_bytes"),
            ("output_mi_b", "output_bytes"),
            ("body_mib", "body_bytes"),
            ("body_mi_b", "body_bytes"),
        ):
            if unit_name in values:
                kwargs[name] = int(float(values.pop(unit_name)) * MIB)
        if "timeout_ms" in values:
            kwargs["timeout_s"] = float(values.pop("timeout_ms")) / 1000
        for name in (
            "memory_bytes",
            "table_elements",
            "timeout_s",
            "output_bytes",
            "body_bytes",
            "stderr_bytes",
        ):
            if name in values:
                kwargs[name] = type(getattr(cls(), name))(values.pop(name))
        if "fuel" in values:
            fuel = values.pop("fuel")
            kwargs["fuel"] = None if fuel is None else int(fuel)
        if values:
            raise RuntimeConfigError(f"unknown limits: {', '.join(sorted(values))}")
        return cls(**kwargs)


@dataclass(frozen=True)
class FunctionConfig:
    """How one function is served: its name, limits, granted env vars and concurrency."""

    name: str
    limits: Limits = field(default_factory=Limits)
    # Environment variables explicitly granted to the module, on top of the CGI ones.
    env: Mapping[str, str] = field(default_factory=dict)
    # At most this many requests run at once (each on its own worker thread)...
    max_concurrency: int = 4
    # ...and at most this many wait for a slot; beyond that a request gets 503 queue-full.
    max_queue: int = 64
    # A queued request that has not started after this long gets 503 queue-timeout.
    queue_timeout_s: float = 10.0
    # Let a request that is alone in the process run on the event loop's thread within a
    # budget of two epoch ticks, falling back to a worker thread if it needs longer.
    inline: bool = True

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?", self.name):
            raise RuntimeConfigError(
                f"function name {self.name!r} must be lowercase letters, digits, '.', '_' "
                "or '-', starting and ending with a letter or digit"
            )
        if self.max_concurrency < 1:
            raise RuntimeConfigError("max_concurrency must be at least 1")
        if self.max_queue < 0:
            raise RuntimeConfigError("max_queue must not be negative")
        if self.queue_timeout_s <= 0:
            raise RuntimeConfigError("queue_timeout_s must be positive")
        for key, value in self.env.items():
            if not _ENV_NAME.match(key):
                raise RuntimeConfigError(f"env var name {key!r} is not a valid name")
            if key in RESERVED_ENV or key.startswith("HTTP_"):
                raise RuntimeConfigError(f"env var {key} is set by the runtime (CGI) itself")
            if not isinstance(value, str) or "\0" in value:
                raise RuntimeConfigError(f"env var {key} must be a string without NUL bytes")

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any] | None) -> FunctionConfig:
        """Build from a WasmFunction-like spec: limits, env, maxConcurrency, maxQueue."""
        values = _normalise(data or {})
        kwargs: dict[str, Any] = {"name": name}
        if "limits" in values:
            kwargs["limits"] = Limits.from_mapping(values.pop("limits"))
        if "env" in values:
            env = values.pop("env") or {}
            if isinstance(env, list):  # Kubernetes style: [{name, value}]
                env = {item["name"]: item.get("value", "") for item in env}
            kwargs["env"] = {str(k): str(v) for k, v in env.items()}
        for name_ in ("max_concurrency", "max_queue"):
            if name_ in values:
                kwargs[name_] = int(values.pop(name_))
        if "queue_timeout_s" in values:
            kwargs["queue_timeout_s"] = float(values.pop("queue_timeout_s"))
        if "inline" in values:
            kwargs["inline"] = bool(values.pop("inline"))
        if values:
            raise RuntimeConfigError(f"unknown function settings: {', '.join(sorted(values))}")
        return cls(**kwargs)
