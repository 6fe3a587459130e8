"""Container logs on a node: bounded, rotated files per container, read as a kubelet reads
them for ``kubectl logs``.

Each container of a Pod has a directory ``<root>/<namespace>_<pod>_<uid>/<container>/``
(the kubelet's ``/var/log/pods`` layout) holding one file per container instance, named
by the container's restart count (``0.log``, ``1.log``, ...). Lines are in the CRI
logging format the kubelet itself reads::

    2026-11-30T17:56:00.123456789Z stdout F serving module sha256:2b6f... on 10.244.1.10:8080

A file that grows past ``max_file_bytes`` is renamed to ``<instance>.log.<k>`` and a new
one is started; the oldest files of the container are removed so that it keeps at most
``max_files``. The disk a container can use is therefore bounded, whatever it writes.

Writes happen on the agent's event loop (a function server's request hook, a host
process's output reader); they are buffered and flushed within ``FLUSH_S``, and a
follower (``kubectl logs -f``) is woken by each flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import shutil
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# The CRI splits longer lines into partial ("P") entries; the last piece is full ("F").
MAX_LINE_BYTES = 16 * 1024
FLUSH_S = 0.1
# A follower checks for rotation and the end of its container at least this often.
FOLLOW_POLL_S = 1.0
STREAMS = ("stdout", "stderr")
_ROTATED = re.compile(r"^(\d+)\.log\.(\d+)$")
_CURRENT = re.compile(r"^(\d+)\.log$")


@dataclass(frozen=True)
class LogLimits:
    """How much log a container may keep (the kubelet's containerLogMaxSize/MaxFiles)."""

    max_file_bytes: int = 1024 * 1024
    max_files: int = 3

    def __post_init__(self) -> None:
        if self.max_file_bytes < 1024 or self.max_files < 1:
            raise ValueError("container logs need max_file_bytes >= 1024 and max_files >= 1")


class LogQueryError(ValueError):
    """A /containerLogs query parameter the kubelet would refuse; the message says which."""


@dataclass(frozen=True)
class LogOptions:
    """What ``kubectl logs`` asks for (the kubelet's PodLogOptions)."""

    follow: bool = False
    tail_lines: int | None = None
    since_ns: int | None = None  # only lines at or after this time (ns since the epoch)
    timestamps: bool = False
    previous: bool = False
    limit_bytes: int | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str], now_ns: int | None = None) -> LogOptions:
        """From the query string the API server forwards; bad values raise LogQueryError."""
        now_ns = time.time_ns() if now_ns is None else now_ns

        def flag(name: str) -> bool:
            value = query.get(name, "false").lower()
            if value not in ("true", "false", "1", "0", ""):
                raise LogQueryError(f"{name} must be true or false, got {query[name]!r}")
            return value in ("true", "1")

        def count(name: str, minimum: int) -> int | None:
            if name not in query:
                return None
            try:
                value = int(query[name])
            except ValueError:
                raise LogQueryError(f"{name} must be an integer, got {query[name]!r}") from None
            if value < minimum:
                raise LogQueryError(f"{name} must be >= {minimum}, got {value}")
            return value

        since_ns = None
        seconds = count("sinceSeconds", 1)
        if seconds is not None:
            since_ns = now_ns - seconds * 1_000_000_000
        if "sinceTime" in query:
            if seconds is not None:
                raise LogQueryError("at most one of sinceTime or sinceSeconds may be given")
            since_ns = parse_timestamp(query["sinceTime"])
            if since_ns is None:
                raise LogQueryError(f"sinceTime must be RFC 3339, got {query['sinceTime']!r}")
        return cls(
            follow=flag("follow"),
            tail_lines=count("tailLines", 0),
            since_ns=since_ns,
            timestamps=flag("timestamps"),
            previous=flag("previous"),
            limit_bytes=count("limitBytes", 1),
        )


