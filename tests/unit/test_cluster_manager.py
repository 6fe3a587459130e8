"""What `wasmop cluster up` refuses, and the one line it says, before starting anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from wasmop.cluster import manager
from wasmop.cluster.layout import StateLayout
from wasmop.cluster.settings import ClusterSettings, SettingsError


@pytest.fixture
def layout(tmp_path: Path) -> StateLayout:
    return StateLayout(tmp_path / "state")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_port_in_use_is_named(layout: StateLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        layout.root.mkdir()
        ClusterSettings(
            api_port=port,
            etcd_client_port=free_port(),
            etcd_peer_port=free_port(),
            controller_manager_port=free_port(),
            scheduler_port=free_port(),
        ).save(layout.settings_file)
        monkeypatch.setattr(manager, "check_binary", lambda: Path("/bin/true"))
        with pytest.raises(manager.ClusterError, match=f"port {port} .*kube-apiserver.* in use"):
            manager.up(layout)


def test_corrupt_settings_point_at_fresh(
    layout: StateLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout.root.mkdir()
    layout.settings_file.write_text("{not json")
    monkeypatch.setattr(manager, "check_binary", lambda: Path("/bin/true"))
    with pytest.raises(manager.ClusterError, match=r"corrupt.*--fresh"):
        manager.up(layout)


def test_corrupt_pki_points_at_fresh(layout: StateLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    layout.ensure()
    (layout.pki / "ca.crt").write_text("not a certificate")
    (layout.pki / "ca.key").write_text("not a key")
    ClusterSettings(api_port=1, etcd_client_port=2, etcd_peer_port=3).save(layout.settings_file)
    monkeypatch.setattr(manager, "check_binary", lambda: Path("/bin/true"))
    monkeypatch.setattr(manager, "check_ports", lambda settings: None)
    with pytest.raises(manager.ClusterError, match=r"corrupt: .*ca\.crt.*--fresh"):
        manager.up(layout)


def test_missing_binary_without_go_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WASMOP_CONTROLPLANE_BIN", str(tmp_path / "missing"))
    monkeypatch.setattr(manager.shutil, "which", lambda name: None)
    with pytest.raises(manager.ClusterError, match=r"Go is not installed: install Go >= 1\.26"):
        manager.check_binary()


def test_missing_binary_with_go_says_make_controlplane(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WASMOP_CONTROLPLANE_BIN", str(tmp_path / "missing"))
    monkeypatch.setattr(manager.shutil, "which", lambda name: "/usr/bin/go")
    with pytest.raises(manager.ClusterError, match=r"make controlplane"):
        manager.check_binary()


def test_settings_round_trip_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    ClusterSettings(api_port=7443).save(path)
    assert ClusterSettings.load(path) == ClusterSettings(api_port=7443)
    path.write_text('{"api_port": 1, "colour": "red"}')
    with pytest.raises(SettingsError, match=r"unknown settings colour"):
        ClusterSettings.load(path)


def test_service_ip_is_first_host_of_range() -> None:
    assert ClusterSettings(service_cidr="10.100.0.0/16").service_ip == "10.100.0.1"


def test_status_of_a_cluster_that_never_ran(layout: StateLayout) -> None:
    assert manager.supervisor_pid(layout) is None
    assert not manager.is_running(layout)
    assert manager.down(layout) is False


def test_state_dir_from_before_etcd_tls_points_at_fresh(
    layout: StateLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state dir with a plaintext etcd (no format stamp) is refused, and left as it was."""
    (layout.etcd_data / "member").mkdir(parents=True)
    ClusterSettings(api_port=free_port(), etcd_client_port=free_port()).save(layout.settings_file)
    before = sorted(p.relative_to(layout.root) for p in layout.root.rglob("*"))
    monkeypatch.setattr(manager, "check_binary", lambda: Path("/bin/true"))
    monkeypatch.setattr(manager, "check_ports", lambda settings: None)
    with pytest.raises(manager.ClusterError, match=r"older wasmop .*'wasmop cluster up --fresh'"):
        manager.up(layout)
    assert sorted(p.relative_to(layout.root) for p in layout.root.rglob("*")) == before


def test_new_state_dir_is_stamped_and_then_accepted(layout: StateLayout) -> None:
    manager.check_state_format(layout)
    assert layout.state_format.read_text().strip() == str(manager.STATE_FORMAT)
    (layout.etcd_data / "member").mkdir(parents=True)
    manager.check_state_format(layout)  # etcd data written by this format: accepted


def test_every_port_is_checked_and_shifted_together() -> None:
    settings = ClusterSettings()
    assert settings.ports()["registry"] == 5000
    assert settings.ports()["metrics-server"] == 4443
    shifted = settings.with_port_offset(200)
    assert {k: v - 200 for k, v in shifted.ports().items()} == settings.ports()
    assert shifted.registry_address == "127.0.0.1:5200"
    assert shifted.etcd_url == "https://127.0.0.1:2579"


def test_missing_cluster_service_binary_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    controlplane = tmp_path / "wasmop-controlplane"
    controlplane.write_text("")
    (tmp_path / "wasmop-registry").write_text("")
    monkeypatch.setenv("WASMOP_CONTROLPLANE_BIN", str(controlplane))
    monkeypatch.setattr(manager.shutil, "which", lambda name: "/usr/bin/go")
    with pytest.raises(manager.ClusterError, match=r"not built \(.*wasmop-metrics-server\)"):
        manager.check_binary()


def test_max_pods_is_bounded_by_a_nodes_addresses(layout: StateLayout) -> None:
    """``cluster up --max-pods`` past a node's 245 pod addresses is refused, with why."""
    assert ClusterSettings(max_pods=245).max_pods == 245
    with pytest.raises(manager.ClusterError, match=r"max_pods must be between 1 and 245"):
        manager.load_settings(layout, max_pods=246)
    with pytest.raises(SettingsError, match=r"got 0"):
        ClusterSettings(max_pods=0)


def test_a_dead_node_is_noticed_within_five_seconds_and_a_stalled_one_survives_three(
    layout: StateLayout,
) -> None:
    """The node lifecycle controller's grace and period and the agents' Lease interval
    reach the processes together: a killed node NotReady within grace + renew + period
    (under 5 s), a live one whose renewals stall for 3 s still Ready."""
    from wasmop.cluster import components

    settings = ClusterSettings()
    argv = {s.name: s.argv for s in components.control_plane(layout, settings)}
    argv.update({s.name: s.argv for s in components.workloads(layout, settings)})
    manager_argv = argv["kube-controller-manager"]
    assert "--node-monitor-grace-period=4s" in manager_argv
    assert "--node-monitor-period=250ms" in manager_argv
    for node in settings.node_names():
        flag = argv[node].index("--lease-renew-seconds")
        assert argv[node][flag + 1] == "0.5"
    grace = settings.node_monitor_grace_seconds
    renew, period = settings.lease_renew_seconds, settings.node_monitor_period_seconds
    assert grace + renew + period < 5.0
    assert grace - renew - period >= 3.0


def test_a_grace_period_a_live_node_cannot_meet_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"node_monitor_grace_seconds must exceed"):
        ClusterSettings(node_monitor_grace_seconds=2, lease_renew_seconds=1.0)
    with pytest.raises(SettingsError, match=r"both positive"):
        ClusterSettings(lease_renew_seconds=0)
