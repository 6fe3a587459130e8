"""Files only their owner may read: private keys, kubeconfigs, tokens.

Writing such a file and narrowing its mode afterwards leaves a moment in which the
process umask (usually 022) has made it world-readable, and a reader that opened it then
keeps its descriptor. Here the file is created by ``open(2)`` with mode 0600 and
``O_EXCL`` under a fresh name and renamed over the target, so no version of it ever has
a wider mode, and a reader sees either the old content or the new, never half of it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from pathlib import Path

PRIVATE_MODE = 0o600


def write_private(path: Path, data: bytes | str) -> Path:
    """Atomically replace ``path`` with ``data``, readable and writable by the owner only."""
    payload = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


PRIVATE_DIR_MODE = 0o700


def ensure_private_dir(path: Path) -> Path:
    """``path`` as a directory only this user may use: created with mode 0700, or, if it
    exists, refused unless it is a real directory (not a symlink) owned by this user that
    no one else can write to or read. Raises PermissionError saying which check failed.

    For directories whose contents the process trusts, such as precompiled native code it
    maps and runs: whoever can write there could make this process run their code.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, PRIVATE_DIR_MODE)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} is not a directory (a symlink or a file)")
    if info.st_uid != os.geteuid():
        raise PermissionError(f"{path} is owned by uid {info.st_uid}, not by this user")
    if info.st_mode & 0o077:
        raise PermissionError(
            f"{path} has mode {stat.S_IMODE(info.st_mode):o}; others may use it (want 700)"
        )
    return path


def reset_private_dir(path: Path) -> Path:
    """Like `ensure_private_dir`, but a directory of this user whose mode let others in
    is emptied and narrowed instead of refused: anything in it may have been planted.
    A symlink, or a directory of another user, is still refused."""
    path = Path(path)
    try:
        return ensure_private_dir(path)
    except PermissionError:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    os.chmod(path, PRIVATE_DIR_MODE)
    return ensure_private_dir(path)
