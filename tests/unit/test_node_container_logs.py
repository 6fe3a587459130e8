"""Container logs on a node: the CRI line format, rotation within a bound, and reads as
``kubectl logs`` asks for them (tail, since, timestamps, previous, limit, follow)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from wasmop.node.container_logs import (
    ContainerLog,
    LogLimits,
    LogOptions,
    LogQueryError,
    encode_lines,
    format_timestamp,
    parse_timestamp,
    pod_log_directory,
    remove_orphans,
)

T0 = 1_764_000_000 * 1_000_000_000  # a fixed moment, in ns


async def read_all(log: ContainerLog, options: LogOptions, instance: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in log.read(options, instance)])


def test_timestamps_round_trip_with_nanoseconds() -> None:
    stamp = format_timestamp(T0 + 123_456_789)
    assert stamp == "2025-11-24T16:00:00.123456789Z"
    assert parse_timestamp(stamp) == T0 + 123_456_789
    assert parse_timestamp("2025-11-24T17:00:00.5+01:00") == T0 + 500_000_000
    assert parse_timestamp("2025-11-24T16:00:00Z") == T0
    assert parse_timestamp("yesterday") is None


def test_lines_are_cri_entries_and_long_lines_are_split() -> None:
    encoded = encode_lines("stderr", b"one\ntwo\n", T0)
    assert encoded.splitlines() == [
        b"2025-11-24T16:00:00.000000000Z stderr F one",
        b"2025-11-24T16:00:00.000000000Z stderr F two",
    ]
    long = encode_lines("stdout", b"x" * (16 * 1024 + 5), T0).splitlines()
    assert [line.split(b" ")[2] for line in long] == [b"P", b"F"]
    assert len(long[1].split(b" ", 3)[3]) == 5


def test_query_parameters_as_the_kubelet_reads_them() -> None:
    now = T0
    options = LogOptions.from_query(
        {"follow": "true", "tailLines": "5", "sinceSeconds": "10", "timestamps": "1"}, now
    )
    assert options == LogOptions(
        follow=True, tail_lines=5, since_ns=now - 10 * 10**9, timestamps=True
    )
    assert LogOptions.from_query({"sinceTime": "2025-11-24T16:00:00Z"}, now).since_ns == T0
    for bad in (
        {"tailLines": "-1"},
        {"tailLines": "many"},
        {"follow": "perhaps"},
        {"sinceSeconds": "0"},
        {"sinceTime": "noon"},
        {"sinceSeconds": "5", "sinceTime": "2025-11-24T16:00:00Z"},
        {"limitBytes": "0"},
    ):
        with pytest.raises(LogQueryError):
            LogOptions.from_query(bad, now)


def test_tail_since_timestamps_and_limit(tmp_path: Path) -> None:
    log = ContainerLog(tmp_path / "c")
    log.start_instance(0)
    for i in range(5):
        log.write("stdout", f"line {i}", now_ns=T0 + i * 10**9)
    log.write("stderr", b"oops\n", now_ns=T0 + 5 * 10**9)

    def read(**options: object) -> bytes:
        return asyncio.run(read_all(log, LogOptions(**options)))  # type: ignore[arg-type]

    assert read() == b"line 0\nline 1\nline 2\nline 3\nline 4\noops\n"
    assert read(tail_lines=2) == b"line 4\noops\n"
    assert read(tail_lines=0) == b""
    assert read(since_ns=T0 + 4 * 10**9) == b"line 4\noops\n"
    assert read(tail_lines=1, timestamps=True) == b"2025-11-24T16:00:05.000000000Z oops\n"
    assert read(limit_bytes=9) == b"line 0\nli"


def test_rotation_keeps_the_container_within_its_bound(tmp_path: Path) -> None:
    limits = LogLimits(max_file_bytes=1024, max_files=3)
    log = ContainerLog(tmp_path / "c", limits)
    log.start_instance(0)
    for i in range(200):
        log.write("stdout", f"request {i:04d} " + "x" * 40)
    log.flush()
    files = log.files()
    assert len(files) == 3
    assert sum(f.stat().st_size for f in files) <= 3 * 1024
    text = asyncio.run(read_all(log, LogOptions()))
    assert text.endswith(b"request 0199 " + b"x" * 40 + b"\n")  # the newest survive
    assert b"request 0000 " not in text  # the oldest were rotated away
    numbers = [int(line.split()[1]) for line in text.splitlines()]
    assert numbers == sorted(numbers) and numbers == list(range(numbers[0], 200))


def test_previous_instance_is_kept_and_read_apart(tmp_path: Path) -> None:
    log = ContainerLog(tmp_path / "c")
    log.start_instance(0)
    log.write("stdout", "first life")
    log.end_instance()
    log.start_instance(1)
    log.write("stdout", "second life")
    assert log.instances() == [0, 1]
    assert asyncio.run(read_all(log, LogOptions())) == b"second life\n"
    assert asyncio.run(read_all(log, LogOptions(), instance=0)) == b"first life\n"
    log.remove()
    assert not (tmp_path / "c").exists()


def test_follow_streams_new_lines_until_the_container_stops(tmp_path: Path) -> None:
    async def scenario() -> list[bytes]:
        log = ContainerLog(tmp_path / "c", LogLimits(max_file_bytes=1024, max_files=5))
        log.start_instance(0)
        log.write("stdout", "before")
        got: list[bytes] = []

        async def follow() -> None:
            async for chunk in log.read(LogOptions(follow=True)):
                got.append(chunk)

        reader = asyncio.create_task(follow())
        await asyncio.sleep(0.05)
        for i in range(40):  # enough to rotate the file under the follower
            log.write("stdout", f"during {i:02d} " + "y" * 30)
            await asyncio.sleep(0)
        await asyncio.sleep(0.3)
        log.end_instance()
        await asyncio.wait_for(reader, 5)
        return got

    lines = b"".join(asyncio.run(scenario())).splitlines()
    assert lines[0] == b"before"
    assert [line.split()[1] for line in lines[1:]] == [f"{i:02d}".encode() for i in range(40)]


def test_orphaned_pod_directories_are_removed(tmp_path: Path) -> None:
    keep = pod_log_directory(tmp_path, "ns", "a", "uid-a")
    gone = pod_log_directory(tmp_path, "ns", "b", "uid-b")
    for directory in (keep, gone):
        (directory / "function").mkdir(parents=True)
    assert remove_orphans(tmp_path, {"uid-a"}) == [gone]
    assert keep.exists() and not gone.exists()
