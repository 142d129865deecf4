"""Digests of weight files, remembered so that a warm load costs a ``stat``, and pinned sha256s.

A hash, once computed, is remembered by (path, size, mtime, inode, change time), so a warm load
costs a ``stat`` instead of re-reading the file (sha256 runs at ~1.2 GB/s here: 80 ms per
100 MB); a rewrite of the same size with its mtime reset still moves the change time, which no
user can set. Pins (``sha256=``) shorter than 8 hex digits are refused; a short pin is upgraded
to the full digest the first time a file matches it (``_PinBook`` below, trust on first use);
``ZOOADAPT_STRICT_HASHES=1`` refuses anything but full digests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from ..contract.caches import ProcessCache
from ..contract.errors import IntegrityError, WeightSourceError

__all__ = ["sha256_of", "file_digests", "cached_sha256", "forget", "check_pin", "check_hash", "pin_matches",
           "full_digest", "strict_hashes", "SHA256", "GIT_SHA1"]

log = logging.getLogger("zooadapt")

SHA256 = re.compile(r"^[0-9a-f]{64}$")
"""A full sha256 (the ETag the Hub sends for an LFS file)."""
GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
"""A git sha1: a Hub commit, or the ETag of a file kept in git rather than LFS."""
_HEX = re.compile(r"^[0-9a-fA-F]{8,64}$")


def strict_hashes() -> bool:
    """``ZOOADAPT_STRICT_HASHES=1``: refuse any pin but a full sha256, and URLs without one."""
    return os.environ.get("ZOOADAPT_STRICT_HASHES", "").strip().lower() in ("1", "true", "yes", "on")


def check_pin(sha256: object, origin: str) -> str | None:
    """A pinned sha256 in lower case: hex, 8 to 64 digits (64 only in strict mode); None stays None."""
    if sha256 is None:
        return None
    if not isinstance(sha256, str) or not _HEX.match(sha256):
        raise WeightSourceError(
            f"{origin}: sha256 pin {sha256!r} is not 8 to 64 hex digits. A shorter pin is too weak to check "
            "anything (8 digits are 32 bits, forgeable in minutes); give the file's full sha256 (64 hex digits)."
        )
    if len(sha256) < 64 and strict_hashes():
        raise WeightSourceError(
            f"{origin}: sha256 pin {sha256!r} is a {len(sha256)}-digit prefix, and ZOOADAPT_STRICT_HASHES is on: "
            "only full digests (64 hex digits) are accepted. Pin the full sha256 (`zooadapt lock NAME` records it), "
            "or unset ZOOADAPT_STRICT_HASHES."
        )
    return sha256.lower()


def sha256_of(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """The sha256 of a file, read in 4 MB chunks (always reads the whole file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _git_sha1_and_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> tuple[str, str]:
    """(git blob sha1, sha256) in one read: a Hub file kept in git (not LFS) is named by the former."""
    size = os.stat(path).st_size
    git, digest = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            git.update(block)
            digest.update(block)
    return git.hexdigest(), digest.hexdigest()


_WARNED: set[str] = set()


class _Record:
    """A small JSON file in zooadapt's cache directory (``zooadapt.weights.paths.cache_dir()``).

    Read only when this user owns it and nobody else may write it (a record in a cache shared
    with others could otherwise vouch for a tampered file); written atomically, private (0600);
    a write that fails (read-only cache, full disk) leaves nothing behind and costs only a
    re-check next time.
    """

    filename = ""
    limit = 2000

    def location(self) -> Path:
        from .paths import cache_dir

        return cache_dir() / self.filename

    def read(self) -> dict[str, Any]:
        from .atomic import owned_privately

        path = self.location()
        if not path.exists():
            return {}
        if not owned_privately(path):
            if str(path) not in _WARNED:
                _WARNED.add(str(path))
                log.warning("ignoring %s: it is not a private file of this user (someone else could write it), so "
                            "files it vouches for are hashed again; delete it to silence this", path)
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        return data if isinstance(data, dict) else {}

    def update(self, key: str, value: Any) -> None:
        from .atomic import atomic_write

        path = self.location()
        try:
            data = self.read()
            data.pop(key, None)
            data[key] = value
            if len(data) > self.limit:
                data = dict(list(data.items())[-self.limit :])
            with atomic_write(path, private=True) as fh:
                json.dump(data, fh)
        except OSError as exc:
            log.debug("could not record %s in %s: %s", key, path, exc)


class _HashMemo(_Record):
    """Digests already computed, keyed by real path and checked against (size, mtime, inode,
    change time).

    Kept in memory and in ``verified-sha256.json``, so a new process does not re-read a file it
    hashed before. Any write to the file, even one that restores its size and mtime, moves its
    change time (``st_ctime``, which no user can set), so it is hashed again. Concurrent writers
    may drop each other's entries; the cost of a lost entry is one more hash, never a wrong answer.
    """

    filename = "verified-sha256.json"

    def __init__(self) -> None:
        self._mem: ProcessCache[str, list[Any]] = ProcessCache(
            "sha256 digests", self.limit, "a file's real path; an entry holds the file's (size, mtime, inode, change "
            "time) and serves only while they are unchanged")

    @staticmethod
    def _stamp(st: os.stat_result) -> list[Any]:
        return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]

    def get(self, real: str, st: os.stat_result, *, git: bool = False) -> tuple[str, str | None] | None:
        stamp = self._stamp(st)
        hit = self._mem.get(real)
        if hit is None:
            hit = self.read().get(real)
        if (isinstance(hit, list) and len(hit) == 6 and hit[:4] == stamp and isinstance(hit[4], str)
                and (isinstance(hit[5], str) or (hit[5] is None and not git))):
            self._mem.put(real, hit)
            return hit[4], hit[5]
        return None

    def put(self, real: str, st: os.stat_result, sha: str, git_sha1: str | None = None) -> None:
        entry = [*self._stamp(st), sha, git_sha1]
        self._mem.put(real, entry)
        self.update(real, entry)

    def forget(self, real: str) -> None:
        self._mem.pop(real, None)


