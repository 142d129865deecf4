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
- a hash, once computed, is remembered by (path, size, mtime, inode), so a warm load costs
  a ``stat`` instead of re-reading the file (sha256 runs at ~1.2 GB/s here: 80 ms per 100 MB);
- partial files left by a killed download are swept on the next successful one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .errors import (
    DownloadError,
    HubFileNotFoundError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    IntegrityError,
    OfflineCacheMissError,
    WeightsNotFoundError,
    WeightSourceError,
)
from .family import WeightSource

__all__ = ["FetchedWeights", "fetch", "parse_source", "sha256_of", "cached_sha256", "discard", "is_offline"]

log = logging.getLogger("zooadapt")

_CHECKPOINT_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt", "checkpoint.pth")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-fA-F]{8,64}$")
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

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def parse_source(spec: str | os.PathLike[str] | WeightSource) -> WeightSource:
    """Read ``weights=`` as a user writes it.

    A path; a URL, optionally ending in ``#sha256=<hex>`` (pip's convention) to pin its hash;
    or ``hf://org/repo[/file][@revision]``.
    """
    if isinstance(spec, WeightSource):
        return spec
    text = os.fspath(spec)
    if text.startswith("hf://"):
        body, _, revision = text[len("hf://") :].partition("@")
        parts = [p for p in body.split("/") if p]
        if len(parts) < 2:
            raise WeightsNotFoundError(f"{text!r} is not a Hub address; write hf://org/repo[/file][@revision]")
        repo_id = "/".join(parts[:2])
        filename = "/".join(parts[2:]) or "model.safetensors"
        return WeightSource(repo_id=repo_id, filename=filename, revision=revision or "main")
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


class _HashMemo:
    """sha256 digests already computed, keyed by real path and checked against (size, mtime, inode).

    Kept in memory and in ``verified-sha256.json`` in zooadapt's cache directory
    (``zooadapt.paths.cache_dir()``), so a new process does not re-read a file it hashed before. A file
    rewritten in place gets a new mtime and is hashed again. Concurrent writers may drop each
    other's entries; the cost of a lost entry is one more hash, never a wrong answer.
    """

    limit = 2000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mem: dict[str, list[Any]] = {}

    @staticmethod
    def location() -> Path:
        from .paths import cache_dir

        return cache_dir() / "verified-sha256.json"

    def _read_disk(self) -> dict[str, list[Any]]:
        try:
            data = json.loads(self.location().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _stamp(st: os.stat_result) -> list[Any]:
        return [st.st_size, st.st_mtime_ns, st.st_ino]

    def get(self, real: str, st: os.stat_result) -> str | None:
        stamp = self._stamp(st)
        with self._lock:
            hit = self._mem.get(real)
        if hit is None:
            hit = self._read_disk().get(real)
        if isinstance(hit, list) and len(hit) == 4 and hit[:3] == stamp and isinstance(hit[3], str):
            with self._lock:
                self._mem[real] = hit
            return hit[3]
        return None

    def put(self, real: str, st: os.stat_result, sha: str) -> None:
        entry = [*self._stamp(st), sha]
        with self._lock:
            self._mem[real] = entry
        path = self.location()
        try:
            data = self._read_disk()
            data.pop(real, None)
            data[real] = entry
            if len(data) > self.limit:
                data = dict(list(data.items())[-self.limit :])
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".verified-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, path)
        except OSError as exc:  # a read-only cache still works, it just hashes again next time
            log.debug("could not record verified hash in %s: %s", path, exc)

    def forget(self, real: str) -> None:
        with self._lock:
            self._mem.pop(real, None)


_memo = _HashMemo()


def cached_sha256(path: str | os.PathLike[str]) -> str:
    """The file's sha256, hashed only when the file is new or changed since it was last hashed."""
    real = os.path.realpath(path)
    st = os.stat(real)
    sha = _memo.get(real, st)
    if sha is None:
        sha = sha256_of(real)
        _memo.put(real, st, sha)
    return sha


def _check_hash(path: Path, expected: str | None, origin: str, *, removed: bool) -> str:
    """Compare the file's sha256 with a pinned full digest or prefix; return the full digest."""
    actual = cached_sha256(path)
    if expected and not actual.startswith(expected.lower()):
        what = "It was removed from the cache and not loaded" if removed else "It was not loaded"
        raise IntegrityError(
            f"{origin}: sha256 is {actual[:16]}…, expected {expected.lower()[:16]}…. {what}. If the source "
            "changed on purpose, update the pinned sha256 (registry entry, lock file or URL #sha256=); "
            "otherwise the file is corrupt or was tampered with: fetch it again."
        )
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
) -> FetchedWeights:
    """Make the weights available as a verified local file, downloading into the cache when needed.

    ``name`` is the model name used in error messages (``zooadapt fetch NAME``).
    """
    if source.path:
        return _local(Path(source.path).expanduser(), source)
    if source.url:
        return _from_url(source, cache_dir=cache_dir, progress=progress, force=force, name=name)
    return _from_hub(source, revision=revision or source.revision, cache_dir=cache_dir, force=force,
                     progress=progress, name=name)


def _local(path: Path, source: WeightSource) -> FetchedWeights:
    if path.is_dir():
        candidates = [path / n for n in _CHECKPOINT_NAMES if (path / n).is_file()]
        if not candidates:
            raise WeightsNotFoundError(
                f"directory {path} holds no checkpoint; expected one of {', '.join(_CHECKPOINT_NAMES)}"
            )
        path = candidates[0]  # safetensors first
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist; check the path passed as weights=")
    sha = _check_hash(path, source.sha256, str(path), removed=False) if source.sha256 else None
    return FetchedWeights(path=path, origin=str(path), sha256=sha, kind="path")


