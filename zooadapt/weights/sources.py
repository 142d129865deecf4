"""Fetching weights: a Hub file through huggingface_hub, a URL through torch.hub, or a local path.

The Hub path is ``hf_hub_download`` itself, so the Hub cache, ``HF_HOME``,
``HF_HUB_OFFLINE``, ``HF_TOKEN``, revisions, file locks and atomic renames behave as users
of transformers/timm expect. This module adds what the client leaves out:

- its errors become ours, one type per fault, naming what was wrong and what to do;
- a body download the Hub answers with a 5xx is retried (the client only retries the
  metadata request, and resumes broken connections itself);
- every Hub file is checked once against the sha256 the Hub advertises (the ETag of an LFS
  file is its sha256) and against a pinned sha256 when there is one; a file that fails is
  removed from the cache, never loaded;
- a hash, once computed, is remembered by (path, size, mtime, inode, change time), so a warm
  load costs a ``stat`` instead of re-reading the file (sha256 runs at ~1.2 GB/s here: 80 ms
  per 100 MB); a rewrite of the same size with its mtime reset still moves the change time,
  which no user can set;
- partial files left by a killed download are swept on the next successful one.

Nothing outside the cache is ever touched: revisions are 40-hex commits or ref names without
``..`` or absolute parts (huggingface_hub writes ``refs/<revision>`` as a file), the endpoint's
answer is checked before the client builds paths from it (``hub_probe.answers_checked``: the
ETag must be a sha256 or git sha1, the commit 40 hex), a snapshot
entry must link into its own repo's ``blobs/`` (a link planted in a shared cache is refused,
never loaded or followed), and eviction removes links, never what they point at. Pins
(``sha256=``) shorter than 8 hex digits are refused; a short pin is upgraded to the full
digest the first time a file matches it (``pins.py``); ``ZOOADAPT_STRICT_HASHES=1`` refuses
anything but full digests.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..contract.errors import (
    DownloadError,
    HubAnswerError,
    HubFileNotFoundError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    IntegrityError,
    InvalidArgumentError,
    OfflineCacheMissError,
    WeightsNotFoundError,
    WeightSourceError,
)
from ..contract.escape import printable
from ..contract.family import WeightSource

__all__ = ["FetchedWeights", "fetch", "parse_source", "sha256_of", "cached_sha256", "file_digests", "discard",
           "is_offline", "check_revision", "check_pin", "strict_hashes"]

log = logging.getLogger("zooadapt")

_CHECKPOINT_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt", "checkpoint.pth")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_COMMIT = _GIT_SHA1
_HEX = re.compile(r"^[0-9a-fA-F]{8,64}$")
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_TRANSIENT = (500, 502, 503, 504)
_RETRY_WAITS: tuple[float, ...] = (1.0, 4.0)
"""Waits before zooadapt's own retries of a body download answered with a 5xx (tests shorten them)."""


@dataclass(frozen=True)
class FetchedWeights:
    """A local file holding the weights, where it came from, and what was verified about it."""

    path: Path
    origin: str
    commit: str | None = None
    sha256: str | None = None
    """The file's full sha256 when it was computed (always for Hub files, and when a hash was pinned)."""
    kind: str = "path"
    """``"hub"``, ``"url"`` or ``"path"``: decides whether a bad file may be deleted (never a user's own file)."""
    blob: Path | None = None
    """For a Hub file: the checked blob its snapshot entry links to (inside the repo's ``blobs/``)."""
    shards: tuple[tuple[str, FetchedWeights], ...] = ()
    """For a sharded checkpoint (``path`` is its index): each shard as the index names it, fetched
    and checked as a file of its own (a Hub shard at the index's commit); empty for one file."""

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def strict_hashes() -> bool:
    """``ZOOADAPT_STRICT_HASHES=1``: refuse any pin but a full sha256, and URLs without one."""
    return os.environ.get("ZOOADAPT_STRICT_HASHES", "").strip().lower() in ("1", "true", "yes", "on")


