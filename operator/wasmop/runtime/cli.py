"""`wasmop runtime ...`: serve, check or invoke a module from the command line.

    wasmop runtime serve --module functions/build/hello.wasm --port 18080
    wasmop runtime check --module functions/build/sqlite.wasm --json
    wasmop runtime invoke --module functions/build/fib.wasm --query n=20

`serve` binds to 127.0.0.1 unless `--host` says otherwise (the container image passes
0.0.0.0) and stops gracefully on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from wasmop.console import CommandError, exit_after_grace
from wasmop.oci import (
    AuthConfigError,
    DockerConfig,
    ImageReference,
    ReferenceError,
    RegistryClient,
    RegistryError,
)
from wasmop.runtime import (
    EngineFeatures,
    FunctionConfig,
    Limits,
    ModuleError,
    Request,
    Runtime,
    RuntimeConfig,
    RuntimeConfigError,
    check_module,
)
from wasmop.runtime.loader import decode_module_bytes, digest_of
from wasmop.runtime.podenv import PodEnvironment, from_env
from wasmop.runtime.server import start_server

DEFAULT_PORT = 8080
log = logging.getLogger("wasmop.runtime.cli")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "runtime",
        help="serve, check or invoke a WebAssembly function with wasmtime",
        description="The wasmtime function runtime (WASI preview 1, WAGI-style HTTP).",
    )
    commands = parser.add_subparsers(dest="runtime_command", metavar="<runtime command>")

    serve = commands.add_parser("serve", help="serve modules over HTTP")
    _module_args(serve, multiple=True, required=False)
    serve.add_argument(
        "--from-env",
        action="store_true",
        help="take the module, limits and grants from the Pod's WASMOP_* variables "
        "(what the operator's Deployment sets; see wasmop.runtime.podenv)",
    )
    _limit_args(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8080)")
    serve.add_argument("--max-concurrency", type=int, default=4, help="per function")
    serve.add_argument("--max-queue", type=int, default=64, help="per function")
    serve.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="grant an env var"
    )
    serve.set_defaults(handler=_serve)

    check = commands.add_parser("check", help="check a module against the runtime's policy")
    _module_args(check, multiple=False)
    _limit_args(check)
    check.add_argument("--compile", action="store_true", help="also compile and link it")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(handler=_check)

    invoke = commands.add_parser("invoke", help="run one request in-process and print it")
    _module_args(invoke, multiple=False)
    _limit_args(invoke)
    invoke.add_argument("--method", default="GET")
    invoke.add_argument("--path", default="/")
    invoke.add_argument("--query", default="")
    invoke.add_argument("-H", "--header", action="append", default=[], metavar="NAME: VALUE")
    invoke.add_argument("--data", default=None, help="request body")
    invoke.add_argument("--data-file", type=Path, default=None, help="request body from a file")
    invoke.add_argument("-i", "--include", action="store_true", help="print status and headers")
    invoke.set_defaults(handler=_invoke)

    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])


def _module_args(parser: argparse.ArgumentParser, multiple: bool, required: bool = True) -> None:
    parser.add_argument(
        "--module",
        required=required,
        action="append" if multiple else "store",
        help="a .wasm file (plain or gzip) or an http(s)/file URL"
        + ("; repeat to serve several under /<name>/" if multiple else ""),
    )
    parser.add_argument(
        "--name", default=None, help="function name (default: the module's file name)"
    )
    parser.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME=on|off",
        help="engine feature, e.g. simd=off (see EngineFeatures)",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="precompiled module cache")


def _limit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout-s", type=float, default=None, help="CPU bound per request")
    parser.add_argument("--memory-mib", type=float, default=None, help="linear memory cap")
    parser.add_argument("--output-mib", type=float, default=None, help="stdout cap")


def _runtime_config(args: argparse.Namespace) -> RuntimeConfig:
    features: dict[str, bool] = {}
    for item in args.feature:
        name, _, value = item.partition("=")
        if value.lower() not in ("on", "off", "true", "false", "1", "0"):
            raise CommandError(f"--feature {item}: expected NAME=on or NAME=off")
        features[name] = value.lower() in ("on", "true", "1")
    try:
        return RuntimeConfig(
            features=EngineFeatures.from_mapping(features), cache_dir=args.cache_dir
        )
    except RuntimeConfigError as exc:
        raise CommandError(str(exc)) from exc


def _limits(args: argparse.Namespace) -> Limits:
    values: dict[str, float] = {}
    if args.timeout_s is not None:
        values["timeout_s"] = args.timeout_s
    if args.memory_mib is not None:
        values["memory_mib"] = args.memory_mib
    if args.output_mib is not None:
        values["output_mib"] = args.output_mib
    try:
        return Limits.from_mapping(values)
    except RuntimeConfigError as exc:
        raise CommandError(str(exc)) from exc


def default_name(source: str) -> str:
    """hello.wasm -> hello; https://x/y/SQLite.wasm.gz -> sqlite."""
    stem = source.rstrip("/").rsplit("/", 1)[-1]
    for suffix in (".gz", ".wasm"):
        stem = stem.removesuffix(suffix)
    name = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")
    return name or "function"


