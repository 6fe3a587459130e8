"""The `wasmop` command line.

Each area of the project contributes its own subcommands from a `cli` module with a
`register(subparsers)` function; heavy imports stay inside the command handlers so that
`wasmop --help` and quick commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wasmop import __version__

if TYPE_CHECKING:
    import asyncio

    from wasmop.cluster.layout import StateLayout

# Subcommand groups, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "wasmop.cluster.cli",
    "wasmop.runtime.cli",
    "wasmop.node.cli",
    "wasmop.gateway.cli",
    "wasmop.operator.cli",
    "wasmop.bench.cli",
)


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wasmop",
        description=(
            "Deploy, scale and benchmark WebAssembly functions on Kubernetes. "
            "Run 'wasmop <command> --help' for the options of each command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"wasmop {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: info)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["kubectl"]:
        # kubectl's own flags (including --help) pass through untouched.
        from wasmop.cluster.cli import run_kubectl

        return run_kubectl(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return run_handler(args, args.log_level)


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="embedded cluster state directory (default: $WASMOP_STATE_DIR or .wasmop in the"
        " checkout)",
    )


def layout_from(args: argparse.Namespace) -> StateLayout:
    """The embedded cluster's state layout that ``--state-dir`` names (or the default)."""
    from wasmop.cluster.layout import StateLayout

    return StateLayout(args.state_dir.resolve()) if args.state_dir else StateLayout.default()


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a long-lived service; SIGTERM or SIGINT sets the event it stops on."""
    import asyncio
    import signal

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(run())


def configure_logging(level: str = "info") -> None:
    """One log line format for every wasmop process (components log to files the
    supervisor collects, so a shared shape keeps them greppable together)."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_handler(args: argparse.Namespace, log_level: str) -> int:
    """Set up logging and run a parsed command: one line on stderr for a CommandError."""
    configure_logging(log_level)
    try:
        return int(args.handler(args) or 0)
    except CommandError as exc:
        sys.stderr.write(f"wasmop: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