def check_revision(revision: object, what: str = "revision") -> str:
    """A Hub revision that cannot name a path outside the cache: a 40-hex commit, or a ref name
    as git allows it (``main``, ``v1.0``, ``refs/pr/1``) without ``..``, absolute or hidden parts.

    huggingface_hub stores a branch or tag as the file ``refs/<revision>`` and a commit as the
    folder ``snapshots/<commit>``, so an unchecked ``../..`` would write outside the cache.
    """
    if not isinstance(revision, str) or not revision:
        raise InvalidArgumentError(f"{what}={revision!r}: give a branch, tag or 40-hex commit as a string")
    if _COMMIT.match(revision):
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


def parse_source(spec: str | os.PathLike[str] | WeightSource) -> WeightSource:
    """Read ``weights=`` as a user writes it.

    A path; a URL, optionally ending in ``#sha256=<hex>`` (pip's convention) to pin its hash;
    or ``hf://org/repo[@revision][/file]`` (the old ``hf://org/repo/file@revision`` still reads, with a note).
    """
    if isinstance(spec, WeightSource):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise InvalidArgumentError(
            f"weights={spec!r}: give a file or directory path, a URL (https://…#sha256=<hex>), an hf://org/repo/file "
            f"address or a zooadapt.WeightSource, not a {type(spec).__name__}")
    text = os.fspath(spec)
    if not isinstance(text, str):
        raise InvalidArgumentError(f"weights={spec!r}: a path given as bytes is not supported; pass a str or Path")
    if not text.strip() or "\x00" in text:
        raise InvalidArgumentError(f"weights={spec!r}: empty or NUL-containing paths name no file; check the value")
    if text.startswith("hf://"):  # huggingface_hub's grammar, hf://org/repo[@revision][/file] (hub_address.py)
        from ..contract.hub_address import parse_hub_address

        address = parse_hub_address(text)
        return WeightSource(repo_id=address.repo_id, filename=address.path or "model.safetensors",
                            revision=address.revision or "main")
    parsed = urlparse(text)
    if parsed.scheme in ("http", "https"):
        sha = None
        if parsed.fragment.startswith("sha256="):
            sha = parsed.fragment[len("sha256=") :]
            text = parsed._replace(fragment="").geturl()
        return WeightSource(url=text, sha256=sha)
    return WeightSource(path=text)


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
        self._lock = threading.Lock()
        self._mem: dict[str, list[Any]] = {}

    @staticmethod
    def _stamp(st: os.stat_result) -> list[Any]:
        return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]

    def get(self, real: str, st: os.stat_result, *, git: bool = False) -> tuple[str, str | None] | None:
        stamp = self._stamp(st)
        with self._lock:
            hit = self._mem.get(real)
        if hit is None:
            hit = self.read().get(real)
        if (isinstance(hit, list) and len(hit) == 6 and hit[:4] == stamp and isinstance(hit[4], str)
                and (isinstance(hit[5], str) or (hit[5] is None and not git))):
            with self._lock:
                self._mem[real] = hit
            return hit[4], hit[5]
        return None

    def put(self, real: str, st: os.stat_result, sha: str, git_sha1: str | None = None) -> None:
        entry = [*self._stamp(st), sha, git_sha1]
        with self._lock:
            self._mem[real] = entry
        self.update(real, entry)

    def forget(self, real: str) -> None:
        with self._lock:
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
        return value if isinstance(value, str) and _SHA256.match(value) and value.startswith(prefix) else None

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


def _wanted(expected: str) -> str | None:
    """The full digest a pin stands for: itself, or what a short pin was upgraded to (else None)."""
    return expected if len(expected) == 64 else _pins.full(expected)


def _matches(actual: str, expected: str) -> bool:
    full = _wanted(expected)
    return actual == full if full else actual.startswith(expected)


def _check_hash(path: Path, expected: str | None, origin: str, *, removed: bool, rehash: bool = False) -> str:
    """Compare the file's sha256 with a pinned full digest or prefix (upgraded to the full digest
    once a file matched it); return the full digest."""
    actual = cached_sha256(path, rehash=rehash)
    if not expected:
        return actual
    expected = expected.lower()
    full = _wanted(expected)
    if not _matches(actual, expected):
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


