"""The Hub cache as huggingface_hub lays it out, checked before anything in it is read or removed.

Nothing outside the cache is ever touched: revisions are 40-hex commits or ref names without
``..`` or absolute parts (huggingface_hub writes ``refs/<revision>`` as a file); repo ids and
file names are paths inside the repo; a snapshot entry must link into its own repo's ``blobs/``
(a link planted in a shared cache is refused, never loaded or followed); eviction removes links,
never what they point at; partial files left by a killed download are swept under
huggingface_hub's own per-blob lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..contract.caches import ProcessCache
from ..contract.errors import IntegrityError, InvalidArgumentError, WeightSourceError
from ..contract.family import WeightSource
from .digests import GIT_SHA1, SHA256, forget
from .fetched import FetchedWeights

__all__ = ["check_revision", "check_hub_names", "snapshot_entry", "sweep_partials", "discard"]

log = logging.getLogger("zooadapt")

_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def check_revision(revision: object, what: str = "revision") -> str:
    """A Hub revision that cannot name a path outside the cache: a 40-hex commit, or a ref name
    as git allows it (``main``, ``v1.0``, ``refs/pr/1``) without ``..``, absolute or hidden parts.

    huggingface_hub stores a branch or tag as the file ``refs/<revision>`` and a commit as the
    folder ``snapshots/<commit>``, so an unchecked ``../..`` would write outside the cache.
    """
    if not isinstance(revision, str) or not revision:
        raise InvalidArgumentError(f"{what}={revision!r}: give a branch, tag or 40-hex commit as a string")
    if GIT_SHA1.match(revision):
        return revision
    parts = revision.split("/")
    if (len(revision) > 255 or _REF_FORBIDDEN.search(revision) or ".." in revision or "@{" in revision
            or revision == "@" or revision.endswith(".")
            or any(not p or p.startswith(".") or p.endswith(".lock") for p in parts)):
        raise InvalidArgumentError(
            f"{what}={revision!r} is not a branch, tag or commit name: use a 40-hex commit, or a ref name like "
            "'main', 'v1.0' or 'refs/pr/1' (no '..', no leading or trailing '/', no spaces or ~^:?*[\\ "
            "characters, no part starting with '.')")
    return revision


def check_hub_names(source: WeightSource) -> None:
    """A repo id and file name that cannot point outside the repo's cache folder (checked before any
    request or cache lookup; huggingface_hub checks them too, but only on some of its paths)."""
    repo_id, filename = source.repo_id, source.filename
    if not isinstance(repo_id, str) or not isinstance(filename, str):
        raise InvalidArgumentError(f"{source!r}: a Hub source needs repo_id and filename as strings")
    parts = filename.replace("\\", "/").split("/")
    if (not filename or filename.startswith("/") or re.match(r"^[A-Za-z]:", filename) or "\x00" in filename
            or any(p in ("", ".", "..") for p in parts)):
        raise WeightSourceError(
            f"hf://{repo_id}: file name {filename!r} is not a path inside the repo (no '..', '.', empty or absolute "
            "parts); give the file's path as the Hub lists it, e.g. 'model.safetensors' or 'sub/model.bin'")
    if any(p in ("", ".", "..") for p in repo_id.split("/")) or "\x00" in repo_id or "\\" in repo_id:
        raise WeightSourceError(f"hf://{repo_id}: not a Hub repo id; write it as 'org/name'")


def _no_links_below(base: Path, path: Path) -> bool:
    """True when no folder below ``base`` down to ``path`` is a symbolic link, which is when
    ``realpath(path)`` is ``realpath(base)`` followed by the same names (a few ``lstat`` calls;
    ``realpath`` itself walks every folder from the root, for each path it is asked about)."""
    current = str(base)
    for part in os.path.relpath(path, base).split(os.sep):
        if part in ("", os.curdir):
            continue
        if part == os.pardir:
            return False
        current = os.path.join(current, part)
        if os.path.islink(current):
            return False
    return True


def _blob_of(pointer: Path, storage: Path) -> Path:
    """The blob a snapshot entry links to. huggingface_hub links ``../../blobs/<etag>``: when that
    leads into ``<storage>/blobs`` and neither ``blobs`` nor the blob is a link (the caller has
    checked the folders from ``storage`` down to the entry), the path inside ``storage`` is the
    blob, with no ``realpath`` walk from the root. Any other link is resolved by ``realpath``."""
    target = os.readlink(pointer)
    if not os.path.isabs(target):
        blob = Path(os.path.normpath(os.path.join(pointer.parent, target)))
        if blob.parent == storage / "blobs" and not os.path.islink(blob.parent) and not os.path.islink(blob):
            return blob
    return Path(os.path.realpath(pointer))


def snapshot_entry(pointer: Path, filename: str, origin: str) -> tuple[str, Path | None]:
    """(commit, blob) of the snapshot entry ``hf_hub_download`` returned, checked to lie in its
    repo's storage: ``<storage>/snapshots/<commit>/<filename>`` with no link on the way, linking
    to ``<storage>/blobs/<etag>`` (or, in a cache without symlinks, a plain file).

    Anything else was planted in a (shared) cache or the cache is damaged: refused, and only the
    entry itself is removed, never what it points at.
    """
    pointer = Path(os.path.abspath(pointer))
    commit_dir = pointer.parents[len(filename.split("/")) - 1]
    storage = commit_dir.parent.parent
    problem = ""
    if commit_dir.parent.name != "snapshots" or not GIT_SHA1.match(commit_dir.name):
        problem = "is not inside a snapshots/<commit> folder"
    folders_inside = _no_links_below(storage, pointer.parent)
    if not problem and not folders_inside:
        problem = "lies under a folder that is a link out of the cache"
    blob: Path | None = None
    if not problem and pointer.is_symlink():
        blob = _blob_of(pointer, storage)
        blobs = storage / "blobs"
        if blob.parent != blobs:  # resolved by realpath: compare with the storage's real path
            blobs = Path(os.path.realpath(storage)) / "blobs"
        if blob.parent != blobs or not (SHA256.match(blob.name) or GIT_SHA1.match(blob.name)):
            problem = f"links to {blob}, which is not a blob of this repo ({blobs})"
        elif not blob.is_file():
            problem = "links to a blob that is missing"
    elif not problem and not pointer.is_file():
        problem = "is not a file"
    if problem:
        if pointer.is_symlink() and folders_inside:
            pointer.unlink(missing_ok=True)  # the planted link, not its target
        raise IntegrityError(
            f"{origin}: the Hub cache entry {pointer} {problem}. It was planted in the cache or the cache is "
            "damaged: zooadapt did not load it, and removed only the entry itself (never what it points at). Load "
            "again to download the file afresh; if this comes back, check who can write to the cache folder."
        )
    return commit_dir.name, blob


def _hub_lock(blob: Path) -> contextlib.AbstractContextManager[Any]:
    """huggingface_hub's own per-blob lock: whoever holds it is the only one writing that blob."""
    from huggingface_hub.utils import WeakFileLock

    storage = blob.parent.parent  # <cache>/models--org--repo/blobs/<etag>
    lock = storage.parent / ".locks" / storage.name / f"{blob.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    return WeakFileLock(lock, timeout=5)


