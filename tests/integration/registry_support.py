"""A registry of a test's own: the same distribution binary the embedded cluster runs,
on a free loopback port, with its storage in the test's temporary directory and, when
asked, htpasswd users (Basic authentication)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import yaml
from wasmop.cluster.addons import REGISTRY_BINARY
from wasmop.cluster.layout import go_binary


@dataclass(frozen=True)
class Registry:
    address: str  # 127.0.0.1:<port>
    root: Path  # filesystem storage

    def blob_file(self, digest: str) -> Path:
        """Where distribution's filesystem driver keeps a blob's bytes."""
        hex_ = digest.removeprefix("sha256:")
        return self.root / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_registry(directory: Path, users: dict[str, str] | None = None) -> Iterator[Registry]:
    """Start a registry, yield it once it answers, stop it (by its pid) afterwards."""
    address = f"127.0.0.1:{free_port()}"
    directory.mkdir(parents=True, exist_ok=True)
    root = directory / "storage"
    config: dict[str, object] = {
        "version": "0.1",
        "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
        "http": {"addr": address, "secret": "test-secret"},
    }
    if users:
        htpasswd = directory / "htpasswd"
        htpasswd.write_text(
            "".join(
                f"{name}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"
                for name, password in users.items()
            )
        )
        config["auth"] = {"htpasswd": {"realm": "wasmop-test", "path": str(htpasswd)}}
    config_file = directory / "registry.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log = (directory / "registry.log").open("wb")
    process = subprocess.Popen(
        [str(go_binary(REGISTRY_BINARY)), str(config_file)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}/v2/", timeout=1):
                    break
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"registry did not start: {(directory / 'registry.log').read_text()}"
                )
            time.sleep(0.05)
        yield Registry(address, root)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