def is_offline() -> bool:
    """``HF_HUB_OFFLINE=1`` (read by huggingface_hub at import; tests patch its constant)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def fetch(
    source: WeightSource,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = False,
    name: str | None = None,
    rehash: bool = False,
) -> FetchedWeights:
    """Make the weights available as a verified local file, downloading into the cache when needed.

    ``name`` is the model name used in error messages (``zooadapt fetch NAME``). ``rehash``
    hashes the file even when an unchanged copy was hashed before (``zooadapt lock --check``).
    """
    if not isinstance(source, WeightSource):
        raise InvalidArgumentError(f"source={source!r}: give a zooadapt.WeightSource (parse_source reads a string)")
    _check_source_types(source)
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise InvalidArgumentError(f"cache_dir={cache_dir!r}: give a folder path as a str or Path, or None")
    if revision is not None:
        check_revision(revision)
    source = replace(source, sha256=check_pin(source.sha256, source.describe()))
    if source.path:
        return _local(Path(source.path).expanduser(), source, rehash=rehash)
    if source.url:
        return _from_url(source, cache_dir=cache_dir, progress=progress, force=force, name=name, rehash=rehash)
    return _from_hub_maybe_sharded(source, revision=revision or source.revision, cache_dir=cache_dir, force=force,
                                   progress=progress, name=name, rehash=rehash)


def _check_source_types(source: WeightSource) -> None:
    """A WeightSource built by a plugin or by hand holds strings where strings belong."""
    for field_name, allowed in (("repo_id", (str,)), ("url", (str,)), ("path", (str, os.PathLike)),
                                ("filename", (str,)), ("revision", (str,))):
        value = getattr(source, field_name)
        if value is not None and not isinstance(value, allowed):
            raise InvalidArgumentError(
                f"WeightSource {field_name}={value!r}: must be a string (a Hub repo id 'org/name', a URL, a path, a "
                "file name or a revision); fix the registry entry or plugin that built it")


def _local(path: Path, source: WeightSource, *, rehash: bool = False) -> FetchedWeights:
    try:
        return _local_file(path, source, rehash)
    except WeightsNotFoundError:  # itself an OSError (FileNotFoundError)
        raise
    except OSError as exc:  # a name too long, a permission denied, a folder that vanished
        raise WeightsNotFoundError(
            f"weights path {path} cannot be read ({exc.strerror or exc}); check the path passed as weights= and its "
            "permissions") from exc


def _local_file(path: Path, source: WeightSource, rehash: bool) -> FetchedWeights:
    from .shards import INDEX_NAMES, find_index, is_shard_index, read_index, stray_shards

    if path.is_dir():
        candidates = [path / n for n in _CHECKPOINT_NAMES if (path / n).is_file()]
        found = find_index(path)
        if found is not None:
            candidates.append(found)  # after any single file: one file first, safetensors first (as transformers)
        if not candidates:
            shards = stray_shards(path)
            if shards:
                raise WeightsNotFoundError(
                    f"directory {path} holds checkpoint shards ({', '.join(shards[:3])}"
                    f"{', …' if len(shards) > 3 else ''}) but no index saying which tensor each holds; copy the "
                    f"index ({' or '.join(INDEX_NAMES)}) beside them, or pass weights= the index's path")
            raise WeightsNotFoundError(
                f"directory {printable(path)} holds no checkpoint; expected one of {', '.join(_CHECKPOINT_NAMES)}, "
                f"or a sharded checkpoint's index ({', '.join(INDEX_NAMES)})"
            )
        path = candidates[0]
    if not path.is_file() and path.exists():  # a FIFO, a device, a socket: never read (it may never end)
        raise WeightsNotFoundError(
            f"weights file {printable(path)} is not a regular file (a pipe, a device or a socket), so it is not read: "
            "pass the path of a checkpoint file or of a folder holding one")
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {printable(path)} does not exist; check the path passed as weights=. "
                                   f"{_FORMS_HINT}")
    sha = _check_hash(path, source.sha256, str(path), removed=False, rehash=rehash) if source.sha256 else None
    fetched = FetchedWeights(path=path, origin=str(path), sha256=sha, kind="path")
    if not is_shard_index(path):
        return fetched
    index = read_index(path)
    shards = []
    for shard in index.shards:
        shard_path = index.present_shard(shard)
        shards.append((shard, FetchedWeights(path=shard_path, origin=str(shard_path), kind="path")))
    return replace(fetched, shards=tuple(shards))


_FORMS_HINT = ("weights= takes a file or directory path, a registry model name (weights='resnet18'), a timm Hub id "
               "(weights='timm/resnet34.tv_in1k') or an hf://org/repo[@revision][/file] address.")


_USE_LOCAL = "To use a copy you already have, pass weights=PATH."


def _prefetch_hint(name: str | None, address: str) -> str:
    return f"`zooadapt fetch {name or address}`"


# -- URLs ----------------------------------------------------------------------------------


def _url_hash(source: WeightSource, basename: str) -> str | None:
    """The pinned sha256 (or prefix), else torchvision's prefix in the file name (``resnet18-f37072fd.pth``)."""
    if source.sha256:
        return source.sha256.lower()
    match = re.search(r"-([a-f0-9]{8,64})\.", basename)
    return match.group(1) if match else None


