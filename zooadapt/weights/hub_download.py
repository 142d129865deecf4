"""Hub files through ``hf_hub_download`` itself, its errors turned into ours, each file checked.

The Hub path is ``hf_hub_download`` itself, so the Hub cache, ``HF_HOME``, ``HF_HUB_OFFLINE``,
``HF_TOKEN``, revisions, file locks and atomic renames behave as users of transformers/timm
expect. This module adds what the client leaves out:

- its errors become ours, one type per fault, naming what was wrong and what to do;
- a body download the Hub answers with a 5xx is retried (the client only retries the
  metadata request, and resumes broken connections itself);
- every Hub file is checked once against the sha256 the Hub advertises (the ETag of an LFS
  file is its sha256) and against a pinned sha256 when there is one (``digests``); a file
  that fails is removed from the cache, never loaded (``hub_cache.discard``);
- a sharded checkpoint's shards are fetched at its index's commit.

The endpoint's answer is checked before the client builds paths from it
(``hub_probe.answers_checked``: the ETag must be a sha256 or git sha1, the commit 40 hex), and
the snapshot entry it returns is checked to lie in the cache (``hub_cache.snapshot_entry``).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..contract.caches import remembered
from ..contract.errors import (
    DownloadError,
    HubAnswerError,
    HubFileNotFoundError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
    IntegrityError,
    OfflineCacheMissError,
    WeightSourceError,
)
from ..contract.family import WeightSource
from .digests import GIT_SHA1, cached_sha256, check_hash, file_digests
from .fetched import USE_LOCAL, FetchedWeights, is_offline, prefetch_hint
from .hub_cache import check_hub_names, check_revision, discard, snapshot_entry, sweep_partials

__all__ = ["from_hub"]

log = logging.getLogger("zooadapt")

_TRANSIENT = (500, 502, 503, 504)
_RETRY_WAITS: tuple[float, ...] = (1.0, 4.0)
"""Waits before zooadapt's own retries of a body download answered with a 5xx (tests shorten them)."""


@remembered("silent progress bar class", 1, "nothing: one class serves every download")
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


def _cause(exc: BaseException) -> str:
    """`` (because: ...)`` naming the error the client's own error came from, if any."""
    cause = exc.__cause__ or exc.__context__
    return f" (because: {type(cause).__name__}: {cause})" if cause is not None else ""


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _hub_error(exc: Exception, source: WeightSource, revision: str, name: str | None) -> Exception:
    """Turn a huggingface_hub error into one of ours, naming the part that was wrong."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, filename = source.repo_id, source.filename
    where = replace(source, revision=revision).describe()
    hint = prefetch_hint(name, where)
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
                f"the file is not cached. Try again later; nothing was written to the cache. {USE_LOCAL}"
            )
        return DownloadError(
            f"could not reach the Hub for {where_parts} ({type(cause).__name__ if cause else 'no connection'}: "
            f"{cause or exc}), and the file is not cached. On a machine without internet, prefetch with {hint} "
            f"elsewhere and set HF_HUB_OFFLINE=1. {USE_LOCAL}"
        )
    if isinstance(exc, EntryNotFoundError):
        return HubFileNotFoundError(
            f"file {filename!r} not found in Hub repo {repo!r} at revision {revision!r}; check the file name"
        )
    if isinstance(exc, HFValidationError):  # huggingface_hub's validation of repo ids and file paths
        return WeightSourceError(f"{where} is not a valid Hub address: {exc}")
    if isinstance(exc, ValueError):  # the client refused what it was given or answered: not the address
        return DownloadError(
            f"huggingface_hub could not download {where}: {exc}{_cause(exc)}. Nothing was written to the cache; "
            f"if the endpoint ({_endpoint()}) is not the Hub, check HF_ENDPOINT. {USE_LOCAL}")
    status = _status(exc)
    if status in (401, 403):
        return _refused(where, status)
    detail = f"HTTP {status}" if status is not None else f"{type(exc).__name__}: {exc}"
    return DownloadError(
        f"could not download {where} ({detail}), also after retries; nothing was written to the cache. "
        f"Try again later. {USE_LOCAL}"
    )


def _download(source: WeightSource, revision: str, cache_dir: str | os.PathLike[str] | None, force: bool,
              progress: bool) -> str:
    """``hf_hub_download``, retrying a body download the Hub answered with a 5xx."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    assert source.repo_id is not None
    tqdm_class = None if progress else _silent_tqdm()
    folder = None if cache_dir is None else os.fspath(cache_dir)  # huggingface_hub's annotation: str or Path
    waits = (*_RETRY_WAITS, None)
    for attempt, wait in enumerate(waits, start=1):
        try:
            return hf_hub_download(source.repo_id, source.filename, revision=revision, cache_dir=folder,
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
    check_hub_names(source)
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
    commit, blob = snapshot_entry(pointer, source.filename, origin)
    fetched = FetchedWeights(path=pointer, origin=origin, commit=commit, kind="hub", blob=blob)
    target = blob or pointer
    if blob is not None and GIT_SHA1.match(blob.name):  # kept in git, not LFS: named by its git blob sha1
        actual, git_sha1 = file_digests(blob, git=True, rehash=rehash, resolved=True)
        advertised: str | None = blob.name
        got: str | None = git_sha1
    else:  # a blob was checked to have no link on its way from the cache folder; a plain snapshot file was not
        actual = cached_sha256(target, rehash=rehash, resolved=blob is not None)
        advertised = blob.name if blob is not None else None
        got = actual
    if advertised is not None and got != advertised:
        discard(fetched)
        raise IntegrityError(
            f"{origin}: the cached bytes do not match the {'sha256' if len(advertised) == 64 else 'git sha1'} the "
            f"Hub advertises (got {(got or '')[:16]}…, expected {advertised[:16]}…): the download was corrupt or the "
            "cache was tampered with. The file was removed from the cache and not loaded; load again to download it "
            "afresh."
        )
    if source.sha256:
        try:
            check_hash(target, source.sha256, origin, removed=True)
        except IntegrityError:
            discard(fetched)
            raise
    if blob is not None:
        sweep_partials(blob)
    return replace(fetched, sha256=actual)


def from_hub(source: WeightSource, *, revision: str, cache_dir: str | os.PathLike[str] | None,
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
    if not (GIT_SHA1.match(revision) or is_offline()):
        return False
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    assert source.repo_id is not None
    try:
        return try_to_load_from_cache(source.repo_id, source.filename,
                                      cache_dir=None if cache_dir is None else os.fspath(cache_dir),
                                      revision=revision) is _CACHED_NO_EXIST
    except (ValueError, OSError):
        return False


def _with_hub_shards(fetched: FetchedWeights, source: WeightSource, *, cache_dir: str | os.PathLike[str] | None,
                     force: bool, progress: bool, name: str | None, rehash: bool) -> FetchedWeights:
    """``fetched`` with the shards its index names, each downloaded (or found in the cache) at the
    index's commit and checked like any Hub file; ``fetched`` itself when it is not an index."""
    from .shards import WeightsNotFoundError, is_shard_index, read_index

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
            raise WeightsNotFoundError(
                f"{fetched.origin} names shard {shard!r}, but Hub repo {source.repo_id!r} holds no such file at commit "
                f"{commit}: the upload is incomplete. Upload the missing shard, or load a revision whose index and "
                "shards were pushed together (revision=...).") from exc
        shards.append((shard, got))
    return replace(fetched, shards=tuple(shards))
