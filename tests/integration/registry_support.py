"""A registry of a test's own: the same distribution binary the embedded cluster runs,
on a free loopback port, with its storage in the test's temporary directory and, when
asked, htpasswd users (Basic authentication) or a token service (Bearer authentication,
the flow Docker Hub and GHCR use: the registry sends clients to the service, which hands
out short-lived JWTs it signs and the registry verifies against its key)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import bcrypt
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from wasmop.cluster.addons import REGISTRY_BINARY
from wasmop.cluster.layout import go_binary
from wasmop.oci import ImageReference, RegistryClient
from wasmop.oci.artifact import OCI_MANIFEST, sha256_digest


@dataclass(frozen=True)
class Registry:
    address: str  # 127.0.0.1:<port>
    root: Path  # filesystem storage

    def blob_file(self, digest: str) -> Path:
        """Where distribution's filesystem driver keeps a blob's bytes."""
        hex_ = digest.removeprefix("sha256:")
        return self.root / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """A token service: GET /token?service=..&scope=repository:NAME:ACTIONS with Basic
    credentials of a known user answers a JWT (ES256) granting those actions."""

    issuer = "wasmop-test-issuer"
    service = "wasmop-test-registry"
    key_id = "test-key"

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.issued = 0
        self.refused = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = service.answer(self.path, self.headers.get("Authorization", ""))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> TokenService:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def jwks(self) -> dict[str, object]:
        numbers = self.key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "EC",
                    "crv": "P-256",
                    "x": _b64url(numbers.x.to_bytes(32, "big")),
                    "y": _b64url(numbers.y.to_bytes(32, "big")),
                    "kid": self.key_id,
                    "use": "sig",
                    "alg": "ES256",
                }
            ]
        }

    def answer(self, path: str, authorization: str) -> tuple[int, bytes]:
        query = parse_qs(urlsplit(path).query)
        user = None
        if authorization.startswith("Basic "):
            name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if self.users.get(name) == password:
                user = name
        if user is None or query.get("service") != [self.service]:
            self.refused += 1
            return 401, b'{"errors": [{"code": "UNAUTHORIZED"}]}'
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.issuer, "sub": user, "aud": self.service, "exp": now + 300,
            "nbf": now - 5, "iat": now, "jti": uuid.uuid4().hex, "access": access,
        }  # fmt: skip
        header = {"alg": "ES256", "typ": "JWT", "kid": self.key_id}
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        token = signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
        self.issued += 1
        return 200, json.dumps({"token": token, "expires_in": 300}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_registry(
    directory: Path, users: dict[str, str] | None = None, token: TokenService | None = None
) -> Iterator[Registry]:
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
    if token:
        jwks = directory / "jwks.json"
        jwks.write_text(json.dumps(token.jwks()))
        config["auth"] = {
            "token": {
                "realm": token.realm,
                "service": token.service,
                "issuer": token.issuer,
                "jwks": str(jwks),
            }
        }
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


async def push_container_image(client: RegistryClient, ref: ImageReference) -> None:
    """A (tiny) container image, not a wasm artifact: a config and a tar+gzip layer."""
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    layer = b"\x1f\x8b" + b"\0" * 30
    for blob in (config, layer):
        await client.push_blob(ref, blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256_digest(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha256_digest(layer),
                "size": len(layer),
            }
        ],
    }
    await client.push_manifest(ref, json.dumps(manifest).encode(), OCI_MANIFEST)
