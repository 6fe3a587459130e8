"""The client side of a node agent's fault API, for the CLI and the experiments alike.

A running agent leaves a run file (address and port of its daemon, bearer token, pid,
network namespace) in the state dir's ``run/`` folder; it is how anything on this
machine finds and authenticates to the agent.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class NodeUnavailable(RuntimeError):
    """The agent is not running here, cannot be reached, or refused the request."""


def run_file(run_dir: Path, node: str) -> Path:
    return run_dir / f"node-{node}.json"


def node_info(run_dir: Path, node: str) -> dict[str, Any]:
    path = run_file(run_dir, node)
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise NodeUnavailable(f"node {node} is not running here (no {path})") from exc


def post(run_dir: Path, node: str, path: str, body: dict[str, Any]) -> Any:
    """POST to the agent's daemon with its token; its JSON reply (over TLS verified
    against the cluster CA when the agent serves it, as the embedded cluster's do)."""
    info = node_info(run_dir, node)
    ca_file = info.get("caFile")
    scheme = "https" if ca_file else "http"
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    request = urllib.request.Request(
        f"{scheme}://{info['address']}:{info['port']}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {info['token']}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError):
            text = json.loads(text).get("error", text)
        raise NodeUnavailable(f"node {node} refused {path}: {exc.code} {text}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise NodeUnavailable(f"node {node} unreachable for {path}: {exc}") from exc
