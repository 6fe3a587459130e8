"""Events the platform posts, against the real API server: a repeated occurrence is one
Event series with a count, as Kubernetes' own recorders keep them (issue 11)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from wasmop.kube import Kube, KubeConfig
from wasmop.kube.events import EventRecorder

pytestmark = pytest.mark.integration


async def test_a_repeated_occurrence_is_one_event_with_a_count(cluster, namespace: str) -> None:  # type: ignore[no-untyped-def]
    """Five readiness failures in a row make one Event counting five, as Kubernetes' own
    recorders do (before: five Events); a different message is an Event of its own."""
    async with Kube(KubeConfig.load(cluster.kubeconfig)) as kube:
        recorder = EventRecorder(kube, "wasmop-test", "test")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "flaky", "namespace": namespace, "uid": str(uuid.uuid4())},
        }
        for _ in range(5):
            recorder.record(pod, "Unhealthy", "Readiness probe failed: 503", warning=True)
            await asyncio.sleep(0.05)
        recorder.record(pod, "Unhealthy", "Readiness probe failed: timeout", warning=True)
        await recorder.drain()
        listed = await kube.list(
            f"/api/v1/namespaces/{namespace}/events",
            fieldSelector="involvedObject.name=flaky",
        )
    counts = sorted((e["message"], e["count"]) for e in listed["items"])
    assert counts == [
        ("Readiness probe failed: 503", 5),
        ("Readiness probe failed: timeout", 1),
    ]
