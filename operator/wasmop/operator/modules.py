"""Getting a function's module bytes and judging them against its runtime.

The operator fetches the module once (from a ConfigMap, a URL or the spec itself) and
stores it in an immutable ConfigMap per digest, so nodes never reach outside the
cluster. The compatibility check compiles the module with the runtime's engine
features in the runtime's compile pool (worker processes, each compile under the
deadline a node applies); only its verdict is kept, per (digest, features), which
keeps the operator's memory flat however many functions it runs.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import OrderedDict
from typing import Any

from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.netguard import AddressRefused
from wasmop.operator.module_url import (
    DEFAULT_MAX_BYTES,
    FetchFailed,
    FetchTooLarge,
    ModuleUrlFetcher,
)
from wasmop.operator.owned_objects import module_digest
from wasmop.operator.spec import RuntimeSpec, WasmFunction
from wasmop.operator.validation import Problem, Reason
from wasmop.runtime import ModuleError, RuntimeConfig
from wasmop.runtime.compiler import compile_pool
from wasmop.runtime.loader import decode_module_bytes
from wasmop.runtime.podenv import engine_features

log = logging.getLogger(__name__)

MAX_FETCH_BYTES = DEFAULT_MAX_BYTES
CHECK_CACHE_SIZE = 512


class ModuleUnavailable(Exception):
    """The module cannot be fetched (yet): a reason and a message for status."""

    def __init__(self, reason: str, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent


async def fetch_module(kube: Kube, function: WasmFunction, urls: ModuleUrlFetcher) -> bytes:
    source = function.spec.module
    if source.inline is not None:
        return source.inline
    if source.config_map is not None:
        path = api_path("v1", "configmaps", function.namespace, source.config_map.name)
        try:
            configmap = await kube.get(path)
        except ApiError as exc:
            if exc.not_found:
                raise missing_configmap(function) from exc
            raise
        return module_from_configmap(function, configmap)
    assert source.url is not None
    # What went wrong goes to the operator's log; status says only that it did, so a
    # tenant cannot read HTTP codes, errors or bytes of what the operator can reach.
    where = f"{function.namespace}/{function.name}"
    try:
        return await urls.fetch(source.url)
    except AddressRefused as exc:
        log.warning("module URL of %s refused: %s", where, exc)
        raise ModuleUnavailable(
            "ModuleURLNotAllowed",
            "spec.module.url points at an address the operator does not fetch modules from "
            "(loopback, link-local, private, metadata or cluster ranges); serve the module "
            "from a public address or use configMapRef",
            permanent=True,
        ) from None
    except FetchTooLarge as exc:
        log.warning("module of %s not fetched: %s", where, exc.detail)
        raise ModuleUnavailable(
            "ModuleTooLarge",
            f"the module at spec.module.url is larger than {urls.max_bytes} bytes",
            permanent=True,
        ) from None
    except FetchFailed as exc:
        log.warning("module of %s not fetched: %s", where, exc.detail)
        raise ModuleUnavailable(
            "ModuleFetchFailed",
            "the module could not be fetched from spec.module.url (it must answer 200 "
            "without a redirect); the operator tries again",
        ) from None


def missing_configmap(function: WasmFunction) -> ModuleUnavailable:
    ref = function.spec.module.config_map
    assert ref is not None
    return ModuleUnavailable(
        "ModuleNotFound", f"ConfigMap {function.namespace}/{ref.name} not found"
    )


def module_from_configmap(function: WasmFunction, configmap: dict[str, Any]) -> bytes:
    """The module under the function's ``configMapRef`` key of this ConfigMap."""
    ref = function.spec.module.config_map
    assert ref is not None
    binary = configmap.get("binaryData") or {}
    if ref.key in binary:
        data = base64.b64decode(binary[ref.key])
        if not ref.key.endswith(".gz"):
            return data
        try:  # bounded: a tenant's gzip may be a bomb
            return decode_module_bytes(
                data, MAX_FETCH_BYTES, RuntimeConfig().max_compression_ratio
            )[0]
        except ModuleError as exc:
            raise ModuleUnavailable(exc.reason, str(exc), permanent=True) from exc
    text = configmap.get("data") or {}
    if ref.key in text:
        return str(text[ref.key]).encode()
    raise ModuleUnavailable(
        "ModuleNotFound", f"ConfigMap {function.namespace}/{ref.name} has no key {ref.key}"
    )