def _url_basename(url: str) -> str:
    """The cache file name for a URL: its last path segment, never one that names a directory."""
    basename = os.path.basename(urlparse(url).path)
    if basename in ("", ".", "..") or "\\" in basename or basename.startswith("."):
        raise WeightSourceError(
            f"{url}: its path does not end in a file name zooadapt can cache under (got {basename!r}); "
            "give the URL of the file itself, or download it yourself and pass weights=PATH.")
    return basename


def _from_url(source: WeightSource, *, cache_dir: str | os.PathLike[str] | None, progress: bool, force: bool,
              name: str | None, rehash: bool = False) -> FetchedWeights:
    import urllib.error

    import torch.hub

    assert source.url is not None
    basename = _url_basename(source.url)
    expected = _url_hash(source, basename)
    if not expected:
        raise WeightSourceError(
            f"{source.url}: zooadapt downloads URLs only with a sha256 to check them against (at least 8 hex "
            "digits), and none is given. Append #sha256=<hex> to the URL, set sha256 in the registry entry, or "
            "download the file yourself and pass weights=PATH."
        )
    expected = check_pin(expected, source.url)
    assert expected is not None
    directory = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    target = directory / basename
    if target.is_file() and not force:
        if _matches(cached_sha256(target, rehash=rehash), expected):
            sha = _check_hash(target, expected, source.url, removed=False)  # records an upgraded short pin
            return FetchedWeights(path=target, origin=source.url, sha256=sha, kind="url")
        log.warning("%s holds other bytes than %s pins (sha256 %s…); downloading again", target, source.url,
                    expected[:16])
    if is_offline():
        raise OfflineCacheMissError(
            f"offline mode (HF_HUB_OFFLINE=1) and {source.url} is not cached at {target}; run "
            f"{_prefetch_hint(name, source.url)} on a connected machine, or copy the file there, or pass weights=PATH "
            "to a local copy."
        )
    directory.mkdir(parents=True, exist_ok=True)
    try:
        # torch.hub writes to a temporary file, checks the hash prefix, then renames: a failed,
        # interrupted or mismatching download never leaves a file at `target`.
        torch.hub.download_url_to_file(source.url, str(target), hash_prefix=_wanted(expected) or expected,
                                       progress=progress)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise WeightsNotFoundError(f"{source.url} answered 404 Not Found; check the URL") from exc
        raise DownloadError(f"could not download {source.url}: HTTP {exc.code} {exc.reason}. {_USE_LOCAL}") from exc
    except RuntimeError as exc:
        if "invalid hash value" in str(exc):
            raise IntegrityError(
                f"{source.url}: the downloaded bytes do not match the pinned sha256 {expected[:16]}… ({exc}). "
                "Nothing was cached. If the file changed on purpose, update the pinned sha256."
            ) from exc
        raise DownloadError(f"could not download {source.url}: {exc}. {_USE_LOCAL}") from exc
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise DownloadError(f"could not download {source.url}: {exc}. {_USE_LOCAL}") from exc
    sha = _check_hash(target, expected, source.url, removed=True, rehash=True)
    return FetchedWeights(path=target, origin=source.url, sha256=sha, kind="url")


