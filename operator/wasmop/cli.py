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
from collections.abc import Sequence

from wasmop import __version__

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
