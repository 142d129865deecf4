"""Writing files so that nobody ever sees half of one, and no planted link is followed.

Every file zooadapt writes (a lock file, a saved model, the digest memo) is written to a
temporary file of a unique name, created exclusively next to its destination
(``tempfile.mkstemp``: ``O_CREAT | O_EXCL | O_NOFOLLOW``, so a link planted under a guessed
name is never written through), flushed to disk, then renamed over the destination in one
step (``os.replace`` replaces a link, it does not follow it). Any failure on the way — a
full disk included — removes the temporary file and leaves the destination as it was.

Shared caches: a file zooadapt *reads* as a record of what it verified (the digest memo,
upgraded pins) is trusted only when the current user owns it and nobody else can write it,
as ssh treats its ``known_hosts``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "replace_from", "owned_privately", "new_file_mode"]


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def new_file_mode() -> int:
    """The permissions ``open()`` gives a new file: 0666 minus the umask."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, binary: bool = False, private: bool = False) -> Iterator[IO[Any]]:
    """Yield a file object whose content becomes ``path`` only if the block completes.

    ``private`` keeps the file readable by its owner only (0600); otherwise it gets the usual
    permissions for a new file (0666 minus the umask), like a file ``open()`` creates.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if not private:
            os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def replace_from(staged: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Rename a fully written, fsynced file over ``target`` (a link at ``target`` is replaced, not followed)."""
    with open(staged, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(staged, target)


def owned_privately(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a regular file (not a link) owned by this user and writable by no one else."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o022:
        return False
    getuid = getattr(os, "getuid", None)
    return getuid is None or st.st_uid == getuid()
