"""``experiments run --manage-cluster``: the plan's cluster settings serve its run only.

The cluster's start and stop are replaced by the settings file's real persistence (what
``manager.up`` writes before it starts anything), so the test needs no cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from wasmop.bench import cli
from wasmop.cluster import manager
from wasmop.cluster.layout import STATE_DIR_ENV, StateLayout
from wasmop.cluster.settings import ClusterSettings


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StateLayout:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    seen: list[str] = []

    def up(layout: StateLayout, **overrides: Any) -> None:
        overrides.pop("timeout", None)
        overrides.pop("progress", None)
        manager.load_settings(layout, **overrides).save(layout.settings_file)
        seen.append("up")

    monkeypatch.setattr(manager, "up", up)
    monkeypatch.setattr(manager, "down", lambda layout, timeout=60.0: seen.append("down"))
    state = StateLayout(tmp_path)
    state.root.mkdir(exist_ok=True)
    return state


def test_a_managed_run_leaves_the_users_settings_as_they_were(layout: StateLayout) -> None:
    ClusterSettings().updated(nodes=3).save(layout.settings_file)
    before = layout.settings_file.read_bytes()
    with cli.managed_cluster({"nodes": 10}):
        assert ClusterSettings.load(layout.settings_file).nodes == 10
    assert layout.settings_file.read_bytes() == before


def test_a_managed_run_on_a_new_state_dir_leaves_no_settings(layout: StateLayout) -> None:
    with cli.managed_cluster({"nodes": 10}):
        assert layout.settings_file.exists()
    assert not layout.settings_file.exists()


def test_the_settings_come_back_when_the_run_fails(layout: StateLayout) -> None:
    ClusterSettings().save(layout.settings_file)
    before = layout.settings_file.read_bytes()
    with pytest.raises(RuntimeError), cli.managed_cluster({"nodes": 10}):
        raise RuntimeError("a notebook failed")
    assert layout.settings_file.read_bytes() == before