def _serve(args: argparse.Namespace) -> int:
    try:  # uvloop roughly halves the event loop's share of an HTTP request
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but optional here
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve_async(args))


async def _plan_from_env() -> tuple[list[tuple[str | bytes, FunctionConfig]], RuntimeConfig]:
    """One function, configured by the WASMOP_* variables of the Pod it runs in; its
    module mounted (WASMOP_MODULE_PATH) or pulled by digest (WASMOP_MODULE_IMAGE)."""
    try:
        pod = from_env(os.environ, os.environ.get("WASMOP_FUNCTION", "function"))
    except RuntimeConfigError as exc:
        raise CommandError(str(exc)) from exc
    config = RuntimeConfig(
        features=pod.features,
        consume_fuel=pod.consume_fuel,
        max_module_bytes=pod.max_module_bytes,
    )
    if pod.module_image:
        return [(await _pull_module(pod, config), pod.function)], config
    if not pod.module_path:
        raise CommandError("--from-env: neither WASMOP_MODULE_PATH nor WASMOP_MODULE_IMAGE is set")
    return [(pod.module_path, pod.function)], config


async def _pull_module(pod: PodEnvironment, config: RuntimeConfig) -> bytes:
    """The Pod's module image, pulled by digest with the mounted credentials and checked
    against the digest the operator validated."""
    try:
        ref = ImageReference.parse(pod.module_image)
        credentials = await asyncio.to_thread(_read_credentials, pod.registry_auth)
    except (ReferenceError, AuthConfigError, OSError) as exc:
        raise CommandError(f"--from-env: {exc}") from exc
    try:
        async with RegistryClient(credentials=credentials, user_agent="wasmop-runtime") as client:
            data = (await client.pull(ref, config.max_module_bytes)).data
        wasm, _ = decode_module_bytes(data, config.max_module_bytes, config.max_compression_ratio)
    except RegistryError as exc:
        raise CommandError(f"pulling {ref}: {exc.reason}: {exc.message}") from exc
    except ModuleError as exc:
        raise CommandError(f"{ref}: {exc}") from exc
    if pod.module_digest and digest_of(wasm) != pod.module_digest:
        raise CommandError(f"{ref} holds another module than the Pod pins ({pod.module_digest})")
    return data


def _read_credentials(paths: tuple[str, ...]) -> DockerConfig:
    return DockerConfig.merged(DockerConfig.parse(Path(path).read_bytes()) for path in paths)


