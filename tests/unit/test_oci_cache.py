"""A node's content store: verified on the way in and on the way out, bounded in size."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from wasmop.oci.cache import ContentStore


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_put_then_get(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    data = b"\0asm\1\0\0\0"
    assert store.get(digest(data)) is None
    store.put(digest(data), data)
    assert store.get(digest(data)) == data
    assert (store.hits, store.misses) == (1, 1)
    assert oct((tmp_path / "store").stat().st_mode & 0o777) == "0o700"


def test_bytes_that_do_not_match_their_digest_are_refused(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    with pytest.raises(ValueError, match="do not match"):
        store.put(digest(b"one"), b"two")
    assert store.get(digest(b"one")) is None


def test_a_file_changed_on_disk_is_dropped_not_served(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    store.put(digest(b"module"), b"module")
    store.path(digest(b"module")).write_bytes(b"tampered")
    assert store.get(digest(b"module")) is None
    assert not store.path(digest(b"module")).exists()


def test_least_recently_used_entries_go_past_the_bound(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store", max_bytes=350)
    blobs = [bytes([i]) * 100 for i in range(3)]
    for age, blob in enumerate(blobs):
        store.put(digest(blob), blob)
        os.utime(store.path(digest(blob)), (1000 + age, 1000 + age))
    store.get(digest(blobs[0]))  # used again: now the most recent
    store.put(digest(b"x" * 100), b"x" * 100)
    assert store.get(digest(blobs[0])) == blobs[0]
    assert store.get(digest(blobs[1])) is None  # the oldest unused one went
    assert store.size_bytes() <= 350


@pytest.mark.parametrize("bad", ["sha512:" + "a" * 128, "sha256:../../etc/passwd", "sha256:AB"])
def test_only_sha256_digests_name_files(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="not a sha256 digest"):
        ContentStore(tmp_path / "store").path(bad)
