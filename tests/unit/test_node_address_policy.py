"""Node agents pull module images from registries a tenant names, so they judge every
address by the same policy as the operator's module URLs and registry pulls, and
``cluster up --module-url-allow`` widens it for both."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from wasmop.cluster import components
from wasmop.cluster.layout import StateLayout
from wasmop.cluster.settings import ClusterSettings
from wasmop.node import cli as node_cli
from wasmop.node.agent import NodeSettings


def node_settings(**policy: tuple[str, ...]) -> NodeSettings:
    return NodeSettings(
        name="wasm-node-1",
        pod_cidr="10.244.1.0/24",
        kubeconfig=Path("/nonexistent"),
        registry_allow=("127.0.0.1:5000",),
        **policy,
    )


def test_a_nodes_pulls_reach_an_allowed_range_and_nothing_else_private() -> None:
    default = node_settings().registry_policy()
    allowed = node_settings(module_url_allow=("10.9.0.0/16",)).registry_policy()
    denied = node_settings(module_url_deny=("8.8.8.0/24",)).registry_policy()
    assert default.check("registry.tenant", 443, "10.9.1.2") is not None
    assert allowed.check("registry.tenant", 443, "10.9.1.2") is None
    assert allowed.check("registry.tenant", 443, "10.8.1.2") is not None
    assert allowed.check("registry.tenant", 443, "169.254.169.254") is not None
    assert default.check("registry.tenant", 443, "8.8.8.8") is None
    assert denied.check("registry.tenant", 443, "8.8.8.8") is not None
    # The cluster's own registry, named by --registry-allow, stays reachable.
    assert default.check("127.0.0.1", 5000, "127.0.0.1") is None
    with pytest.raises(ValueError):
        node_settings(module_url_allow=("not-a-cidr",)).registry_policy()


def test_the_node_command_takes_the_address_policy() -> None:
    parser = argparse.ArgumentParser()
    node_cli.register(parser.add_subparsers())
    args = parser.parse_args(
        ["node", "run", "--name", "n", "--pod-cidr", "10.244.1.0/24",
         "--module-url-allow", "127.0.0.1/32", "--module-url-deny", "8.8.8.0/24"]
    )  # fmt: skip
    assert args.module_url_allow == ["127.0.0.1/32"]
    assert args.module_url_deny == ["8.8.8.0/24"]


def test_cluster_up_passes_its_module_url_allow_to_every_node(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    settings = ClusterSettings(module_url_allow=("127.0.0.1/32",))
    argv = {s.name: s.argv for s in components.workloads(layout, settings)}
    for node in [*settings.node_names(), settings.system_node_name]:
        assert "--module-url-allow=127.0.0.1/32" in argv[node]
    # The operator, a Pod, reads it from its settings ConfigMap.
    (operator_settings,) = [
        o for o in components.system_node_objects(settings) if o["kind"] == "ConfigMap"
    ]
    assert operator_settings["data"]["WASMOP_MODULE_URL_ALLOW"] == "127.0.0.1/32"
    plain = {s.name: s.argv for s in components.workloads(layout, ClusterSettings())}
    for node in settings.node_names():
        assert not any(a.startswith("--module-url-allow") for a in plain[node])
