"""The cluster supervisor: one background process that owns every component process.

``wasmop cluster up`` starts it detached; it starts the components in dependency order,
waits for each probe, restarts a component that dies (with back-off), takes commands on
a Unix socket (stop/start/restart one component, kill it as a crash, freeze it for a
while: fault injection for experiments), and stops everything in reverse order on
SIGTERM. Components are told to die with it
(``PR_SET_PDEATHSIG``, SIGKILL: an orphaned API server would otherwise spend a minute
retrying etcd), and each carries a marker variable so ``down`` can find strays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wasmop.cluster.components import ComponentSpec, Probe
from wasmop.cluster.layout import CLUSTER_MARKER_ENV, StateLayout
from wasmop.console import configure_logging

log = logging.getLogger("wasmop.supervisor")

PR_SET_PDEATHSIG = 1
RESTART_BACKOFF_SECONDS = (0.5, 1, 2, 4, 8, 15)


class StartFailure(Exception):
    """A component did not become ready; the message is the one line the user sees."""


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def probe_once(probe: Probe, timeout: float = 2.0) -> bool:
    """One GET; True on HTTP 200."""
    context = None
    if probe.url.startswith("https"):
        context = ssl.create_default_context(cafile=str(probe.ca) if probe.ca else None)
        if probe.ca is None:
            # Controller-manager and scheduler serve self-signed certs on loopback.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if probe.client_cert:
            context.load_cert_chain(*map(str, probe.client_cert))
    try:
        with urllib.request.urlopen(probe.url, timeout=timeout, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def listening(url: str, timeout: float = 0.2) -> bool:
    """Whether something accepts connections at the host and port of ``url``."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            return True
    except OSError:
        return False


def last_log_line(path: Path) -> str:
    """The last non-empty line of a log, to name the cause of a failure in one line."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not ln.startswith("===")]
    return lines[-1][:300] if lines else ""


@dataclass
class Component:
    """A component's live state inside the supervisor."""

    spec: ComponentSpec
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    state: str = "pending"  # pending, starting, running, restarting, stopped, failed
    restarts: int = 0
    started_at: float | None = None
    held: bool = False  # stopped on purpose: do not restart until told
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def summary(self) -> dict[str, Any]:
        return {
            "pid": self.process.pid if self.process and self.process.returncode is None else None,
            "state": self.state,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "log": str(self.log_path),
            "address": self.spec.address,
        }


