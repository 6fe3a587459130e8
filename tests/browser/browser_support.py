"""What the browser tests share: the browser binaries and flags, and the lab as
``wasmop experiments lab`` starts it."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from wasmop.bench import lab as lab_settings

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--window-size=1400,1000",
)  # fmt: skip


@dataclass(frozen=True)
class Lab:
    settings: lab_settings.LabSettings
    log: Path

    def url(self, path: str = "lab") -> str:
        return self.settings.url(path)

    def api(self, path: str) -> str:
        with urllib.request.urlopen(self.url(f"api/{path}"), timeout=10) as response:
            return response.read().decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((lab_settings.HOST, 0))
        return int(sock.getsockname()[1])


def start_lab(notebook_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], Lab]:
    """``wasmop experiments lab`` on a free port, as this user (root on CI), until it
    answers its API."""
    token = secrets.token_hex(16)
    port = free_port()
    wasmop = Path(sys.executable).with_name("wasmop")
    command = [str(wasmop), "experiments", "lab", "--port", str(port), "--token", token,
               "--notebook-dir", str(notebook_dir)]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    settings = lab_settings.LabSettings(sys.executable, notebook_dir, port, token)
    handle = Lab(settings, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the lab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            handle.api("status")
            return process, handle
        except OSError:
            time.sleep(0.5)
    process.terminate()
    pytest.fail(f"the lab did not answer within 90 s:\n{log.read_text()[-3000:]}")
