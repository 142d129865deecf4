"""Writing files so that nobody ever sees half of one, and no planted link is followed.

Every file zooadapt writes (a lock file, a saved model, the digest memo) is written to a
temporary file of a unique name, created exclusively next to its destination
(``tempfile.mkstemp``: ``O_CREAT | O_EXCL | O_NOFOLLOW``, so a link planted under a guessed
name is never written through), flushed to disk, then renamed over the destination in one
step (``os.replace`` replaces a link, it does not follow it). Any failure on the way — a
full disk included — removes the temporary file and leaves the destination as it was.

Read-modify-write (a lock file updated by two ``zooadapt lock`` commands, two saves into one
folder): ``exclusive(target)`` holds an inter-process file lock (the ``filelock`` package, which
huggingface_hub depends on) for ``target``. The lock file lives in zooadapt's cache folder, named
by the target's real path, so nothing is added beside the user's files; a process that dies
holding it releases it (the operating system drops its ``flock``).

Shared caches: a file zooadapt *reads* as a record of what it verified (the digest memo,
upgraded pins) is trusted only when the current user owns it and nobody else can write it,
as ssh treats its ``known_hosts``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "replace_from", "owned_privately", "new_file_mode", "exclusive", "lock_path", "wait_for"]

log = logging.getLogger("zooadapt")


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
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
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


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The file lock that guards ``target``: in zooadapt's cache folder, named by the target's real path."""
    from .paths import cache_dir

    real = os.path.realpath(os.path.expanduser(os.fspath(target)))
    return cache_dir() / "locks" / f"{hashlib.sha256(real.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}.lock"


@contextlib.contextmanager
def exclusive(target: str | os.PathLike[str], *, timeout: float = 600.0, what: str = "writing") -> Iterator[bool]:
    """Hold the inter-process lock of ``target`` for the block (other processes wait up to ``timeout``
    seconds, then ``FileWriteError``). Yields True when locked; False when the lock itself cannot be
    created (a read-only cache folder): the block then runs unlocked, as before, with a warning."""
    from filelock import FileLock, Timeout

    from ..contract.errors import FileWriteError

    path = lock_path(target)
    lock: FileLock | None = FileLock(str(path), timeout=timeout)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        assert lock is not None
        lock.acquire()
    except Timeout:
        raise FileWriteError(
            f"another process has been {what} {os.fspath(target)} for {timeout:.0f} s and still holds its lock "
            f"({path}); wait for it to finish (or stop it), then try again") from None
    except OSError as exc:
        log.warning("could not create the lock %s (%s); %s %s without it", path, exc.strerror or exc, what,
                    os.fspath(target))
        lock = None
    try:
        yield lock is not None
    finally:
        if lock is not None:
            lock.release()


def wait_for(target: str | os.PathLike[str], timeout: float = 600.0) -> bool:
    """Wait until no process holds ``target``'s lock (a save in progress ends); True when one did."""
    from filelock import FileLock, Timeout

    path = lock_path(target)
    if not path.exists():
        return False
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        pass
    except OSError:
        return False
    else:
        lock.release()
        return False
    try:
        with FileLock(str(path), timeout=timeout):
            return True
    except (Timeout, OSError):
        return True
