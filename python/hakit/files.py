"""Files hakit writes as root: created with their final mode (secrets never readable by
others, not even for a moment), never through a symlink planted in their place."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """path holds data, whole or not at all after a crash.  The temporary file is a new
    one (O_EXCL, 0600 from creation) beside it: nothing already there is followed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise


def open_private_append(path: Path) -> BinaryIO:
    """A log of this process's: 0600 if it creates it, and never a symlink's target."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "ab")


def private_dir(path: Path) -> Path:
    """path, a directory only its owner (root) enters: stores, logs, backups, keys."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path