# -- the Hub -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _silent_tqdm() -> type:
    """A progress-bar class that shows nothing (made once: a class per download cost every load)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Silent(hf_tqdm):  # per call, unlike the process-wide disable_progress_bars()
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


def _status(exc: BaseException | None) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _refused(where: str, status: int) -> WeightSourceError:
    return WeightSourceError(
        f"the Hub refused {where} (HTTP {status}): the repo is private or gated. Set HF_TOKEN to a token with "
        "access (`hf auth login`), or check the repo id."
    )


def _hub_error(exc: Exception, source: WeightSource, revision: str, name: str | None) -> Exception:
    """Turn a huggingface_hub error into one of ours, naming the part that was wrong."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, filename = source.repo_id, source.filename
    where = replace(source, revision=revision).describe()
    hint = _prefetch_hint(name, where)
    if isinstance(exc, GatedRepoError):
        return WeightSourceError(f"Hub repo {repo!r} is gated: accept its terms on the Hub and set HF_TOKEN")
    if isinstance(exc, RepositoryNotFoundError):
        return HubRepoNotFoundError(
            f"Hub repo {repo!r} not found (or private and no token was sent); check the repo id, or set "
            "HF_TOKEN for a private repo"
        )
    if isinstance(exc, RevisionNotFoundError):
        return HubRevisionNotFoundError(
            f"revision {revision!r} not found in Hub repo {repo!r}; use a branch, tag or commit that exists"
        )
    if isinstance(exc, LocalEntryNotFoundError):
        cause = exc.__cause__
        where_parts = f"repo {repo!r}, file {filename!r}, revision {revision!r}"
        if is_offline() or isinstance(cause, OfflineModeIsEnabled):
            return OfflineCacheMissError(
                f"offline mode (HF_HUB_OFFLINE=1) and the weights are not in the Hub cache: {where_parts}. "
                f"Prefetch them on a connected machine with {hint} (same HF_HOME, or copy the cache "
                "directory), or pass weights=PATH to a local copy."
            )
        status = _status(cause)
        if status in (401, 403):
            return _refused(where, status)
        if status is not None:
            return DownloadError(
                f"the Hub answered HTTP {status} for {where_parts}, also after huggingface_hub's retries, and "
                f"the file is not cached. Try again later; nothing was written to the cache. {_USE_LOCAL}"
            )
        return DownloadError(
            f"could not reach the Hub for {where_parts} ({type(cause).__name__ if cause else 'no connection'}: "
            f"{cause or exc}), and the file is not cached. On a machine without internet, prefetch with {hint} "
            f"elsewhere and set HF_HUB_OFFLINE=1. {_USE_LOCAL}"
        )
    if isinstance(exc, EntryNotFoundError):
        return HubFileNotFoundError(
            f"file {filename!r} not found in Hub repo {repo!r} at revision {revision!r}; check the file name"
        )
    if isinstance(exc, ValueError):  # huggingface_hub's validation of repo ids and file paths
        return WeightSourceError(f"{where} is not a valid Hub address: {exc}")
    status = _status(exc)
    if status in (401, 403):
        return _refused(where, status)
    detail = f"HTTP {status}" if status is not None else f"{type(exc).__name__}: {exc}"
    return DownloadError(
        f"could not download {where} ({detail}), also after retries; nothing was written to the cache. "
        f"Try again later. {_USE_LOCAL}"
    )


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


_swept: set[Path] = set()
"""Blobs whose leftovers this process removed: a killed download leaves its partial file once,
so a blob is swept on its first load in a process, not on every load."""


