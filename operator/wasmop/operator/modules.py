"""Getting a function's module bytes and judging them against its runtime.

The operator fetches the module once (from a ConfigMap, a URL or the spec itself) and
stores it in an immutable ConfigMap per digest, so nodes never reach outside the
cluster. The compatibility check compiles the module with the runtime's engine
features in a worker process; only its verdict is kept, per (digest, features), which
keeps the operator's memory flat however many functions it runs.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import ctypes
import logging
import multiprocessing
import signal
from collections import OrderedDict

import aiohttp

from wasmop.kube import ApiError, Kube
from wasmop.kube.client import api_path
from wasmop.operator.owned_objects import module_digest, unpack_module
from wasmop.operator.spec import RuntimeSpec, WasmFunction
from wasmop.operator.validation import Problem, Reason
from wasmop.runtime import ModuleError, RuntimeConfig, check_module
from wasmop.runtime.podenv import engine_features

log = logging.getLogger(__name__)

MAX_FETCH_BYTES = 64 * 2**20
CHECK_CACHE_SIZE = 512
CHECKS_PER_WORKER = 25
PR_SET_PDEATHSIG = 1


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


def compile_check(module: bytes, features: tuple[str, ...]) -> tuple[str, str] | None:
    """Compile ``module`` with these engine features; (reason, message) if it fails.

    Runs in a short-lived worker process: compiling a large module (SQLite takes about a
    second and a hundred MiB) must neither stall the operator's event loop nor leave its
    memory behind in the operator.
    """
    config = RuntimeConfig(features=engine_features(features), consume_fuel="fuel" in features)
    try:
        check_module(module, config=config, compile=True)
    except ModuleError as exc:
        return exc.reason, str(exc)
    return None


# (module (memory (export "memory") 1) (func (export "_start"))): the smallest servable module
WARM_UP_MODULE = bytes.fromhex(
    "0061736d01000000010401600000030201000503010001071302066d656d6f72790200065f737461727400000a040102000b"
)


def _die_with_operator() -> None:
    """A killed operator must not leave its compile worker behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ModuleChecker:
    """Judges modules against a runtime's features, remembering only the verdicts."""

    def __init__(self) -> None:
        self._verdicts: OrderedDict[tuple[str, tuple[str, ...]], list[Problem]] = OrderedDict()
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._lock = asyncio.Lock()

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_die_with_operator,
                # Recycled every few modules, so what compiling leaves behind goes with it.
                max_tasks_per_child=CHECKS_PER_WORKER,
            )
        return self._pool

    async def warm_up(self) -> None:
        """Start the worker now, so the first function does not wait for its start-up."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor(), compile_check, WARM_UP_MODULE, ())

    def _known(self, key: tuple[str, tuple[str, ...]]) -> list[Problem] | None:
        problems = self._verdicts.get(key)
        if problems is not None:
            self._verdicts.move_to_end(key)
        return problems

    async def check(
        self, module: bytes, runtime: RuntimeSpec, digest: str | None = None
    ) -> list[Problem]:
        """Problems compiling ``module`` (sha256 ``digest``) with the runtime's features.

        A known verdict returns at once, without waiting behind another module's compile.
        """
        key = (digest or module_digest(module), tuple(runtime.features.enabled()))
        known = self._known(key)
        if known is not None:
            return known
        async with self._lock:  # one compile at a time; later callers find the verdict
            known = self._known(key)
            if known is not None:
                return known
            loop = asyncio.get_running_loop()
            failure = await loop.run_in_executor(self._executor(), compile_check, module, key[1])
            problems = []
            if failure is not None:
                reason, message = failure
                kind = Reason.MODULE_INVALID if reason == "NotWasm" else Reason.MODULE_INCOMPATIBLE
                problems.append(Problem("spec.module", kind, f"{reason}: {message}"))
            self._verdicts[key] = problems
            if len(self._verdicts) > CHECK_CACHE_SIZE:
                self._verdicts.popitem(last=False)
            return problems

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
