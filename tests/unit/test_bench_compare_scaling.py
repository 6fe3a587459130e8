"""The scaling comparison: the load's rises, reaction times, replica-seconds and the
predictive variant set against the reactive one."""

from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest
from wasmop.bench.experiments.compare_scaling import (
    comparison,
    function_names,
    load_rises,
    reaction_times,
    replica_seconds,
    variant_of,
    variant_spec,
)
from wasmop.bench.runner import expand, load_plan
from wasmop.bench.shapes import Shape, users_at
from wasmop.bench.watch import COLUMNS


def test_the_rises_of_each_shape() -> None:
    assert load_rises(Shape("step", peak=9, base=3, steps=3, duration=30)) == [10.0, 20.0]
    assert load_rises(Shape("spike", peak=9, base=3, at=5, length=5, duration=20)) == [5.0]
    ramp = load_rises(Shape("ramp", peak=4, base=1, duration=20))
    assert ramp == [4.0, 7.0, 10.0]  # up to the peak at half time, then only down


def test_a_periodic_shape_swings_between_base_and_peak() -> None:
    shape = Shape("periodic", peak=9, base=3, period=20, duration=40)
    assert users_at(shape, 0) == 3 and users_at(shape, 10) == 9 and users_at(shape, 20) == 3
    assert users_at(shape, 40) is None
    assert Shape.parse(shape.format()) == shape
    assert len(load_rises(shape)) > 2


def decisions(*moves: tuple[float, int, int]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"decided_ms": t, "from_replicas": a, "to_replicas": b} for t, a, b in moves],
        columns=["decided_ms", "from_replicas", "to_replicas"],
    )


def test_reaction_is_the_first_scale_out_after_a_rise_and_before_the_next() -> None:
    rises = [10_000.0, 20_000.0, 30_000.0]
    made = decisions(
        (9_000.0, 1, 2),  # before any rise: answers none
        (10_800.0, 2, 3),  # answers the first rise
        (12_000.0, 3, 4),  # a second scale-out in the same stair: not a reaction
        (21_000.0, 4, 3),  # a scale-in answers nothing
        (30_400.0, 3, 4),
    )
    table = reaction_times(rises, made)
    assert table["reaction_ms"].tolist()[0] == 800
    assert math.isnan(table["reaction_ms"].tolist()[1])  # unanswered rise
    assert table["reaction_ms"].tolist()[2] == 400


def test_replica_seconds_integrate_the_desired_replicas_over_the_load() -> None:
    def row(t: float, desired: int) -> dict[str, object]:
        r: dict[str, object] = dict.fromkeys(COLUMNS)
        r.update(t_ms=t, kind="WasmFunction", name="fast-0", event="MODIFIED",
                 replicas_desired=desired)  # fmt: skip
        return r

    events = pd.DataFrame([row(0, 1), row(5_000, 3), row(8_000, 2)], columns=list(COLUMNS))
    # 1 replica 2-5 s, 3 replicas 5-8 s, 2 replicas 8-10 s.
    assert replica_seconds(events, "fast-0", 2_000, 10_000) == pytest.approx(3 + 9 + 4)
    assert math.isnan(replica_seconds(events, "other", 0, 10_000))


def test_predictive_is_set_against_reactive_per_shape() -> None:
    variants = pd.DataFrame(
        [
            {"shape_index": 0, "shape": "ramp", "variant": "reactive", "over_bound": 40,
             "replica_s": 100.0},
            {"shape_index": 0, "shape": "ramp", "variant": "predictive", "over_bound": 10,
             "replica_s": 108.0},
            {"shape_index": 1, "shape": "step", "variant": "reactive", "over_bound": 0,
             "replica_s": 50.0},
            {"shape_index": 1, "shape": "step", "variant": "predictive", "over_bound": 0,
             "replica_s": 60.0},
        ]
    )  # fmt: skip
    table = comparison(variants).set_index("shape")
    assert table.loc["ramp", "over_bound_reduction_ratio"] == pytest.approx(0.75)
    assert table.loc["ramp", "replica_s_increase_ratio"] == pytest.approx(0.08)
    assert math.isnan(table.loc["step", "over_bound_reduction_ratio"])  # nothing to cut


def test_each_variant_asks_for_its_own_scaling() -> None:
    step = Shape("step")
    periodic = Shape("periodic", period=40)
    assert "reaction" not in variant_spec("reactive", step, 4, 10, 10)["scaling"]
    assert variant_spec("fast", step, 4, 10, 10)["scaling"]["reaction"] == "Fast"
    holt = variant_spec("predictive", step, 4, 10, 10)["scaling"]
    assert holt["reaction"] == "Fast" and holt["predictive"] == {"enabled": True,
                                                                 "horizonSeconds": 10}  # fmt: skip
    seasonal = variant_spec("predictive", periodic, 4, 10, 10)["scaling"]["predictive"]
    assert seasonal["model"] == "SeasonalNaive" and seasonal["seasonSeconds"] == 40
    with pytest.raises(ValueError, match="variant"):
        variant_spec("psychic", step, 4, 10, 10)


def test_a_variant_listed_twice_gets_two_functions_of_it() -> None:
    names = function_names(["reactive", "fast", "fast", "predictive"], 2)
    assert names == ["reactive-2", "fast-2", "fast-2-1", "predictive-2"]
    assert [variant_of(n) for n in names] == ["reactive", "fast", "fast", "predictive"]


def test_the_quick_plan_step_gives_the_fast_reaction_ten_rises_each_asking_one_more() -> None:
    """The reaction target needs n >= 10 from the quick plan's one comparison run: each
    rise of its step must ask every function for one more replica, its rate midway
    between two counts (users take turns over the functions: each gets exactly its
    share), within maxReplicas. The first plan of it had 2 rises and one fast function,
    whose random share of the load crossed a boundary before the second rise (n=1)."""
    [job] = [j for j in expand(load_plan("quick")) if j.parameters.get("scaling_mode") == "compare"]
    p = job.parameters
    variants = p.get("variants", ["reactive", "fast", "predictive"])  # the default
    [shape] = [Shape(**s) for s in p["shapes"]]
    # Requests/s each function gets per user (the users take turns over the functions).
    per_user = float(p.get("user_rps", 10.0)) / len(variants)
    per_replica = float(p["rps_per_replica"])
    rises = load_rises(shape)
    assert len(rises) * variants.count("fast") >= 10
    wanted = []
    for t in [0.0, *rises]:
        rate = users_at(shape, t) * per_user
        exact = rate / per_replica
        assert abs(exact - round(exact)) >= 0.25, (t, rate)  # not near a boundary
        wanted.append(math.ceil(exact))
    assert all(b == a + 1 for a, b in itertools.pairwise(wanted)), wanted
    assert wanted[-1] <= p["max_replicas"]
