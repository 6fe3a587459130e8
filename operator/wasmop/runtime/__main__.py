"""`python -m wasmop.runtime serve|check|invoke ...`: the runtime's CLI on its own.

The container image uses this entry point so that it needs only the runtime's own
dependencies, not those of every other `wasmop` command.
"""

from __future__ import annotations

import argparse
import sys

from wasmop.console import add_log_level, run_handler
from wasmop.runtime.cli import register


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(add_help=False)
    add_log_level(options)
    known, rest = options.parse_known_args(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m wasmop.runtime", parents=[options])
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    register(subparsers)
    args = parser.parse_args(["runtime", *rest])
    return run_handler(args, known.log_level)


if __name__ == "__main__":
    sys.exit(main())
