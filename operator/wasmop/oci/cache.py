"""A node's content store: pulled manifests and modules by digest, on disk.

``<root>/sha256/<hex>`` holds the bytes whose sha256 is ``<hex>``, written once (to a
temporary name, then renamed) after they were verified, and verified again whenever
they are read, so a file changed on disk is dropped and pulled again rather than run.
The store is bounded: past ``max_bytes`` the least recently used entries go (a module a
Pod still serves is compiled in memory already; reading it again after eviction is only
a pull).

Pods of one module on a node share one entry, so the node fetches a module once
(:class:`ModuleStore` also joins concurrent pulls of one digest).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

from wasmop.private_file import ensure_private_dir

__all__ = ["DEFAULT_MAX_BYTES", "ContentStore"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 4 * 2**30


def _hex(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise ValueError(f"not a sha256 digest: {digest[:80]!r}")
    return value


class ContentStore:
    """Verified blobs by digest under ``root`` (a private directory: 0700, ours)."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._dir = root / "sha256"
        ensure_private_dir(root)
        ensure_private_dir(self._dir)
        for leftover in self._dir.glob("*.partial"):
            leftover.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def path(self, digest: str) -> Path:
        return self._dir / _hex(digest)

    def get(self, digest: str) -> bytes | None:
        """The bytes stored for ``digest``, or None (also when they no longer match it)."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            with self._lock:
                self.misses += 1
            return None
        if hashlib.sha256(data).hexdigest() != _hex(digest):
            log.warning("content store: %s no longer matches its digest; dropped", path.name)
            path.unlink(missing_ok=True)
            with self._lock:
                self.misses += 1
            return None
        os.utime(path)  # recently used
        with self._lock:
            self.hits += 1
        return data

    def put(self, digest: str, data: bytes) -> None:
        """Store ``data`` under ``digest`` (which it must match), then keep within bounds."""
        value = _hex(digest)
        if hashlib.sha256(data).hexdigest() != value:
            raise ValueError(f"the bytes do not match {digest}")
        partial = self._dir / f"{value}.{threading.get_ident()}.partial"
        with open(partial, "wb") as handle:
            handle.write(data)
        partial.replace(self._dir / value)
        self._trim()

    def _trim(self) -> None:
        with self._lock:
            entries = []
            for path in self._dir.iterdir():
                if path.suffix == ".partial":
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                entries.append((stat.st_mtime, stat.st_size, path))
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries):
                if total <= self.max_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= size
                self.evictions += 1

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._dir.iterdir() if p.suffix != ".partial")