def _prefetch_hint(name: str | None, address: str) -> str:
    return f"`zooadapt fetch {name or address}`"


# -- URLs ----------------------------------------------------------------------------------


def _url_hash(source: WeightSource, basename: str) -> str | None:
    """The pinned sha256 (or prefix), else torchvision's prefix in the file name (``resnet18-f37072fd.pth``)."""
    if source.sha256:
        return source.sha256.lower()
    match = re.search(r"-([a-f0-9]{8,64})\.", basename)
    return match.group(1) if match else None


def _from_url(source: WeightSource, *, cache_dir: str | os.PathLike[str] | None, progress: bool, force: bool,
              name: str | None) -> FetchedWeights:
    import urllib.error

    import torch.hub

    assert source.url is not None
    basename = os.path.basename(urlparse(source.url).path) or "weights"
    expected = _url_hash(source, basename)
    if not expected or not _HEX.match(expected):
        raise WeightSourceError(
            f"{source.url}: zooadapt downloads URLs only with a sha256 to check them against (at least 8 hex "
            "digits), and none is given. Append #sha256=<hex> to the URL, set sha256 in the registry entry, or "
            "download the file yourself and pass weights=PATH."
        )
    directory = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    target = directory / basename
    if target.is_file() and not force:
        if cached_sha256(target).startswith(expected):
            return FetchedWeights(path=target, origin=source.url, sha256=cached_sha256(target), kind="url")
        log.warning("%s holds other bytes than %s pins (sha256 %s…); downloading again", target, source.url,
                    expected[:16])
    if is_offline():
        raise OfflineCacheMissError(
            f"offline mode (HF_HUB_OFFLINE=1) and {source.url} is not cached at {target}; run "
            f"{_prefetch_hint(name, source.url)} on a connected machine, or copy the file there."
        )
    directory.mkdir(parents=True, exist_ok=True)
    try:
        # torch.hub writes to a temporary file, checks the hash prefix, then renames: a failed,
        # interrupted or mismatching download never leaves a file at `target`.
        torch.hub.download_url_to_file(source.url, str(target), hash_prefix=expected, progress=progress)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise WeightsNotFoundError(f"{source.url} answered 404 Not Found; check the URL") from exc
        raise DownloadError(f"could not download {source.url}: HTTP {exc.code} {exc.reason}") from exc
    except RuntimeError as exc:
        if "invalid hash value" in str(exc):
            raise IntegrityError(
                f"{source.url}: the downloaded bytes do not match the pinned sha256 {expected[:16]}… ({exc}). "
                "Nothing was cached. If the file changed on purpose, update the pinned sha256."
            ) from exc
        raise DownloadError(f"could not download {source.url}: {exc}") from exc
    except (OSError, urllib.error.URLError) as exc:
        raise DownloadError(f"could not download {source.url}: {exc}") from exc
    return FetchedWeights(path=target, origin=source.url, sha256=cached_sha256(target), kind="url")


# -- the Hub -------------------------------------------------------------------------------


def _silent_tqdm() -> type:
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
    where = f"hf://{repo}/{filename}@{revision}"
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
                "the file is not cached. Try again later; nothing was written to the cache."
            )
        return DownloadError(
            f"could not reach the Hub for {where_parts} ({type(cause).__name__ if cause else 'no connection'}: "
            f"{cause or exc}), and the file is not cached. On a machine without internet, prefetch with {hint} "
            "elsewhere and set HF_HUB_OFFLINE=1."
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
        "Try again later."
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


def _sweep_partials(blob: Path) -> None:
    """Remove ``<etag>.*.incomplete`` files a killed download left (under the blob's lock)."""
    leftovers = list(blob.parent.glob(f"{blob.name}.*incomplete"))
    if not leftovers:
        return
    with _holding(blob) as held:
        if held:
            for path in leftovers:
                path.unlink(missing_ok=True)
            log.info("removed %d partial download(s) of %s", len(leftovers), blob.name)


def discard(fetched: FetchedWeights) -> bool:
    """Remove a cached download that failed verification; a user's own file is never touched."""
    if fetched.kind == "path":
        return False
    if fetched.kind == "url":
        _memo.forget(os.path.realpath(fetched.path))
        fetched.path.unlink(missing_ok=True)
        return True
    pointer = fetched.path
    blob = pointer.resolve()
    _memo.forget(str(blob))
    with _holding(blob):
        pointer.unlink(missing_ok=True)
        if blob != pointer:
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
) -> FetchedWeights:
    assert source.repo_id is not None
    origin = f"hf://{source.repo_id}/{source.filename}@{revision}"
    try:
        path = _download(source, revision, cache_dir, force, progress)
    except Exception as exc:
        raise _hub_error(exc, source, revision, name) from exc
    pointer = Path(path)
    blob = pointer.resolve()
    commit = pointer.parent.name if len(pointer.parent.name) == 40 else None
    fetched = FetchedWeights(path=pointer, origin=origin, commit=commit, kind="hub")
    actual = cached_sha256(blob)
    if _SHA256.match(blob.name) and actual != blob.name:
        discard(fetched)
        raise IntegrityError(
            f"{origin}: the downloaded bytes do not match the sha256 the Hub advertises (got {actual[:16]}…, "
            f"expected {blob.name[:16]}…). The file was removed from the cache and not loaded; load again to "
            "download it afresh."
        )
    try:
        _check_hash(blob, source.sha256, origin, removed=True)
    except IntegrityError:
        discard(fetched)
        raise
    _sweep_partials(blob)
    return replace(fetched, sha256=actual)
