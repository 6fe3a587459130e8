"""``wasmop gateway run``."""

from __future__ import annotations

import argparse
from pathlib import Path

from wasmop.console import listen_address, run_until_signalled


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from wasmop.gateway.activator import ActivationSettings
    from wasmop.gateway.server import GatewaySettings, serve
    from wasmop.kube import Kube, KubeConfig

    settings = GatewaySettings(
        host=listen_address(args.host),
        port=args.port,
        cold_start_wait_s=args.cold_start_wait,
        attempts=args.attempts,
        activation=ActivationSettings(
            timeout_s=args.activation_timeout,
            max_held_per_function=args.max_held_per_function,
            max_held=args.max_held,
        ),
    )

    async def main(stop: asyncio.Event) -> None:
        async with Kube(KubeConfig.load(args.kubeconfig), user_agent="wasmop-gateway") as kube:
            await serve(kube, settings, stop)

    run_until_signalled(main)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    gateway = subparsers.add_parser(
        "gateway",
        help="HTTP gateway: /<namespace>/<service>[/<path>] to a ready Pod",
        description="Routes requests to ready endpoints of a Service (from its "
        "EndpointSlices), balancing by fewest requests in flight and retrying a failed "
        "connection on another Pod. Holds requests for an idle WasmFunction (zero "
        "replicas) while it scales the function from zero. Exposes /metrics, /healthz and "
        "/-/stats.",
    )
    sub = gateway.add_subparsers(dest="gateway_command", metavar="<action>", required=True)
    run = sub.add_parser("run", help="run the gateway in the foreground")
    run.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    run.add_argument("--kubeconfig", type=Path, help="default: $KUBECONFIG or the embedded cluster")
    run.add_argument(
        "--cold-start-wait", type=float, default=5.0, help="seconds to wait for a first ready Pod"
    )
    run.add_argument("--attempts", type=int, default=3, help="Pods tried on connection failure")
    run.add_argument(
        "--activation-timeout",
        type=float,
        default=15.0,
        help="seconds a request for an idle function is held at most (default 15)",
    )
    run.add_argument(
        "--max-held-per-function",
        type=int,
        default=1000,
        help="requests held per idle function before 503 ActivationQueueFull (default 1000)",
    )
    run.add_argument(
        "--max-held",
        type=int,
        default=10000,
        help="requests held in all before 503 ActivationQueueFull (default 10000)",
    )
    run.set_defaults(handler=cmd_run)
