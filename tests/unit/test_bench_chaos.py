"""The chaos soak's pure parts: its seeded schedule, how a window's recovery is judged, and
its analysis of a run recorded on the embedded cluster."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from wasmop.bench.experiments.base import RawData
from wasmop.bench.experiments.chaos import (
    CHANGES,
    EVENT_KINDS,
    FAULTS,
    HELD,
    analyse_chaos,
    burst_manifests,
    event_windows,
    health_timeline,
    module_replacing,
    orphaned_modules,
    plan_schedule,
    recovery_by_kind,
    settled_timeline,
    window_recovery,
)
from wasmop.bench.run import ratios_from_counts
from wasmop.wellknown import FUNCTION_LABEL

RECORDED = RawData(Path(__file__).parent / "recorded_runs" / "chaos" / "recorded")
FUNCTIONS = ["fn-000", "fn-001", "fn-002"]
NODES = ["wasm-node-1", "wasm-node-2"]


def test_the_soak_has_the_issues_faults_and_changes() -> None:
    assert set(FAULTS) == {
        "pod-crash", "pod-delete", "node-kill", "operator-kill", "apiserver-restart",
        "etcd-kill", "node-partition", "node-freeze", "bad-rollout",
    }  # fmt: skip
    assert set(CHANGES) == {"rollout", "scale-out", "scale-in"}


def test_a_seed_names_one_schedule() -> None:
    first = plan_schedule(7, FUNCTIONS, NODES, rounds=3)
    assert first == plan_schedule(7, FUNCTIONS, NODES, rounds=3)
    assert first != plan_schedule(8, FUNCTIONS, NODES, rounds=3)
    assert [e.index for e in first] == list(range(3 * len(EVENT_KINDS)))


def test_every_kind_once_per_round_and_a_scale_in_after_its_scale_out() -> None:
    for seed in range(20):
        events = plan_schedule(seed, FUNCTIONS, NODES, rounds=2, gap_s=(1.0, 2.0))
        for round_ in (0, 1):
            kinds = [e.kind for e in events if e.round == round_]
            assert sorted(kinds) == sorted(EVENT_KINDS)
            out = next(e for e in events if e.round == round_ and e.kind == "scale-out")
            into = next(e for e in events if e.round == round_ and e.kind == "scale-in")
            assert out.index < into.index and out.function == into.function
        for event in events:
            assert 1.0 <= event.gap_s <= 2.0
            assert (event.hold_s > 0) == (event.kind in HELD)
            assert event.function in FUNCTIONS and event.node in NODES


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="node-melt"):
        plan_schedule(1, FUNCTIONS, NODES, kinds=["pod-crash", "node-melt"])


def events(*rows: tuple[float, str, str, bool]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"t_ms": t, "kind": kind, "name": name, "event": "MODIFIED", "ready": ready}
         for t, kind, name, ready in rows]
    )  # fmt: skip


def samples(*rows: tuple[float, bool, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"t_ms": t, "api_ok": api, "gateway_ok": True, "operator_ok": True, "nodes_down": down}
         for t, api, down in rows]
    )  # fmt: skip


def test_recovery_runs_from_the_anchor_to_the_last_return_to_health() -> None:
    settled = settled_timeline(
        events(
            (0, "WasmFunction", "a", True), (0, "Deployment", "a", True),
            (1100, "Deployment", "a", False),  # a Pod deleted
            (1300, "Deployment", "a", True),
            (1500, "Deployment", "a", False),  # and again, later in the same window
            (2500, "Deployment", "a", True),
        )
    )  # fmt: skip
    timeline = health_timeline(settled, samples((0, True, float("nan"))), [])
    assert window_recovery(timeline, 1000, 1000, 9000) == (1100, 1500)
    assert window_recovery(timeline, 3000, 3000, 9000) == (None, 0.0), "nothing noticed"
    assert window_recovery(timeline, 1000, 1000, 2000) == (1100, None), "ended unhealthy"


def test_a_held_fault_recovers_from_its_end_and_an_exempt_node_does_not_count() -> None:
    settled = settled_timeline(events((0, "WasmFunction", "a", True), (0, "Deployment", "a", True)))
    health = samples(
        (0, True, ""), (1000, True, "wasm-node-1"), (5000, True, "wasm-node-1"), (5200, True, "")
    )
    held = health_timeline(settled, health, [])
    # Cut at 1000, healed at 5000 (the anchor): healthy again 200 ms later.
    assert window_recovery(held, 900, 5000, 9000) == (1000, 200)
    killed = health_timeline(settled, health, ["wasm-node-1"])
    assert window_recovery(killed, 900, 900, 9000) == (None, 0.0)


def test_a_function_without_its_deployment_is_not_settled() -> None:
    settled = settled_timeline(
        events((0, "WasmFunction", "a", True), (0, "Deployment", "a", True),
               (10, "WasmFunction", "burst", False), (20, "WasmFunction", "burst", True),
               (30, "Deployment", "burst", True))
    )  # fmt: skip
    assert [ok for _, ok in settled] == [False, True, False, False, True]


def test_windows_count_the_requests_sent_in_them() -> None:
    injected = pd.DataFrame(
        [{"index": 0, "kind": "rollout", "target": "a", "start_ms": 1000, "anchor_ms": 1000,
          "exempt_nodes": []}]
    )  # fmt: skip
    requests = pd.DataFrame(
        {"timestamp_ms": [10, 500, 1000, 1500, 2500], "ok": [True] * 4 + [False]}
    )
    settled = settled_timeline(events((0, "WasmFunction", "a", True), (0, "Deployment", "a", True)))
    windows = event_windows(injected, settled, samples((0, True, "")), requests, 0, 3000)
    assert list(windows["kind"]) == ["steady", "rollout"]
    assert list(windows["requests"]) == [2, 3]
    assert list(windows["failed_requests"]) == [0, 1]
    by_kind = recovery_by_kind(windows)
    assert by_kind.iloc[0]["kind"] == "rollout" and by_kind.iloc[0]["failed_requests"] == 1


def test_the_recorded_soak() -> None:
    result = analyse_chaos(RECORDED)
    windows = result.tables["windows"]
    kinds = set(RECORDED.parameters["kinds"])
    assert set(windows["kind"]) == kinds | {"steady"}
    assert windows.loc[windows["kind"] != "steady", "recovery_ms"].notna().all()
    pod_delete = windows[windows["kind"] == "pod-delete"].iloc[0]
    assert pod_delete["degraded_ms"] > 0 and pod_delete["recovery_ms"] > 0, "seen and timed"
    assert result.tables["invariants"]["holds"].all()
    counts = result.counts
    assert counts["chaos_requests_total"] == windows["requests"].sum() > 0
    assert counts["drain_requests_total"] > 0
    assert counts["chaos_invariants_held"] == counts["chaos_invariants_total"] == 6
    recovery = [o for o in result.observations if o.metric == "recovery_ms"]
    assert {o.context["fault"] for o in recovery} == kinds & set(FAULTS)
    stats = ratios_from_counts(counts)
    assert stats["chaos_success_ratio"]["n"] == counts["chaos_requests_total"]
    assert stats["drain_failed_requests"]["value"] == counts["drain_requests_failed"]
    assert set(result.figures) == {"chaos_timeline", "chaos_recovery", "chaos_requests_lost"}


def test_the_summary_pools_the_soaks_windows() -> None:
    from wasmop.bench import report, summary

    runs = report.runs(RECORDED.folder.parent.parent)
    pooled = summary.summarise(runs)
    by_kind = pooled.analysis.tables["chaos_by_kind"]
    assert set(by_kind["kind"]) == set(RECORDED.parameters["kinds"])
    assert {"chaos_recovery", "chaos_requests_lost"} <= set(pooled.analysis.figures)
    labels = set(pooled.analysis.tables["targets"]["target"])
    assert {"Success rate under chaos", "Recovery time: pod-delete"} <= labels


def test_a_shared_module_configmap_is_orphaned_only_when_no_function_names_it() -> None:
    def configmap(name: str, function: str | None = None) -> dict:  # type: ignore[type-arg]
        labels = {FUNCTION_LABEL: function} if function else {}
        return {"metadata": {"name": name, "labels": labels}}

    def function(name: str, *configmaps: str) -> dict:  # type: ignore[type-arg]
        revisions = [{"configMap": c} for c in configmaps]
        return {"metadata": {"name": name}, "status": {"revisions": revisions}}

    functions = [function("a", "wasm-module-1"), function("b", "wasm-module-1", "b-old")]
    modules = [
        configmap("wasm-module-1"),  # shared by a and b
        configmap("wasm-module-2"),  # shared, named by none
        configmap("b-old", "b"),  # b's own
        configmap("a-old", "a"),  # a's own, which a no longer names
    ]
    assert orphaned_modules(modules, functions) == ["wasm-module-2", "a-old"]


def test_a_bad_rollout_replaces_the_modules_source_whichever_it_was() -> None:
    bad = module_replacing({"configMapRef": {"name": "wasm-badimport"}})
    assert bad == {"image": None, "configMapRef": {"name": "wasm-badimport"}, "url": None,
                   "inline": None}  # fmt: skip
    good = module_replacing({"image": "127.0.0.1:5000/hello:1", "sha256": "ab"})
    assert good["image"] == "127.0.0.1:5000/hello:1" and good["configMapRef"] is None
    assert good["sha256"] == "ab"


def test_a_burst_takes_the_soaks_module_source() -> None:
    """The operator-kill burst's functions were made with the default ConfigMap source,
    which the soak's namespace no longer holds since modules come from the registry: they
    stayed Pending and every later window timed out."""
    module = {"image": "127.0.0.1:5000/wasm/hello:sha-0123456789ab"}
    manifests = burst_manifests(["burst-00-0", "burst-00-1"], "hello", 2, module)
    assert [m["metadata"]["name"] for m in manifests] == ["burst-00-0", "burst-00-1"]
    assert all(m["spec"]["module"] == module and m["spec"]["replicas"] == 2 for m in manifests)