def _sweep_partials(blob: Path) -> None:
    """Remove ``<etag>.*.incomplete`` files a killed download left (under the blob's lock)."""
    if blob in _swept:
        return
    leftovers = list(blob.parent.glob(f"{blob.name}.*incomplete"))
    if not leftovers:
        _swept.add(blob)
        return
    with _holding(blob) as held:
        if held:
            for path in leftovers:
                path.unlink(missing_ok=True)
            log.info("removed %d partial download(s) of %s", len(leftovers), blob.name)
            _swept.add(blob)


def discard(fetched: FetchedWeights) -> bool:
    """Remove a cached download that failed verification; a user's own file is never touched.

    Links are removed, never followed: a Hub blob is deleted only when it was checked to lie
    in its repo's ``blobs/`` folder (``fetched.blob``), whatever the snapshot entry points at.
    """
    if fetched.kind == "path":
        return False
    from .hub_probe import forget_cached

    forget_cached()
    _memo.forget(os.path.realpath(fetched.path))
    if fetched.kind == "url":
        fetched.path.unlink(missing_ok=True)  # a link planted at the name goes, its target stays
        return True
    blob = fetched.blob
    if blob is None:
        fetched.path.unlink(missing_ok=True)
        return True
    _memo.forget(str(blob))
    with _holding(blob):
        fetched.path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
    return True


