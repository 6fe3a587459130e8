"""wasmop.runtime: the wasmtime host for WebAssembly functions (WAGI-style, WASI preview 1).

The same code runs many pods in one node-agent process and one function in a container.
The embedding API, in the order a node agent uses it:

    runtime = Runtime(RuntimeConfig(features=EngineFeatures(simd=False), cache_dir=...))
    module = await runtime.load_async(configmap_bytes)          # bytes, gzip bytes, path, URL
    function = runtime.function(module, FunctionConfig(name="hello", limits=Limits(...)))
    server = await start_server(function, sock=listening_socket)   # or host=..., port=...
    function.cpu_seconds(), function.memory_bytes(), function.stats  # resource metrics
    await server.stop(); await function.aclose(); runtime.close()

The operator validates a module in-process, without serving it:

    info = check_module(data, features=EngineFeatures(...), limits=Limits(...))
    # -> ModuleInfo(digest, size, imports, exports, ...) or raises ModuleError with .reason

`Function.invoke(Request(...))` runs a request without HTTP. The ABI (CGI variables in,
CGI response out) and the fault -> HTTP status table are in docs/abi.md and `abi`.
"""

from wasmop.runtime.abi import FAULT_STATUS, REASON_HEADER, Fault, Request
from wasmop.runtime.compiler import check_module
from wasmop.runtime.config import EngineFeatures, FunctionConfig, Limits, RuntimeConfig
from wasmop.runtime.engine import Runtime, default_runtime
from wasmop.runtime.errors import (
    CompileError,
    FetchError,
    ForbiddenImport,
    MemoryLimitExceeded,
    MissingEntrypoint,
    ModuleError,
    ModuleTooLarge,
    NotWasm,
    RuntimeConfigError,
    UnsupportedFeature,
)
from wasmop.runtime.function import Function, InvokeStats, Response
from wasmop.runtime.loader import CompiledModule, ModuleInfo
from wasmop.runtime.server import ServerHandle, start_server

__all__ = [
    "FAULT_STATUS",
    "REASON_HEADER",
    "CompileError",
    "CompiledModule",
    "EngineFeatures",
    "Fault",
    "FetchError",
    "ForbiddenImport",
    "Function",
    "FunctionConfig",
    "InvokeStats",
    "Limits",
    "MemoryLimitExceeded",
    "MissingEntrypoint",
    "ModuleError",
    "ModuleInfo",
    "ModuleTooLarge",
    "NotWasm",
    "Request",
    "Response",
    "Runtime",
    "RuntimeConfig",
    "RuntimeConfigError",
    "ServerHandle",
    "UnsupportedFeature",
    "check_module",
    "default_runtime",
    "start_server",
]
