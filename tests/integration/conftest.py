"""Fixtures for tests against the real embedded control plane."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config
from wasmop.operator.install import function_namespace_binding

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def api(cluster) -> client.ApiClient:  # type: ignore[no-untyped-def]
    """An admin client of the official Python client, independent of wasmop's own code."""
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace per test where the operator may run WasmFunctions (its
    RoleBinding, as `wasmop operator install --function-namespace` makes), deleted
    afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
        name, function_namespace_binding(name)
    )
    yield name
    core.delete_namespace(name)