def _download(source: WeightSource, revision: str, cache_dir: str | os.PathLike[str] | None, force: bool,
              progress: bool) -> str:
    """``hf_hub_download``, retrying a body download the Hub answered with a 5xx."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    assert source.repo_id is not None
    tqdm_class = None if progress else _silent_tqdm()
    waits = (*_RETRY_WAITS, None)
    for attempt, wait in enumerate(waits, start=1):
        try:
            return hf_hub_download(source.repo_id, source.filename, revision=revision, cache_dir=cache_dir,
                                   force_download=force, tqdm_class=tqdm_class)
        except HfHubHTTPError as exc:
            if wait is None or _status(exc) not in _TRANSIENT:
                raise
            log.warning("the Hub answered HTTP %s for %s/%s; retrying in %.1f s (attempt %d of %d)",
                        _status(exc), source.repo_id, source.filename, wait, attempt + 1, len(waits))
            time.sleep(wait)
    raise AssertionError("unreachable")


def _from_hub(
    source: WeightSource,
    *,
    revision: str,
    cache_dir: str | os.PathLike[str] | None,
    force: bool,
    progress: bool,
    name: str | None,
    rehash: bool = False,
) -> FetchedWeights:
    assert source.repo_id is not None
    revision = check_revision(revision)
    _check_hub_names(source)
    origin = replace(source, revision=revision).describe()
    from .hub_probe import answers_checked, check_reachable

    check_reachable(source, revision, cache_dir=cache_dir, force=force, name=name)  # no host: fail now, not in 24 s
    try:
        with answers_checked(origin):  # no cache path from a hostile answer (`../` in an ETag)
            path = _download(source, revision, cache_dir, force, progress)
    except HubAnswerError:
        raise
    except Exception as exc:
        raise _hub_error(exc, source, revision, name) from exc
    pointer = Path(path)
    commit, blob = _snapshot_entry(pointer, source.filename, origin)
    fetched = FetchedWeights(path=pointer, origin=origin, commit=commit, kind="hub", blob=blob)
    target = blob or pointer
    if blob is not None and _GIT_SHA1.match(blob.name):  # kept in git, not LFS: named by its git blob sha1
        actual, git_sha1 = file_digests(blob, git=True, rehash=rehash, resolved=True)
        advertised, got = blob.name, git_sha1
    else:  # a blob was checked to have no link on its way from the cache folder; a plain snapshot file was not
        actual = cached_sha256(target, rehash=rehash, resolved=blob is not None)
        advertised = blob.name if blob is not None else None
        got = actual
    if advertised is not None and got != advertised:
        discard(fetched)
        raise IntegrityError(
            f"{origin}: the cached bytes do not match the {'sha256' if len(advertised) == 64 else 'git sha1'} the "
            f"Hub advertises (got {got[:16]}…, expected {advertised[:16]}…): the download was corrupt or the cache "
            "was tampered with. The file was removed from the cache and not loaded; load again to download it afresh."
        )
    if source.sha256:
        try:
            _check_hash(target, source.sha256, origin, removed=True)
        except IntegrityError:
            discard(fetched)
            raise
    if blob is not None:
        _sweep_partials(blob)
    return replace(fetched, sha256=actual)


def _from_hub_maybe_sharded(source: WeightSource, *, revision: str, cache_dir: str | os.PathLike[str] | None,
                            force: bool, progress: bool, name: str | None, rehash: bool) -> FetchedWeights:
    """A Hub file; for a shard index, the index and then exactly the shards it names, each at the
    index's commit. A usual weight file the repo does not hold (``model.safetensors``) is looked
    for as its index (``model.safetensors.index.json``), as transformers does."""
    from .shards import index_for

    def get(src: WeightSource) -> FetchedWeights:
        fetched = _from_hub(src, revision=revision, cache_dir=cache_dir, force=force, progress=progress, name=name,
                            rehash=rehash)
        return _with_hub_shards(fetched, src, cache_dir=cache_dir, force=force, progress=progress, name=name,
                                rehash=rehash)

    index = index_for(source.filename)
    if index is None:
        return get(source)
    sharded = replace(source, filename=index)
    if _known_absent(source, revision, cache_dir) and not force:  # no HEAD for a 404 huggingface_hub recorded
        return get(sharded)
    try:
        return get(source)
    except HubFileNotFoundError as missing:
        try:
            return get(sharded)
        except HubFileNotFoundError:
            raise missing from None


def _known_absent(source: WeightSource, revision: str, cache_dir: str | os.PathLike[str] | None) -> bool:
    """huggingface_hub recorded that the file does not exist at this commit (``.no_exist``): asked
    only for a commit (which never changes) or offline (where asking is not possible)."""
    if not (_COMMIT.match(revision) or is_offline()):
        return False
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    assert source.repo_id is not None
    try:
        return try_to_load_from_cache(source.repo_id, source.filename, cache_dir=cache_dir,
                                      revision=revision) is _CACHED_NO_EXIST
    except (ValueError, OSError):
        return False


def _with_hub_shards(fetched: FetchedWeights, source: WeightSource, *, cache_dir: str | os.PathLike[str] | None,
                     force: bool, progress: bool, name: str | None, rehash: bool) -> FetchedWeights:
    """``fetched`` with the shards its index names, each downloaded (or found in the cache) at the
    index's commit and checked like any Hub file; ``fetched`` itself when it is not an index."""
    from .shards import MissingShardError, is_shard_index, read_index

    if not is_shard_index(source.filename):
        return fetched
    commit = fetched.commit or source.revision
    folder = source.filename.rsplit("/", 1)[0] + "/" if "/" in source.filename else ""
    shards = []
    for shard in read_index(fetched.path).shards:
        part = replace(source, filename=folder + shard, sha256=None)
        try:
            got = _from_hub(part, revision=commit, cache_dir=cache_dir, force=force, progress=progress, name=name,
                            rehash=rehash)
        except HubFileNotFoundError as exc:
            raise MissingShardError(
                f"{fetched.origin} names shard {shard!r}, but Hub repo {source.repo_id!r} holds no such file at commit "
                f"{commit}: the upload is incomplete. Upload the missing shard, or load a revision whose index and "
                "shards were pushed together (revision=...).") from exc
        shards.append((shard, got))
    return replace(fetched, shards=tuple(shards))


def _check_hub_names(source: WeightSource) -> None:
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


def _snapshot_entry(pointer: Path, filename: str, origin: str) -> tuple[str, Path | None]:
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
    if commit_dir.parent.name != "snapshots" or not _COMMIT.match(commit_dir.name):
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
        if blob.parent != blobs or not (_SHA256.match(blob.name) or _GIT_SHA1.match(blob.name)):
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
