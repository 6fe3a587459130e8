"""The `wasmop` command line: a dispatcher and nothing more.

Each area of the project contributes its own subcommands from a `cli` module with a
`register(subparsers)` function; the helpers they share (errors, `--state-dir`, logging,
the runner) are in :mod:`wasmop.console`. The area modules are imported by name when the
parser is built, and heavy imports stay inside their command handlers, so `wasmop --help`
and quick commands start fast and `wasmop kubectl` imports none of them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from wasmop import __version__
from wasmop.console import add_log_level, run_handler

# Subcommand groups, in the order `--help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "wasmop.cluster.cli",
    "wasmop.runtime.cli",
    "wasmop.node.cli",
    "wasmop.gateway.cli",
    "wasmop.operator.cli",
    "wasmop.bench.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wasmop",
        description=(
            "Deploy, scale and benchmark WebAssembly functions on Kubernetes. "
            "Run 'wasmop <command> --help' for the options of each command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"wasmop {__version__}")
    add_log_level(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["kubectl"]:
        # kubectl's own flags (including --help) pass through untouched.
        return importlib.import_module("wasmop.cluster.cli").run_kubectl(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return run_handler(args, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
