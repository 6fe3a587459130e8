"""Kubeconfig files for the embedded cluster's users."""

from __future__ import annotations

from pathlib import Path

import yaml

from wasmop.private_file import write_private

CONTEXT = "wasmop"


def render(server: str, ca: Path, cert: Path, key: Path, user: str) -> str:
    """A single-context kubeconfig that refers to the PKI files by absolute path."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CONTEXT, "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user}}],
        "current-context": CONTEXT,
    }
    return yaml.safe_dump(config, sort_keys=False)


def write(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> Path:
    """Write the kubeconfig 0600: it names the key, and for a token user it is the key."""
    return write_private(path, render(server, ca, cert, key, user))