class _PinBook(_Record):
    """Short sha256 pins upgraded to the full digest of the first file that matched them.

    An 8-hex pin is 32 bits: a file forged to match it takes minutes. Once a genuine file has
    matched, later loads require exactly its digest (trust on first use, as ssh does for host
    keys), and lock files record the full digest.
    """

    filename = "pinned-sha256.json"

    def full(self, prefix: str) -> str | None:
        value = self.read().get(prefix)
        return value if isinstance(value, str) and SHA256.match(value) and value.startswith(prefix) else None

    def record(self, prefix: str, digest: str) -> None:
        if len(prefix) < 64 and self.full(prefix) != digest:
            self.update(prefix, digest)


_memo = _HashMemo()
_pins = _PinBook()


def file_digests(path: str | os.PathLike[str], *, git: bool = False, rehash: bool = False,
                 resolved: bool = False) -> tuple[str, str | None]:
    """(sha256, git blob sha1 when ``git``) of a file, hashed only when it is new or changed
    since it was last hashed (``rehash`` always hashes, as ``zooadapt lock --check`` does).
    ``resolved``: the caller checked that no link lies below the cache folder on the way to ``path``
    (a checked Hub blob), so the path serves as given."""
    real = os.fspath(path) if resolved else os.path.realpath(path)
    st = os.stat(real)
    hit = None if rehash else _memo.get(real, st, git=git)
    if hit is not None:
        return hit
    if git:
        git_sha1, sha = _git_sha1_and_sha256(real)
    else:
        sha, git_sha1 = sha256_of(real), None
    after = os.stat(real)
    if _HashMemo._stamp(after) == _HashMemo._stamp(st):  # not rewritten while we read it
        _memo.put(real, st, sha, git_sha1)
    return sha, git_sha1


def cached_sha256(path: str | os.PathLike[str], *, rehash: bool = False, resolved: bool = False) -> str:
    """The file's sha256, hashed only when the file is new or changed since it was last hashed."""
    return file_digests(path, rehash=rehash, resolved=resolved)[0]


def full_digest(expected: str) -> str | None:
    """The full digest a pin stands for: itself, or what a short pin was upgraded to (else None)."""
    return expected if len(expected) == 64 else _pins.full(expected)


def pin_matches(actual: str, expected: str) -> bool:
    """Whether a file of digest ``actual`` is the one pinned by ``expected`` (a full digest or a prefix)."""
    full = full_digest(expected)
    return actual == full if full else actual.startswith(expected)


def check_hash(path: Path, expected: str | None, origin: str, *, removed: bool, rehash: bool = False) -> str:
    """Compare the file's sha256 with a pinned full digest or prefix (upgraded to the full digest
    once a file matched it); return the full digest."""
    actual = cached_sha256(path, rehash=rehash)
    if not expected:
        return actual
    expected = expected.lower()
    full = full_digest(expected)
    if not pin_matches(actual, expected):
        what = "It was removed from the cache and not loaded" if removed else "It was not loaded"
        upgraded = (f" (the pin {expected} was upgraded to the full digest of the first file that matched it; "
                    f"{_pins.location()} records it)") if full and full != expected else ""
        raise IntegrityError(
            f"{origin}: sha256 is {actual[:16]}…, expected {(full or expected)[:16]}…{upgraded}. {what}. If the "
            "source changed on purpose, update the pinned sha256 (registry entry, lock file or URL #sha256=); "
            "otherwise the file is corrupt or was tampered with: fetch it again."
        )
    if not full:
        _pins.record(expected, actual)
    return actual


def forget(path: str | os.PathLike[str]) -> None:
    """Drop what is remembered about ``path`` in this process (a file about to be removed)."""
    _memo.forget(os.fspath(path))