def concealed(problems: list[Problem]) -> list[Problem]:
    """Module problems as status may show them for a module fetched from a URL.

    A verdict on bytes that are not wasm quotes their first bytes; for a URL that would
    echo a little of whatever the address served, so it is told without them.
    """
    return [
        Problem(p.field, p.reason, "the content at spec.module.url is not a WebAssembly module")
        if p.reason == Reason.MODULE_INVALID
        else p
        for p in problems
    ]


def runtime_config(features: tuple[str, ...]) -> RuntimeConfig:
    """The engine configuration a node builds for a runtime with these features."""
    return RuntimeConfig(features=engine_features(features), consume_fuel="fuel" in features)


def compile_check(module: bytes, features: tuple[str, ...]) -> tuple[str, str] | None:
    """Compile ``module`` with these engine features; (reason, message) if it fails.

    Compiles in a worker of the runtime's compile pool, under the same compile deadline
    and limits a node applies (a bomb fails with CompileTimeout and its worker is
    killed), so the operator's verdict is the nodes' verdict and its memory stays flat.
    """
    config = runtime_config(features)
    try:
        wasm, compressed_size = decode_module_bytes(
            module, config.max_module_bytes, config.max_compression_ratio
        )
        compile_pool().compile(wasm, config, compressed_size, keep=False)
    except ModuleError as exc:
        return exc.reason, str(exc)
    return None


# (module (memory (export "memory") 1) (func (export "_start"))): the smallest servable module
WARM_UP_MODULE = bytes.fromhex(
    "0061736d01000000010401600000030201000503010001071302066d656d6f72790200065f737461727400000a040102000b"
)


class ModuleChecker:
    """Judges modules against a runtime's features, remembering only the verdicts.

    Compiles run in the shared compile pool, several at once: a slow module (or a bomb,
    until its deadline) holds one worker, never the others' turn. Concurrent checks of
    one (digest, features) share one compile.
    """

    def __init__(self) -> None:
        self._verdicts: OrderedDict[tuple[str, tuple[str, ...]], list[Problem]] = OrderedDict()
        self._running: dict[tuple[str, tuple[str, ...]], asyncio.Future[list[Problem]]] = {}

    async def warm_up(self) -> None:
        """Start the compile workers now, so the first function does not wait for them."""
        await asyncio.to_thread(compile_pool().warm_up)
        await asyncio.to_thread(compile_check, WARM_UP_MODULE, ())

    def _known(self, key: tuple[str, tuple[str, ...]]) -> list[Problem] | None:
        problems = self._verdicts.get(key)
        if problems is not None:
            self._verdicts.move_to_end(key)
        return problems

    def verdict(self, digest: str, runtime: RuntimeSpec) -> list[Problem] | None:
        """The known verdict on the module with this sha256 (None: not judged yet)."""
        return self._known((digest, tuple(runtime.features.enabled())))

    async def check(
        self, module: bytes, runtime: RuntimeSpec, digest: str | None = None
    ) -> list[Problem]:
        """Problems compiling ``module`` (sha256 ``digest``) with the runtime's features.

        A known verdict returns at once; another module's compile never delays this one.
        """
        key = (digest or module_digest(module), tuple(runtime.features.enabled()))
        known = self._known(key)
        if known is not None:
            return known
        running = self._running.get(key)
        if running is not None:
            return list(await asyncio.shield(running))
        future: asyncio.Future[list[Problem]] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            failure = await asyncio.to_thread(compile_check, module, key[1])
            problems = []
            if failure is not None:
                reason, message = failure
                kind = Reason.MODULE_INVALID if reason == "NotWasm" else Reason.MODULE_INCOMPATIBLE
                problems.append(Problem("spec.module", kind, f"{reason}: {message}"))
            self._verdicts[key] = problems
            if len(self._verdicts) > CHECK_CACHE_SIZE:
                self._verdicts.popitem(last=False)
            future.set_result(problems)
            return problems
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters see it, nobody else must
            raise
        finally:
            self._running.pop(key, None)

    def close(self) -> None:
        """The compile pool is the process's; its workers die with the process."""
