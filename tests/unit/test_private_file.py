"""Credential files are 0600 from their first byte: created so by open(2), never narrowed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from wasmop.cluster import addons, components
from wasmop.cluster.layout import StateLayout
from wasmop.cluster.settings import ClusterSettings
from wasmop.private_file import ensure_private_dir, reset_private_dir, write_private


@pytest.fixture
def no_file_chmod(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Path, int, int]]]:
    """Umask 0 (so a file created without an explicit mode is 0666) and no chmod of a
    file afterwards: a credential that ends up 0600 was created 0600. Yields the
    (path, flags, mode) of every os.open call."""
    opened: list[tuple[Path, int, int]] = []
    real_open, real_chmod = os.open, os.chmod

    def spy_open(path, flags, mode=0o777, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append((Path(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    def dirs_only_chmod(path, mode, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not Path(path).is_dir():
            raise AssertionError(f"chmod of a file after writing it: {path}")
        return real_chmod(path, mode, *args, **kwargs)

    def no_fchmod(fd: int, mode: int) -> None:
        raise AssertionError("fchmod after creating a file")

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "chmod", dirs_only_chmod)
    monkeypatch.setattr(os, "fchmod", no_fchmod)
    old = os.umask(0)
    try:
        yield opened
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_private_creates_0600_exclusively(
    tmp_path: Path, no_file_chmod: list[tuple[Path, int, int]]
) -> None:
    target = tmp_path / "token"
    write_private(target, "secret")
    assert target.read_text() == "secret"
    assert mode(target) == 0o600
    [(created, flags, created_mode)] = no_file_chmod
    assert created.parent == tmp_path and created != target  # a fresh name, renamed over
    assert flags & os.O_CREAT and flags & os.O_EXCL and flags & os.O_NOFOLLOW
    assert created_mode == 0o600


def test_write_private_replaces_a_wider_file(
    tmp_path: Path, no_file_chmod: list[tuple[Path, int, int]]
) -> None:
    target = tmp_path / "kubeconfig"
    target.write_text("old")  # umask 0: 0666
    write_private(target, "new")
    assert (target.read_text(), mode(target)) == ("new", 0o600)
    assert [p.name for p in tmp_path.iterdir()] == ["kubeconfig"]  # no temporary left


def test_write_private_leaves_nothing_behind_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "key"
    target.write_text("kept")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_private(target, "lost")
    assert target.read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


def test_cluster_credentials_are_private_from_creation(
    tmp_path: Path, no_file_chmod: list[tuple[Path, int, int]]
) -> None:
    """Every key and kubeconfig ``cluster up`` writes, under umask 0 with chmod refused."""
    layout = StateLayout(tmp_path / "state")
    settings = ClusterSettings()
    addons.prepare(layout, settings, components.prepare(layout, settings))
    credentials = [
        *layout.pki.glob("*.key"),
        *layout.pki.glob("*.secret"),
        layout.encryption_config,
        *layout.config.glob("*.kubeconfig"),
        layout.admin_kubeconfig,
        addons.registry_config_file(layout),  # it carries the registry's HTTP secret
    ]
    assert len(credentials) > 15
    assert {p.name: mode(p) for p in credentials} == {p.name: 0o600 for p in credentials}
    assert mode(layout.pki) == 0o700
    assert mode(layout.config) == 0o700


def test_a_private_dir_left_open_is_emptied_and_narrowed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    os.chmod(cache, 0o777)
    (cache / "planted.cwasm").write_bytes(b"code")
    with pytest.raises(PermissionError):
        ensure_private_dir(cache)
    reset_private_dir(cache)
    assert (os.stat(cache).st_mode & 0o777) == 0o700
    assert list(cache.iterdir()) == []
    link = tmp_path / "link"
    link.symlink_to(cache)
    with pytest.raises(PermissionError):
        reset_private_dir(link)
