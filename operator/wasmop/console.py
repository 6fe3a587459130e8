"""What every wasmop command line shares: its error, ``--state-dir``, logging and runner.

The root ``wasmop`` command (:mod:`wasmop.cli`) only dispatches to each area's ``cli``
module, ``python -m wasmop.runtime`` runs one area alone, and the cluster's own processes
(bootstrap, supervisor) log in the same format; all of them import these helpers from
here, so no command line imports another.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from wasmop.cluster.layout import StateLayout
from wasmop.wellknown import BIND_LOOPBACK_ENV

LOG_LEVELS = ("debug", "info", "warning", "error")


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default="info",
        choices=LOG_LEVELS,
        help="log verbosity (default: info)",
    )


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="embedded cluster state directory (default: $WASMOP_STATE_DIR or .wasmop in the"
        " checkout)",
    )


def layout_from(args: argparse.Namespace) -> StateLayout:
    """The embedded cluster's state layout that ``--state-dir`` names (or the default)."""
    return StateLayout(args.state_dir.resolve()) if args.state_dir else StateLayout.default()


def configure_logging(level: str = "info") -> None:
    """One log line format for every wasmop process (components log to files the
    supervisor collects, so a shared shape keeps them greppable together)."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def listen_address(requested: str) -> str:
    """Where a server binds: as asked, except that a wildcard means loopback in a
    host-process Pod (it shares the machine's network; see ``wasmop.node.host_process``)."""
    import os

    if os.environ.get(BIND_LOOPBACK_ENV) and requested in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return requested


def extra_providing(module: str) -> str | None:
    """The wasmop extra that installs the distribution of a top-level ``module``, if any
    (read from the installed package's metadata, so it cannot disagree with pyproject)."""
    try:
        requirements = requires("wasmop") or []
    except PackageNotFoundError:
        return None
    wanted = module.lower().replace("_", "-")
    for requirement in requirements:
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
        extra = re.search(r"extra\s*==\s*[\"']([^\"']+)", requirement)
        if extra and name.lower().replace("_", "-") == wanted:
            return extra.group(1)
    return None


def run_handler(args: argparse.Namespace, log_level: str) -> int:
    """Set up logging and run a parsed command: one line on stderr for a CommandError, or
    for a dependency that belongs to an extra this installation lacks."""
    configure_logging(log_level)
    try:
        return int(args.handler(args) or 0)
    except CommandError as exc:
        sys.stderr.write(f"wasmop: error: {exc}\n")
        return 1
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        if not package or package == "wasmop":
            raise
        extra = extra_providing(package)
        hint = f"pip install 'wasmop[{extra}]'" if extra else "install it"
        sys.stderr.write(f"wasmop: error: this command needs {package}, not installed: {hint}\n")
        return 1
    except KeyboardInterrupt:
        return 130


# How long a service may take to stop after SIGTERM before it is ended regardless.
SHUTDOWN_GRACE_S = 60.0


def exit_after_grace(grace_s: float = SHUTDOWN_GRACE_S, code: int = 1) -> None:
    """The last resort of a graceful stop: end the process after ``grace_s`` even if
    something (a thread that does not return, a hung cleanup) still holds it."""

    def expire() -> None:
        time.sleep(grace_s)
        sys.stderr.write(f"shutdown did not finish within its {grace_s:g} s grace period\n")
        sys.stderr.flush()
        os._exit(code)

    threading.Thread(target=expire, name="exit-after-grace", daemon=True).start()


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a long-lived service; SIGTERM or SIGINT sets the event it stops on, and the
    process ends at the latest `SHUTDOWN_GRACE_S` later."""

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stopping() -> None:
            if not stop.is_set():
                exit_after_grace()
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping)
        await main(stop)

    asyncio.run(run())