async def _serve_async(args: argparse.Namespace) -> int:
    env: dict[str, str] = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"--env {item}: expected NAME=VALUE")
        env[name] = value
    if args.from_env:
        plan = await _plan_from_env()
    else:
        if not args.module:
            raise CommandError("give --module (or --from-env inside a function's Pod)")
        if args.name and len(args.module) > 1:
            raise CommandError("--name works with a single --module")
        limits = _limits(args)
        plan = (
            [
                (
                    source,
                    FunctionConfig(
                        name=args.name or default_name(source),
                        limits=limits,
                        env=env,
                        max_concurrency=args.max_concurrency,
                        max_queue=args.max_queue,
                    ),
                )
                for source in args.module
            ],
            _runtime_config(args),
        )
    with contextlib.suppress(ValueError):
        if not ipaddress.ip_address(args.host).is_loopback:
            log.warning("binding to %s: reachable from outside this host", args.host)
    sources, runtime_config = plan
    runtime = Runtime(runtime_config)
    try:
        functions = []
        for source, config in sources:
            try:
                module = await runtime.load_async(source, config.limits)
            except (ModuleError, RuntimeConfigError) as exc:
                raise CommandError(f"{source}: {exc}") from exc
            functions.append(runtime.function(module, config))
        try:
            handle = await start_server(functions, host=args.host, port=args.port)
        except OSError as exc:
            raise CommandError(f"cannot listen on {args.host}:{args.port}: {exc}") from exc
        for function in functions:
            sys.stdout.write(
                f"serving {function.name} ({function.digest[:12]}) on "
                f"{handle.url_for(function.name if handle.prefix_routing else None)}\n"
            )
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
            exit_after_grace()  # running requests end at their deadline; this is the backstop
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await handle.stop()
            for function in functions:
                await function.aclose()
    finally:
        await runtime.aclose()
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        info = check_module(
            args.module,
            config=_runtime_config(args),
            limits=_limits(args),
            compile=args.compile,
        )
    except ModuleError as exc:
        if args.json:
            sys.stdout.write(json.dumps({"ok": False, **exc.to_dict()}, indent=2) + "\n")
        else:
            sys.stderr.write(f"{args.module}: {exc.reason}: {exc.message}\n")
        return 1
    if args.json:
        sys.stdout.write(json.dumps({"ok": True, **info.to_dict()}, indent=2) + "\n")
    else:
        compressed = f" ({info.compressed_size} gzip)" if info.compressed_size else ""
        sys.stdout.write(
            f"{args.module}: ok\n"
            f"  digest   sha256:{info.digest}\n"
            f"  size     {info.size} bytes{compressed}\n"
            f"  memory   {info.memory_min_bytes} bytes initial\n"
            f"  imports  {', '.join(str(i) for i in info.imports) or '-'}\n"
            f"  exports  {', '.join(e.name for e in info.exports)}\n"
        )
    return 0


def _invoke(args: argparse.Namespace) -> int:
    body = b""
    if args.data is not None:
        body = args.data.encode()
    elif args.data_file is not None:
        body = args.data_file.read_bytes()
    headers = []
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep:
            raise CommandError(f"-H {item}: expected 'Name: value'")
        headers.append((name.strip(), value.strip()))
    with Runtime(_runtime_config(args)) as runtime:
        try:
            function = runtime.function(
                args.module,
                FunctionConfig(name=args.name or default_name(args.module), limits=_limits(args)),
            )
        except ModuleError as exc:
            raise CommandError(f"{args.module}: {exc.reason}: {exc.message}") from exc
        response = function.invoke_sync(
            Request(
                method=args.method, path=args.path, query=args.query, headers=headers, body=body
            )
        )
    if args.include:
        sys.stdout.write(f"HTTP/1.1 {response.status}\n")
        for name, value in response.headers:
            sys.stdout.write(f"{name}: {value}\n")
        sys.stdout.write("\n")
    sys.stdout.flush()
    sys.stdout.buffer.write(response.body)
    sys.stdout.flush()
    return 0 if response.fault is None else 1
