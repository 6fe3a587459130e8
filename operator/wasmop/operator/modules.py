"""Getting a function's module bytes and judging them against its runtime.

The operator fetches the module once (from a ConfigMap, a URL or the spec itself) and
stores it in an immutable ConfigMap per digest, so nodes never reach outside the
cluster. The compatibility check compiles the module with the runtime's engine
features; its verdict is cached per (digest, features), never the compiled code, which
keeps the operator's memory flat however many functions it runs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections import OrderedDict
from typing import Any

import aiohttp

from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.operator.resources import unpack_module
from wasmop.operator.spec import RuntimeSpec, WasmFunction
from wasmop.operator.validation import Problem, Reason

log = logging.getLogger(__name__)

MAX_FETCH_BYTES = 64 * 2**20
CHECK_CACHE_SIZE = 512


class ModuleUnavailable(Exception):
    """The module cannot be fetched (yet): a reason and a message for status."""

    def __init__(self, reason: str, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent


async def fetch_module(kube: Kube, function: WasmFunction, session: aiohttp.ClientSession) -> bytes:
    source = function.spec.module
    if source.inline is not None:
        return source.inline
    if source.config_map is not None:
        ref = source.config_map
        path = api_path("v1", "configmaps", function.namespace, ref.name)
        try:
            configmap = await kube.get(path)
        except ApiError as exc:
            if exc.not_found:
                raise ModuleUnavailable(
                    "ModuleNotFound", f"ConfigMap {function.namespace}/{ref.name} not found"
                ) from exc
            raise
        binary = configmap.get("binaryData") or {}
        if ref.key in binary:
            return unpack_module(ref.key, base64.b64decode(binary[ref.key]))
        text = configmap.get("data") or {}
        if ref.key in text:
            return text[ref.key].encode()
        raise ModuleUnavailable(
            "ModuleNotFound", f"ConfigMap {function.namespace}/{ref.name} has no key {ref.key}"
        )
    assert source.url is not None
    try:
        async with session.get(source.url, timeout=aiohttp.ClientTimeout(total=30)) as response:
            if response.status != 200:
                raise ModuleUnavailable(
                    "ModuleFetchFailed", f"GET {source.url} answered {response.status}"
                )
            data = await response.content.read(MAX_FETCH_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ModuleUnavailable("ModuleFetchFailed", f"GET {source.url} failed: {exc}") from exc
    if len(data) > MAX_FETCH_BYTES:
        raise ModuleUnavailable(
            "ModuleTooLarge", f"{source.url} is larger than {MAX_FETCH_BYTES} bytes", permanent=True
        )
    return data


class ModuleChecker:
    """Compiles modules against a runtime's features, remembering only the verdicts."""

    def __init__(self) -> None:
        self._verdicts: OrderedDict[tuple[str, tuple[str, ...]], list[Problem]] = OrderedDict()
        self._runtimes: dict[tuple[str, ...], Any] = {}
        self._lock = asyncio.Lock()

    def _runtime(self, features: tuple[str, ...]) -> Any:
        from wasmop.runtime import EngineFeatures, Runtime, RuntimeConfig

        if features not in self._runtimes:
            names = set(features)
            flags = {
                name.replace("-", "_"): name in names
                for name in ("simd", "bulk-memory", "multi-value", "threads", "memory64")
            }
            config = RuntimeConfig(
                features=EngineFeatures.from_mapping(flags), consume_fuel="fuel" in names
            )
            self._runtimes[features] = Runtime(config)
        return self._runtimes[features]

    async def check(self, module: bytes, runtime: RuntimeSpec) -> list[Problem]:
        features = tuple(runtime.features.enabled())
        key = (hashlib.sha256(module).hexdigest(), features)
        if key in self._verdicts:
            self._verdicts.move_to_end(key)
            return self._verdicts[key]
        async with self._lock:  # one compile at a time: the operator has a CPU budget
            problems = await asyncio.to_thread(self._check_sync, module, features)
        self._verdicts[key] = problems
        if len(self._verdicts) > CHECK_CACHE_SIZE:
            self._verdicts.popitem(last=False)
        return problems

    def _check_sync(self, module: bytes, features: tuple[str, ...]) -> list[Problem]:
        from wasmop.runtime import ModuleError

        runtime = self._runtime(features)
        try:
            compiled = runtime.load(module)
        except ModuleError as exc:
            return [
                Problem(
                    "spec.module",
                    Reason.MODULE_INCOMPATIBLE
                    if exc.reason != "NotWasm"
                    else Reason.MODULE_INVALID,
                    f"{exc.reason}: {exc}",
                )
            ]
        runtime.evict(compiled.digest)
        return []

    def close(self) -> None:
        for runtime in self._runtimes.values():
            runtime.close()
