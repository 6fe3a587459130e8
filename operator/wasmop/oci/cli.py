"""``wasmop push FILE REF``: push a module as a wasm OCI artifact.

    wasmop push functions/build/sqlite.wasm 127.0.0.1:5000/wasm/sqlite:3.53.2

prints the pinned reference (``…/wasm/sqlite@sha256:…``) on stdout. Plain HTTP to a
registry on loopback, HTTPS to any other; credentials from a Docker config file
(``--auth-file``, else ``$REGISTRY_AUTH_FILE``, ``$DOCKER_CONFIG/config.json`` or
``~/.docker/config.json`` when one exists).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

from wasmop.console import CommandError

WASM_MAGIC = b"\0asm"
MAX_PUSH_BYTES = 1024 * 2**20


def register(subparsers: Any) -> None:
    push = subparsers.add_parser(
        "push",
        help="push a WebAssembly module to an OCI registry",
        description="Push a .wasm file as a wasm OCI artifact (config "
        "application/vnd.wasm.config.v0+json, one application/wasm layer) under REF's tag, "
        "and print the reference pinned by digest.",
    )
    push.add_argument("file", type=Path, help="the module (.wasm, binary format)")
    push.add_argument("ref", help="REGISTRY/REPOSITORY:TAG, e.g. 127.0.0.1:5000/wasm/hello:1.0")
    push.add_argument(
        "--created",
        default=None,
        help="RFC 3339 time in the artifact's config (default: now; the same module pushed "
        "with the same time gets the same digest)",
    )
    push.add_argument(
        "--annotation",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a manifest annotation (repeatable)",
    )
    push.add_argument("--auth-file", type=Path, default=None, help="a Docker config.json")
    push.set_defaults(handler=_push)


def default_auth_file() -> Path | None:
    """Where docker, podman and oras keep credentials, in their order of precedence."""
    for candidate in (
        os.environ.get("REGISTRY_AUTH_FILE"),
        os.path.join(os.environ["DOCKER_CONFIG"], "config.json")
        if os.environ.get("DOCKER_CONFIG")
        else None,
        str(Path.home() / ".docker" / "config.json"),
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _push(args: argparse.Namespace) -> int:
    from wasmop.oci import (
        AuthConfigError,
        DockerConfig,
        ImageReference,
        ReferenceError,
        RegistryClient,
        RegistryError,
    )

    try:
        ref = ImageReference.parse(args.ref)
    except ReferenceError as exc:
        raise CommandError(str(exc)) from exc
    if ref.tag is None or ref.digest is not None:
        raise CommandError(f"{args.ref}: push to a tag (REPOSITORY:TAG), not a digest")
    try:
        with args.file.open("rb") as handle:
            module = handle.read(MAX_PUSH_BYTES + 1)
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
    if len(module) > MAX_PUSH_BYTES:
        raise CommandError(f"{args.file} is larger than {MAX_PUSH_BYTES} bytes")
    if module[:4] != WASM_MAGIC:
        raise CommandError(
            f"{args.file} is not a WebAssembly binary (no \\0asm header); a wasm layer holds "
            "the module uncompressed"
        )
    annotations = {}
    for item in args.annotation:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--annotation {item!r}: expected KEY=VALUE")
        annotations[key] = value
    created = args.created or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    auth_file = args.auth_file or default_auth_file()
    try:
        credentials = DockerConfig.parse(auth_file.read_bytes()) if auth_file else None
    except (OSError, AuthConfigError) as exc:
        raise CommandError(f"credentials in {auth_file}: {exc}") from exc

    async def push() -> str:
        async with RegistryClient(credentials=credentials) as client:
            return await client.push_module(ref, module, created=created, annotations=annotations)

    try:
        digest = asyncio.run(push())
    except RegistryError as exc:
        raise CommandError(f"push failed: {exc.reason}: {exc.message}") from exc
    sys.stderr.write(f"pushed {ref} ({len(module)} bytes)\n")
    print(ref.pinned(digest))
    return 0
