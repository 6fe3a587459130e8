"""The function mix string and the load shapes shared by notebooks and locustfiles."""

from __future__ import annotations

import pytest
from wasmop.bench.mix import MixError, Rotation, format_mix, parse_mix
from wasmop.bench.net import TargetNotAllowed, check_target
from wasmop.bench.shapes import Shape, ShapeError, schedule, users_at


def test_mix_entries_with_paths_queries_and_weights() -> None:
    entries = parse_mix("bench/hello@3, bench/fib?n=20 ,bench/echo/items/7?v=1@0.5")
    assert [e.name for e in entries] == ["bench/hello", "bench/fib", "bench/echo"]
    assert [e.weight for e in entries] == [3.0, 1.0, 0.5]
    assert entries[1].target == "/bench/fib/?n=20"
    assert entries[2].target == "/bench/echo/items/7?v=1"
    assert parse_mix(format_mix(entries)) == entries


@pytest.mark.parametrize(
    "text", ["", "hello", "bench/hello@x", "bench/hello@0", "Bench/hello", "bench/he_llo"]
)
def test_bad_mixes_are_refused(text: str) -> None:
    with pytest.raises(MixError):
        parse_mix(text)


def test_step_shape_climbs_in_stairs_and_ends() -> None:
    shape = Shape("step", peak=10, base=1, duration=40, steps=4)
    assert [users_at(shape, t) for t in (0, 9.9, 10, 20, 30, 39.9)] == [1, 1, 4, 7, 10, 10]
    assert users_at(shape, 40) is None


def test_spike_and_ramp_and_constant_shapes() -> None:
    spike = Shape("spike", peak=20, base=2, duration=30, at=10, length=5)
    assert [users_at(spike, t) for t in (0, 10, 14.9, 15, 29)] == [2, 20, 20, 2, 2]
    ramp = Shape("ramp", peak=11, base=1, duration=20)
    values = [users_at(ramp, t) for t in range(20)]
    assert values[0] == 1 and max(values) == 11 and values[10] == 11
    assert values == sorted(values[:11]) + sorted(values[11:], reverse=True)
    assert users_at(Shape("constant", peak=5, duration=3), 2) == 5
    assert [u for _, u in schedule(Shape("constant", peak=5, duration=3))] == [5, 5, 5]


def test_shape_strings_round_trip_and_refuse_nonsense() -> None:
    shape = Shape.parse("spike:peak=30,at=5,length=10,duration=40")
    assert shape == Shape("spike", peak=30, at=5.0, length=10.0, duration=40.0)
    assert Shape.parse(shape.format()) == shape
    assert Shape.parse("ramp") == Shape("ramp")
    for text in ("wave:peak=3", "step:peak", "step:colour=red", "step:peak=x", "step:duration=0"):
        with pytest.raises(ShapeError):
            Shape.parse(text)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "http://localhost:1/x", "http://10.244.1.7:8080/", "http://[::1]:80"],
)
def test_loopback_and_own_namespaces_are_allowed(url: str) -> None:
    assert check_target(url) == url


@pytest.mark.parametrize(
    "url", ["http://example.com", "http://10.0.0.1:80", "http://192.168.1.1", "https://8.8.8.8"]
)
def test_any_other_target_is_refused(url: str) -> None:
    with pytest.raises(TargetNotAllowed):
        check_target(url)


def test_a_rotation_gives_each_entry_its_share_in_every_stretch() -> None:
    """Locust users picking in turns: every window of sum(weights) turns holds each
    function its weight, so a function's rate never wanders from its share."""
    turns = Rotation([3, 1]).next
    picks = [turns() for _ in range(40)]
    for start in range(len(picks) - 4):
        window = picks[start : start + 4]
        assert window.count(0) == 3 and window.count(1) == 1, picks
    even = Rotation([1, 1, 1, 1]).next
    assert sorted(even() for _ in range(4)) == [0, 1, 2, 3]


def test_users_started_one_after_another_begin_their_turns_apart() -> None:
    firsts = [Rotation([1, 1, 1], start=serial).next() for serial in range(6)]
    assert firsts == [0, 1, 2, 0, 1, 2]
    with pytest.raises(MixError):
        Rotation([])
    with pytest.raises(MixError):
        Rotation([1, 0])
