"""Files only their owner may read: private keys, kubeconfigs, tokens.

Writing such a file and narrowing its mode afterwards leaves a moment in which the
process umask (usually 022) has made it world-readable, and a reader that opened it then
keeps its descriptor. Here the file is created by ``open(2)`` with mode 0600 and
``O_EXCL`` under a fresh name and renamed over the target, so no version of it ever has
a wider mode, and a reader sees either the old content or the new, never half of it.
"""

from __future__ import annotations

import os
import secrets
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
