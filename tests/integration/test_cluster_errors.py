"""A component that cannot start gets one clear line naming it and its log."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from wasmop.cluster import manager
from wasmop.cluster.layout import StateLayout
from wasmop.cluster.settings import ClusterSettings

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scratch_settings() -> ClusterSettings:
    """A second cluster beside the session's: its own ports, no wasm nodes and no system
    node (whose name, network and the operator's ports are the session cluster's)."""
    return ClusterSettings(
        api_port=free_port(),
        etcd_client_port=free_port(),
        etcd_peer_port=free_port(),
        controller_manager_port=free_port(),
        scheduler_port=free_port(),
        gateway_port=free_port(),
        operator_metrics_port=free_port(),
        operator_health_port=free_port(),
        registry_port=free_port(),
        metrics_server_port=free_port(),
        nodes=0,
        system_node=False,
    )


def test_failed_component_is_named_with_its_log(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path / "state")
    layout.root.mkdir()
    scratch_settings().save(layout.settings_file)
    layout.etcd_data.write_text("a file where etcd expects its data directory")
    try:
        with pytest.raises(manager.ClusterError) as failure:
            manager.up(layout, timeout=60)
        message = str(failure.value)
        assert message.startswith("etcd exited with status")
        assert str(layout.log_for("etcd")) in message
        assert "\n" not in message
    finally:
        manager.down(layout)
    assert manager._processes_of(layout) == []
    assert manager.supervisor_pid(layout) is None


def test_supervisor_killed_takes_components_with_it(tmp_path: Path) -> None:
    import os
    import signal
    import time

    layout = StateLayout(tmp_path / "state")
    layout.root.mkdir()
    scratch_settings().save(layout.settings_file)
    try:
        manager.up(layout, timeout=120)
        pid = manager.supervisor_pid(layout)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while manager._processes_of(layout) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert manager._processes_of(layout) == []
    finally:
        manager.down(layout)
