"""Where a run happened: the machine, the checkout, the packages and the cluster.

Captured once per run into ``env.json`` so a reader can reproduce or compare it. Nothing
here raises: a run without a cluster still gets its metadata, with the error noted.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from wasmop.bench.session import run_sync
from wasmop.cluster.layout import repo_root
from wasmop.kube import Kube, KubeConfig
from wasmop.wellknown import ZONE_LABEL

PACKAGES = (
    "wasmop", "kopf", "kubernetes", "wasmtime", "aiohttp", "locust", "papermill",
    "pandas", "numpy", "pyarrow", "matplotlib", "psutil",
)  # fmt: skip


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_total_mib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    return None


def _versions(packages: Iterable[str]) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


async def _kubernetes_info(kubeconfig: Path | str | None) -> dict[str, Any]:
    async with Kube(KubeConfig.load(kubeconfig), user_agent="wasmop-bench") as kube:
        version = await kube.get("/version")
        nodes = await kube.list("/api/v1/nodes")
    described = []
    for node in nodes.get("items", []):
        meta, status = node["metadata"], node.get("status", {})
        ready = next(
            (c["status"] for c in status.get("conditions", []) if c["type"] == "Ready"), "Unknown"
        )
        info = status.get("nodeInfo", {})
        described.append(
            {
                "name": meta["name"],
                "zone": meta.get("labels", {}).get(ZONE_LABEL),
                "arch": meta.get("labels", {}).get("kubernetes.io/arch"),
                "ready": ready,
                "kubelet_version": info.get("kubeletVersion"),
                "container_runtime": info.get("containerRuntimeVersion"),
                "cpu": status.get("capacity", {}).get("cpu"),
                "memory": status.get("capacity", {}).get("memory"),
            }
        )
    return {"server_version": version.get("gitVersion"), "nodes": described}


def collect_environment(
    kubeconfig: Path | str | None = None, kubernetes: bool = True
) -> dict[str, Any]:
    """What a reader needs to reproduce or compare a run; never raises."""
    env: dict[str, Any] = {
        "time_utc": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_total_mib": _memory_total_mib(),
        "git": {
            "commit": _git("rev-parse", "HEAD"),
            "branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        },
        "packages": _versions(PACKAGES),
    }
    with contextlib.suppress(Exception):
        from wasmop.cluster import manager
        from wasmop.cluster.layout import StateLayout

        layout = StateLayout.default()
        if layout.settings_file.exists() and not os.environ.get("KUBECONFIG"):
            env["embedded_cluster"] = json.loads(layout.settings_file.read_text())
            status = manager.read_status(layout) or {}
            env["components"] = sorted(status.get("components", {}))
    if kubernetes:
        try:
            env["kubernetes"] = run_sync(_kubernetes_info(kubeconfig), timeout=30)
        except Exception as exc:  # a run without a cluster still gets its metadata
            env["kubernetes"] = {"error": f"{exc.__class__.__name__}: {exc}"}
    return env
