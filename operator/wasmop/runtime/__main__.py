"""`python -m wasmop.runtime serve|check|invoke ...`: the runtime's CLI on its own.

The container image uses this entry point so that it needs only the runtime's own
dependencies, not those of every other `wasmop` command.
"""

from __future__ import annotations

import argparse
import logging
import sys

from wasmop.cli import CommandError
from wasmop.runtime.cli import register


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    known, rest = options.parse_known_args(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m wasmop.runtime", parents=[options])
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    register(subparsers)
    args = parser.parse_args(["runtime", *rest])
    logging.basicConfig(
        level=known.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args) or 0)
    except CommandError as exc:
        sys.stderr.write(f"wasmop: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