class Supervisor:
    def __init__(self, layout: StateLayout, specs: list[ComponentSpec]) -> None:
        self.layout = layout
        self.components = {s.name: Component(s, layout.log_for(s.name)) for s in specs}
        self.state = "starting"
        self.message = ""
        self.started = time.time()
        self.ready_seconds: float | None = None
        self._shutdown = asyncio.Event()
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._thaws: dict[str, asyncio.Task[None]] = {}
        # Processes finishing their shutdown after a restart, and their reapers.
        self._retired: dict[asyncio.subprocess.Process, asyncio.Task[None]] = {}

    # --- status ---------------------------------------------------------------------

    def write_status(self) -> None:
        status = {
            "pid": os.getpid(),
            "state": self.state,
            "message": self.message,
            "started_at": self.started,
            "ready_seconds": self.ready_seconds,
            "components": {name: c.summary() for name, c in self.components.items()},
        }
        tmp = self.layout.supervisor_status.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2))
        tmp.replace(self.layout.supervisor_status)

    # --- processes ------------------------------------------------------------------

    async def _spawn(self, c: Component) -> None:
        env = dict(os.environ)
        env.update(c.spec.env)
        env[CLUSTER_MARKER_ENV] = str(self.layout.root)
        with c.log_path.open("ab") as logf:
            logf.write(
                f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {c.spec.name}\n".encode()
            )
            logf.flush()
            c.process = await asyncio.create_subprocess_exec(
                *c.spec.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )
        c.started_at = time.time()
        c.state = "starting"
        c.ready.clear()
        log.info("started %s (pid %d)", c.spec.name, c.process.pid)
        self.write_status()

    async def _wait_ready(self, c: Component) -> None:
        deadline = time.monotonic() + c.spec.start_timeout_seconds
        assert c.process is not None
        while True:
            if c.process.returncode is not None:
                cause = last_log_line(c.log_path)
                raise StartFailure(
                    f"{c.spec.name} exited with status {c.process.returncode} while starting"
                    + (f": {cause}" if cause else "")
                    + f" (log: {c.log_path})"
                )
            if c.spec.probe is None or await asyncio.to_thread(probe_once, c.spec.probe):
                break
            if time.monotonic() > deadline:
                raise StartFailure(
                    f"{c.spec.name} not ready after {c.spec.start_timeout_seconds:.0f} s"
                    f" (log: {c.log_path})"
                )
            await asyncio.sleep(0.1)
        c.state = "running"
        c.ready.set()
        self.write_status()

    async def _start(self, c: Component) -> None:
        for dep in c.spec.after:
            await self.components[dep].ready.wait()
        await self._spawn(c)
        if c.spec.oneshot:
            await self._run_to_completion(c)
            return
        await self._wait_ready(c)
        self._watchers[c.spec.name] = asyncio.create_task(self._watch(c))

    async def _run_to_completion(self, c: Component) -> None:
        assert c.process is not None
        try:
            code = await asyncio.wait_for(c.process.wait(), c.spec.start_timeout_seconds)
        except TimeoutError:
            await self._terminate(c, signal.SIGKILL)
            raise StartFailure(
                f"{c.spec.name} did not finish in {c.spec.start_timeout_seconds:.0f} s"
                f" (log: {c.log_path})"
            ) from None
        if code != 0:
            cause = last_log_line(c.log_path)
            raise StartFailure(
                f"{c.spec.name} failed with status {code}"
                + (f": {cause}" if cause else "")
                + f" (log: {c.log_path})"
            )
        c.state = "completed"
        c.ready.set()
        self.write_status()

    async def _watch(self, c: Component) -> None:
        """Restart the component whenever it exits unexpectedly."""
        attempt = 0
        while not self._shutdown.is_set():
            assert c.process is not None
            code = await c.process.wait()
            if self._shutdown.is_set() or c.held:
                return
            delay = RESTART_BACKOFF_SECONDS[min(attempt, len(RESTART_BACKOFF_SECONDS) - 1)]
            log.warning("%s exited with %s; restarting in %.1f s", c.spec.name, code, delay)
            c.state = "restarting"
            c.restarts += 1
            self.write_status()
            await asyncio.sleep(delay)
            if self._shutdown.is_set() or c.held:
                return
            await self._spawn(c)
            try:
                await self._wait_ready(c)
                attempt = 0
            except StartFailure as exc:
                log.error("%s", exc)
                attempt += 1

    async def _terminate(self, c: Component, sig: int = signal.SIGTERM) -> None:
        proc = c.process
        if proc is None or proc.returncode is not None:
            return
        self._thaw(c)  # a stopped process would not act on SIGTERM
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), c.spec.stop_timeout_seconds)
        except TimeoutError:
            log.warning("%s did not stop in time; killing it", c.spec.name)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def _running(self, name: str) -> asyncio.subprocess.Process:
        proc = self.components[name].process
        if proc is None or proc.returncode is not None:
            raise ValueError(f"{name} is not running")
        return proc

    def kill_component(self, name: str) -> None:
        """SIGKILL, as a crash: unless held, the watcher starts it again after its
        back-off, as a kubelet or systemd would."""
        self._running(name).kill()

    def freeze_component(self, name: str, seconds: float) -> None:
        """SIGSTOP now and SIGCONT after ``seconds``, sent from here so that a client that
        goes away cannot leave the component frozen."""
        if not 0 < seconds <= 600:
            raise ValueError("a freeze lasts between 0 and 600 seconds")
        c = self.components[name]
        self._running(name).send_signal(signal.SIGSTOP)
        c.state = "frozen"
        self.write_status()

        async def thaw_later() -> None:
            await asyncio.sleep(seconds)
            self._thaw(c)

        previous = self._thaws.pop(name, None)
        if previous is not None:
            previous.cancel()
        self._thaws[name] = asyncio.create_task(thaw_later())

    def _thaw(self, c: Component) -> None:
        task = self._thaws.pop(c.spec.name, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        if c.state != "frozen":
            return
        if c.process is not None and c.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                c.process.send_signal(signal.SIGCONT)
        c.state = "running"
        self.write_status()

    async def stop_component(self, name: str, sig: int = signal.SIGTERM) -> None:
        c = self.components[name]
        c.held = True
        watcher = self._watchers.pop(name, None)
        if watcher:
            watcher.cancel()
        await self._terminate(c, sig)
        c.state = "stopped"
        c.ready.clear()
        self.write_status()

    async def retire_component(self, name: str) -> None:
        """Stop a component for a restart, but wait only until it has stopped listening:
        the rest of its shutdown runs beside its successor's start, and it is killed
        after its stop timeout."""
        c = self.components[name]
        if c.spec.probe is None:
            await self.stop_component(name)
            return
        c.held = True
        watcher = self._watchers.pop(name, None)
        if watcher:
            watcher.cancel()
        proc = c.process
        if proc is not None and proc.returncode is None:
            self._thaw(c)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + c.spec.stop_timeout_seconds
            while proc.returncode is None and time.monotonic() < deadline:
                if not await asyncio.to_thread(listening, c.spec.probe.url):
                    break
                await asyncio.sleep(0.05)
            if proc.returncode is None:
                reaper = asyncio.create_task(self._reap(proc, c.spec.stop_timeout_seconds))
                self._retired[proc] = reaper
        c.process = None
        c.state = "stopped"
        c.ready.clear()
        self.write_status()

    async def _reap(self, proc: asyncio.subprocess.Process, grace: float) -> None:
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        finally:
            self._retired.pop(proc, None)

    async def start_component(self, name: str) -> None:
        c = self.components[name]
        if c.process is not None and c.process.returncode is None:
            return
        c.held = False
        await self._spawn(c)
        await self._wait_ready(c)
        self._watchers[name] = asyncio.create_task(self._watch(c))

    async def stop_all(self) -> None:
        self.state = "stopping"
        self._shutdown.set()
        self.write_status()
        for watcher in self._watchers.values():
            watcher.cancel()
        for proc in list(self._retired):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for c in reversed(list(self.components.values())):
            await self._terminate(c)
            c.state = "stopped"
        self.write_status()

    # --- control socket -------------------------------------------------------------

    async def _handle_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            request = json.loads(await reader.readline())
            reply = await self._command(request)
        except (ValueError, KeyError) as exc:
            reply = {"ok": False, "error": str(exc)}
        except StartFailure as exc:
            reply = {"ok": False, "error": str(exc)}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
        writer.close()

    async def _command(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "status":
            return {"ok": True, "components": {n: c.summary() for n, c in self.components.items()}}
        name = request["name"]
        if name not in self.components:
            raise KeyError(f"no component named {name!r}")
        if op == "stop":
            await self.stop_component(name, getattr(signal, f"SIG{request.get('signal', 'TERM')}"))
        elif op == "start":
            await self.start_component(name)
        elif op == "restart":
            if self.components[name].spec.restart_once_unbound:
                await self.retire_component(name)
            else:
                await self.stop_component(name)
            await self.start_component(name)
        elif op == "kill":
            self.kill_component(name)
        elif op == "freeze":
            self.freeze_component(name, float(request["seconds"]))
        elif op == "thaw":
            self._thaw(self.components[name])
        else:
            raise ValueError(f"unknown operation {op!r}")
        return {"ok": True, "component": self.components[name].summary()}

    # --- main -----------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._shutdown.set)
        self.layout.control_socket.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(
            self._handle_control, path=str(self.layout.control_socket)
        )
        self.write_status()
        starts = [asyncio.create_task(self._start(c)) for c in self.components.values()]
        stop_wait = asyncio.create_task(self._shutdown.wait())
        await asyncio.wait(
            [asyncio.gather(*starts), stop_wait], return_when=asyncio.FIRST_COMPLETED
        )
        failure = next(
            (t.exception() for t in starts if t.done() and not t.cancelled() and t.exception()),
            None,
        )
        if failure is None and not self._shutdown.is_set():
            self.state = "running"
            self.ready_seconds = time.time() - self.started
            log.info("cluster ready in %.2f s", self.ready_seconds)
            self.write_status()
            await self._shutdown.wait()
        for task in starts:
            task.cancel()
        stop_wait.cancel()
        server.close()
        await self.stop_all()
        self.layout.control_socket.unlink(missing_ok=True)
        if failure is not None:
            self.state = "failed"
            self.message = str(failure)
            self.write_status()
            return 1
        self.state = "stopped"
        self.write_status()
        return 0


def build_specs(layout: StateLayout) -> list[ComponentSpec]:
    """Every component this cluster runs, from its persisted settings."""
    from wasmop.cluster import addons, components
    from wasmop.cluster.settings import ClusterSettings

    settings = ClusterSettings.load(layout.settings_file) or ClusterSettings()
    # Stopped in reverse: workloads first, the control plane last.
    return (
        components.control_plane(layout, settings)
        + addons.specs(layout, settings)
        + components.workloads(layout, settings)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Supervise the embedded cluster (internal).")
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    configure_logging()
    layout = StateLayout(args.state_dir.resolve())
    layout.supervisor_pid.write_text(f"{os.getpid()}\n")
    try:
        return asyncio.run(Supervisor(layout, build_specs(layout)).run())
    finally:
        layout.supervisor_pid.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