def format_timestamp(ns: int) -> str:
    """RFC 3339 with nanoseconds, UTC, as CRI log lines carry it."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def parse_timestamp(text: str) -> int | None:
    """ns since the epoch of an RFC 3339 time (any fraction, Z or an offset); None if bad."""
    match = re.match(
        r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$", text.strip()
    )
    if not match:
        return None
    whole, fraction, zone = match.groups()
    try:
        moment = dt.datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    return int(moment.timestamp()) * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


@dataclass(frozen=True)
class LogLine:
    """One CRI log entry."""

    time_ns: int
    stream: str
    partial: bool
    content: bytes

    @classmethod
    def parse(cls, raw: bytes) -> LogLine | None:
        parts = raw.rstrip(b"\n").split(b" ", 3)
        if len(parts) < 3:
            return None
        when = parse_timestamp(parts[0].decode("ascii", errors="replace"))
        if when is None:
            return None
        content = parts[3] if len(parts) == 4 else b""
        return cls(when, parts[1].decode("ascii", errors="replace"), parts[2] == b"P", content)

    def render(self, timestamps: bool) -> bytes:
        """As the kubelet returns it: the content, optionally after its timestamp."""
        prefix = format_timestamp(self.time_ns).encode() + b" " if timestamps else b""
        return prefix + self.content + (b"" if self.partial else b"\n")


def encode_lines(stream: str, data: bytes, now_ns: int) -> bytes:
    """``data`` as CRI entries: one per line, long lines split into partial pieces."""
    stamp = format_timestamp(now_ns).encode()
    head = stamp + b" " + stream.encode()
    out = []
    text = data[:-1] if data.endswith(b"\n") else data
    for line in text.split(b"\n"):
        while len(line) > MAX_LINE_BYTES:
            out.append(head + b" P " + line[:MAX_LINE_BYTES] + b"\n")
            line = line[MAX_LINE_BYTES:]
        out.append(head + b" F " + line + b"\n")
    return b"".join(out)


class ContainerLog:
    """The log files of one container; written by the agent, read by /containerLogs."""

    def __init__(self, directory: Path, limits: LogLimits | None = None) -> None:
        self.directory = directory
        self.limits = limits or LogLimits()
        self.instance: int | None = None  # the container instance being written
        self._file: IO[bytes] | None = None
        self._size = 0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()  # set and replaced on every flush

    # --- writing ----------------------------------------------------------------

    def start_instance(self, instance: int) -> None:
        """A new container instance (its restart count) starts writing ``<instance>.log``."""
        self.end_instance()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.instance = instance
        path = self.current_path(instance)
        self._file = path.open("ab")
        self._size = self._file.tell()
        self._prune()
        self._notify()

    def write(self, stream: str, data: bytes | str, now_ns: int | None = None) -> None:
        """Append ``data`` (one or more lines) to the running instance's log."""
        if self._file is None or not data:
            return
        if isinstance(data, str):
            data = data.encode("utf-8", errors="replace")
        entry = encode_lines(stream, data, time.time_ns() if now_ns is None else now_ns)
        if self._size + len(entry) > self.limits.max_file_bytes and self._size > 0:
            self._rotate()
        assert self._file is not None
        self._file.write(entry)
        self._size += len(entry)
        self._schedule_flush()

    def end_instance(self) -> None:
        """The instance stopped: flush, close its file, wake followers so they end."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.instance = None
        self._cancel_flush()
        self._notify()

    def remove(self) -> None:
        """The Pod is gone: its logs go with it (as the kubelet removes them)."""
        self.end_instance()
        shutil.rmtree(self.directory, ignore_errors=True)

    def flush(self) -> None:
        self._cancel_flush()
        if self._file is not None:
            self._file.flush()
        self._notify()

    def current_path(self, instance: int) -> Path:
        return self.directory / f"{instance}.log"

    def _schedule_flush(self) -> None:
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_handle = loop.call_later(FLUSH_S, self.flush)

    def _cancel_flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _rotate(self) -> None:
        assert self._file is not None and self.instance is not None
        self._file.close()
        rotated = [k for i, k in self._rotated_files() if i == self.instance]
        current = self.current_path(self.instance)
        current.rename(current.with_name(f"{current.name}.{max(rotated, default=0) + 1}"))
        self._file = current.open("ab")
        self._size = 0
        self._prune()
        self._notify()

    def _rotated_files(self) -> list[tuple[int, int]]:
        found = []
        for path in self.directory.iterdir() if self.directory.exists() else ():
            match = _ROTATED.match(path.name)
            if match:
                found.append((int(match.group(1)), int(match.group(2))))
        return sorted(found)

    def _prune(self) -> None:
        """Keep at most max_files: the oldest instance's oldest pieces go first."""
        files = self.files()
        for path in files[: max(0, len(files) - self.limits.max_files)]:
            if self.instance is None or path != self.current_path(self.instance):
                path.unlink(missing_ok=True)

    # --- reading ----------------------------------------------------------------

    def files(self, instance: int | None = None) -> list[Path]:
        """Log files oldest first (all instances, or one): rotated pieces, then current."""
        if not self.directory.exists():
            return []
        order = []
        for path in self.directory.iterdir():
            rotated, current = _ROTATED.match(path.name), _CURRENT.match(path.name)
            if rotated:
                key = (int(rotated.group(1)), int(rotated.group(2)))
            elif current:
                key = (int(current.group(1)), 1 << 62)
            else:
                continue
            if instance is None or key[0] == instance:
                order.append((key, path))
        return [path for _, path in sorted(order)]

    def instances(self) -> list[int]:
        """Container instances that still have a log file, oldest first."""
        return sorted({int(p.name.split(".", 1)[0]) for p in self.files()})

    async def read(self, options: LogOptions, instance: int | None = None) -> AsyncIterator[bytes]:
        """The log of one instance (default: the running or last one), as options ask;
        with ``follow``, new lines until the instance ends or the caller stops reading."""
        self.flush()
        instance = self.instance if instance is None else instance
        if instance is None:
            known = self.instances()
            if not known:
                return
            instance = known[-1]
        budget = options.limit_bytes
        current = self.current_path(instance)
        handle: IO[bytes] | None = None
        lines: deque[bytes] | list[bytes] = (
            deque(maxlen=options.tail_lines) if options.tail_lines is not None else []
        )
        for path in self.files(instance):
            try:
                f = path.open("rb")
            except FileNotFoundError:
                continue
            for raw in f:
                lines.append(raw)
            if path == current:
                handle = f  # kept open: a follower goes on from here
            else:
                f.close()

        async def selected() -> AsyncIterator[bytes]:
            for raw in lines:
                chunk = _select(raw, options)
                if chunk is not None:
                    yield chunk
            if options.follow:
                async for chunk in self._follow(instance, handle, options):
                    yield chunk

        try:
            async with contextlib.aclosing(selected()) as chunks:
                async for chunk in chunks:
                    if budget is not None:
                        chunk = chunk[:budget]
                        budget -= len(chunk)
                    yield chunk
                    if budget is not None and budget <= 0:
                        return
        finally:
            if handle is not None:
                handle.close()

    async def _follow(
        self, instance: int, handle: IO[bytes] | None, options: LogOptions
    ) -> AsyncIterator[bytes]:
        current = self.current_path(instance)
        pending = b""
        while True:
            if handle is None:
                with contextlib.suppress(FileNotFoundError):
                    handle = current.open("rb")
            if handle is not None:
                data = pending + handle.read()
                *complete, pending = data.split(b"\n")
                for raw in complete:
                    chunk = _select(raw + b"\n", options)
                    if chunk is not None:
                        yield chunk
                rotated = _inode(current) != os.fstat(handle.fileno()).st_ino
                if rotated:  # drained the renamed file: go on with the new one
                    handle.close()
                    handle, pending = None, b""
                    continue
            if self.instance != instance:
                return  # the instance ended and everything it wrote was read
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), FOLLOW_POLL_S)


def _select(raw: bytes, options: LogOptions) -> bytes | None:
    line = LogLine.parse(raw)
    if line is None:
        return None
    if options.since_ns is not None and line.time_ns < options.since_ns:
        return None
    return line.render(options.timestamps)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def pod_log_directory(root: Path, namespace: str, name: str, uid: str) -> Path:
    """Where one Pod's container logs live (the kubelet's /var/log/pods naming)."""
    return root / f"{namespace}_{name}_{uid}"


def remove_orphans(root: Path, keep_uids: set[str]) -> list[Path]:
    """Remove log directories of Pods this node no longer runs; returns what went."""
    removed = []
    for path in root.iterdir() if root.exists() else ():
        if path.is_dir() and path.name.rsplit("_", 1)[-1] not in keep_uids:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
