"""JupyterLab for interactive work on the notebooks: on loopback only, with a token, the
wasmop kernel, and nothing that reaches outside the machine.

``wasmop experiments lab`` builds the command here and replaces itself with it, so the
lab runs in the foreground until Ctrl-C and inherits the cluster's environment
(``WASMOP_STATE_DIR``, ``KUBECONFIG``) for its kernels. JupyterLab refuses to start as
root unless told to (``--allow-root``); the cluster needs root, so the lab is told when
it runs as root.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from wasmop.bench.runner import TRANSPORT_ENCRYPTION

HOST = "127.0.0.1"


@dataclass(frozen=True)
class LabSettings:
    python: str  # the venv's interpreter, which has jupyterlab and the wasmop kernel
    notebook_dir: Path
    port: int = 8888
    token: str = ""
    as_root: bool = False

    def url(self, path: str = "lab") -> str:
        """The address to open, token included (``path`` such as ``lab/tree/x.ipynb``)."""
        return f"http://{HOST}:{self.port}/{quote(path)}?token={self.token}"

    def command(self) -> list[str]:
        command = [
            self.python, "-m", "jupyter", "lab",
            f"--ServerApp.root_dir={self.notebook_dir}",
            f"--ServerApp.ip={HOST}",
            f"--ServerApp.port={self.port}",
            # The printed URL must be the one served: fail on a busy port, never move.
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            "--no-browser",
            f"--KernelManager.transport_encryption={TRANSPORT_ENCRYPTION}",
            # No announcements, update checks or extension listings from the internet.
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]  # fmt: skip
        if self.as_root:
            command.append("--allow-root")
        return command


def settings(
    python: str, notebook_dir: Path, port: int = 8888, token: str | None = None
) -> LabSettings:
    """Settings for this process: a fresh token unless one is given (or in
    ``JUPYTER_TOKEN``), ``--allow-root`` when running as root."""
    chosen = token or os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    return LabSettings(python, notebook_dir, port, chosen, as_root=os.geteuid() == 0)
