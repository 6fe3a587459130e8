"""Shared fixtures.

The embedded cluster is started once per test session, only when a test asks for it,
and stopped at the end only if this session started it (a cluster that was already up
is reused and left running).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from wasmop.cluster import manager
from wasmop.cluster.layout import StateLayout


@dataclass(frozen=True)
class ClusterHandle:
    layout: StateLayout

    @property
    def kubeconfig(self) -> Path:
        return self.layout.admin_kubeconfig


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    if os.environ.get("KUBECONFIG"):
        pytest.fail(
            "integration tests run against the embedded cluster; unset KUBECONFIG "
            "(it points at another cluster)"
        )
    layout = StateLayout.default()
    started = not manager.is_running(layout)
    manager.up(layout, timeout=180)
    yield ClusterHandle(layout)
    if started:
        manager.down(layout)
