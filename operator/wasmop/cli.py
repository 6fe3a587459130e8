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

# Subcommand groups and the commands each registers, in the order `--help` lists them.
COMMAND_MODULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("wasmop.cluster.cli", ("cluster", "kubectl")),
    ("wasmop.runtime.cli", ("runtime",)),
    ("wasmop.node.cli", ("node",)),
    ("wasmop.gateway.cli", ("gateway",)),
    ("wasmop.operator.cli", ("operator",)),
    ("wasmop.bench.cli", ("experiments",)),
    ("wasmop.oci.cli", ("push",)),
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
    for name, commands in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if (exc.name or "wasmop").split(".")[0] == "wasmop":
                raise
            for command in commands:  # an extra is not installed: say so when it is used
                _unavailable(subparsers, command, exc)
            continue
        module.register(subparsers)
    return parser


def _unavailable(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    command: str,
    missing: ModuleNotFoundError,
) -> None:
    parser = subparsers.add_parser(
        command, help=f"(not installed: needs {missing.name})", add_help=False
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER)

    def handler(_: argparse.Namespace) -> int:
        raise missing

    parser.set_defaults(handler=handler)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["kubectl"]:
        # kubectl's own flags (including --help) pass through untouched.
        return int(importlib.import_module("wasmop.cluster.cli").run_kubectl(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return run_handler(args, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