@contextlib.contextmanager
def _holding(blob: Path) -> Iterator[bool]:
    from filelock import Timeout

    lock = _hub_lock(blob)
    try:
        lock.__enter__()
    except Timeout:  # somebody is downloading it right now: leave their files alone
        yield False
        return
    try:
        yield True
    finally:
        lock.__exit__(None, None, None)


_swept: ProcessCache[Path, bool] = ProcessCache(
    "swept Hub blobs", 4096, "a blob's path: its leftovers were removed (a killed download leaves its partial "
    "file once, so a blob is swept on its first load in a process, not on every load)")


def sweep_partials(blob: Path) -> None:
    """Remove ``<etag>.*.incomplete`` files a killed download left (under the blob's lock)."""
    if blob in _swept:
        return
    leftovers = list(blob.parent.glob(f"{blob.name}.*incomplete"))
    if not leftovers:
        _swept.put(blob, True)
        return
    with _holding(blob) as held:
        if held:
            for path in leftovers:
                path.unlink(missing_ok=True)
            log.info("removed %d partial download(s) of %s", len(leftovers), blob.name)
            _swept.put(blob, True)


def discard(fetched: FetchedWeights) -> bool:
    """Remove a cached download that failed verification; a user's own file is never touched.

    Links are removed, never followed: a Hub blob is deleted only when it was checked to lie
    in its repo's ``blobs/`` folder (``fetched.blob``), whatever the snapshot entry points at.
    """
    if fetched.kind == "path":
        return False
    from .hub_probe import forget_cached

    forget_cached()
    forget(os.path.realpath(fetched.path))
    if fetched.kind == "url":
        fetched.path.unlink(missing_ok=True)  # a link planted at the name goes, its target stays
        return True
    blob = fetched.blob
    if blob is None:
        fetched.path.unlink(missing_ok=True)
        return True
    forget(blob)
    with _holding(blob):
        fetched.path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
    return True
