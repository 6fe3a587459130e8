"""Fixtures for tests against the real embedded control plane."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def api(cluster) -> client.ApiClient:  # type: ignore[no-untyped-def]
    """An admin client of the official Python client, independent of wasmop's own code."""
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)
