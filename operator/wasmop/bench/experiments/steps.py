"""Steps the experiments share on a live cluster: a namespace of their own, a recorder
whose events always land in ``raw/``, deploying functions and waiting until they serve.

Only ``run_*`` functions use this module; analyses never touch a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from wasmop.bench import deploy, probe, watch
from wasmop.bench.experiments.base import WATCH_EVENTS
from wasmop.bench.run import ExperimentRun
from wasmop.bench.session import BenchSession

log = logging.getLogger(__name__)


def namespace_name(experiment: str) -> str:
    """A fresh namespace per run: ``x-<experiment>-<6 hex>`` (a DNS label)."""
    stem = "".join(c if c.isalnum() else "-" for c in experiment.lower()).strip("-")[:40]
    return f"x-{stem or 'run'}-{secrets.token_hex(3)}"


@dataclass
class Workspace:
    """A namespace for one run, created on entry and deleted on exit."""

    session: BenchSession
    experiment: str
    cleanup: bool = True
    delete_wait_s: float = 60.0

    def __post_init__(self) -> None:
        self.namespace = namespace_name(self.experiment)

    def __enter__(self) -> Workspace:
        labels = {deploy.EXPERIMENT_LABEL: self.experiment}
        self.session.run(deploy.create_namespace(self.session.kube, self.namespace, labels))
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.cleanup:
            return
        try:
            self.session.run(
                deploy.clear_namespace(self.session.kube, self.namespace, self.delete_wait_s)
            )
        except Exception:
            if exc_type is None:
                raise
            # Never hide why the experiment failed behind a failed cleanup.
            log.exception("cleaning up namespace %s failed", self.namespace)


@contextlib.contextmanager
def recording(
    session: BenchSession, run: ExperimentRun, namespace: str
) -> Iterator[watch.Recorder]:
    """A recorder whose events always end up in ``raw/watch_events.csv``, also when the
    experiment fails half-way (that is when they are needed most)."""
    with session.recorder(namespace) as rec:
        try:
            yield rec
        finally:
            run.write_raw(WATCH_EVENTS, rec.table())


def deploy_workload(
    session: BenchSession,
    namespace: str,
    names: Sequence[str],
    workload: str,
    recorder: watch.Recorder,
    *,
    mode: str,
    replicas: int,
    timeout_s: float,
    spec: dict[str, Any] | None = None,
    source: str = "image",
    module: bytes | None = None,
) -> list[deploy.DeployOutcome]:
    """``workload`` under each name at once, as WasmFunctions (``mode="operator"``) or
    hand-written Deployments (``"plain"``); waits until each is ready or timed out.

    WasmFunctions take their module from ``source`` (the registry by default, or a
    ConfigMap); ``module`` replaces the built workload's bytes (a variant of it)."""
    kube = session.kube
    if mode == "plain":
        return session.run(
            deploy.deploy_plain(
                kube, namespace, names, workload, recorder, replicas=replicas, timeout_s=timeout_s
            )
        )
    origin = session.run(deploy.module_source(kube, namespace, workload, source, module))
    manifests = [
        deploy.function_manifest(name, workload, replicas=replicas, spec=spec, module=origin)
        for name in names
    ]
    return session.run(deploy.deploy_functions(kube, namespace, manifests, recorder, timeout_s))


def deploy_one(
    session: BenchSession,
    namespace: str,
    name: str,
    workload: str,
    recorder: watch.Recorder,
    **options: Any,
) -> None:
    """One function that an experiment needs running before it measures anything."""
    [outcome] = deploy_workload(session, namespace, [name], workload, recorder, **options)
    if not outcome.ok:
        raise RuntimeError(f"{name} did not become ready: {outcome.error}")


def wait_serving(
    session: BenchSession, namespace: str, names: Sequence[str], timeout_s: float
) -> None:
    """Until the gateway serves every function (it learns endpoints a moment after the
    Pods turn ready)."""

    async def all_serving() -> None:
        await asyncio.gather(
            *(probe.wait_serving(deploy.gateway_url(namespace, n), timeout_s) for n in names)
        )

    session.run(all_serving())
