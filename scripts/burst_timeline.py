"""Where a burst's time goes, per function, from the API server's audit log.

For the functions of one burst of ``make bench-operator`` (names ``o100-0-000`` ...
for the operator, ``p100-0-000`` ... for plain), each step's time after the function's
creation, read from the requests that make it: the creation (WasmFunction or
Deployment), the operator's Deployment apply (sent and answered), the ReplicaSet's
creation by the deployment controller, the Pod's creation by the ReplicaSet controller,
its binding by the scheduler, the node agent's status write that says Ready, and the
first status write of the owner that says so (the operator's WasmFunction status, the
deployment controller's Deployment status). Prints the median, p95 and max of each step in ms.

    .venv/bin/python scripts/burst_timeline.py .wasmop/logs/audit.log o100-0 p100-0
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

STEPS = (
    "apply_sent",
    "apply_answered",
    "replicaset_sent",
    "replicaset",
    "pod",
    "bound",
    "pod_ready",
    "status",
)


def epoch_ms(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000.0


def events(path: Path) -> Iterable[dict[str, Any]]:
    with path.open("rb") as log:
        for line in log.read().split(b"\n"):
            try:
                event = json.loads(line)
            except ValueError:
                continue  # an empty line, or one cut where the file was split
            if isinstance(event, dict) and event.get("stage") == "ResponseComplete":
                yield event


def owner_of(name: str, prefix: str) -> str | None:
    """The function a ReplicaSet's or Pod's name belongs to (``<function>-<hash>...``)."""
    if not name.startswith(prefix + "-"):
        return None
    parts = name.split("-")
    return "-".join(parts[:3])  # o100-0-007


def pod_says_ready(event: dict[str, Any]) -> bool:
    status = (event.get("requestObject") or {}).get("status") or {}
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def says_ready(resource: str, event: dict[str, Any]) -> bool:
    """A status write that says the function is Ready: the WasmFunction's phase, or the
    Deployment's first ready replica."""
    status = (event.get("requestObject") or {}).get("status") or {}
    if resource == "wasmfunctions":
        return status.get("phase") == "Ready"
    return resource == "deployments" and int(status.get("readyReplicas") or 0) >= 1


def timeline(path: Path, prefix: str) -> dict[str, dict[str, float]]:
    """function -> step -> ms after its creation."""
    at: dict[str, dict[str, float]] = defaultdict(dict)
    for event in events(path):
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "")
        sub = ref.get("subresource", "")
        verb = event.get("verb")
        user = (event.get("user") or {}).get("username", "")
        code = (event.get("responseStatus") or {}).get("code", 0)
        name = ref.get("name") or (
            ((event.get("requestObject") or {}).get("metadata") or {}).get("generateName") or ""
        )
        fn = owner_of(name, prefix)
        if fn is None:
            continue
        sent = epoch_ms(event["requestReceivedTimestamp"])
        done = epoch_ms(event["stageTimestamp"])
        steps = at[fn]
        if verb == "create" and not sub and resource in ("wasmfunctions", "deployments"):
            if "serviceaccount" not in user:
                steps.setdefault("created", sent)
        elif resource == "deployments" and verb == "patch" and not sub and "wasmop" in user:
            steps.setdefault("apply_sent", sent)
            steps.setdefault("apply_answered", done)
        elif resource == "replicasets" and verb == "create" and code < 300:
            steps.setdefault("replicaset_sent", sent)
            steps.setdefault("replicaset", done)
        elif resource == "pods" and verb == "create" and not sub and code < 300:
            steps.setdefault("pod", done)
        elif resource == "pods" and sub == "binding" and code < 300:
            steps.setdefault("bound", done)
        elif resource == "pods" and sub == "status" and code < 300 and pod_says_ready(event):
            steps.setdefault("pod_ready", done)
        elif sub == "status" and code < 300 and says_ready(resource, event):
            steps.setdefault("status", done)
    return {
        fn: {k: v - steps["created"] for k, v in steps.items() if k != "created"}
        for fn, steps in at.items()
        if "created" in steps
    }


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(path: Path, prefix: str) -> None:
    functions = timeline(path, prefix)
    print(f"{prefix}: {len(functions)} functions; ms after each one's creation")
    print(f"  {'step':<16}{'n':>5}{'p50':>9}{'p95':>9}{'max':>9}")
    for step in STEPS:
        values = [steps[step] for steps in functions.values() if step in steps]
        if values:
            print(
                f"  {step:<16}{len(values):>5}{statistics.median(values):>9.0f}"
                f"{quantile(values, 0.95):>9.0f}{max(values):>9.0f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audit_log", type=Path)
    parser.add_argument("prefixes", nargs="+", help="burst name prefixes, e.g. o100-0 p100-0")
    args = parser.parse_args()
    for prefix in args.prefixes:
        report(args.audit_log, prefix)


if __name__ == "__main__":
    main()
