"""Fetching weights: a Hub file through huggingface_hub, a URL through torch.hub, or a local path.

The Hub path is ``hf_hub_download`` itself, so the Hub cache, ``HF_HOME``,
``HF_HUB_OFFLINE``, ``HF_TOKEN``, revisions, locking and atomic renames behave as users
of transformers/timm expect. This module only turns the client's errors into ours, with the
name that was wrong and what to do.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import (
    IntegrityError,
    OfflineCacheMissError,
    WeightsNotFoundError,
    WeightSourceError,
)
from .family import WeightSource

__all__ = ["FetchedWeights", "fetch", "parse_source", "sha256_of"]

_CHECKPOINT_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt", "checkpoint.pth")


@dataclass(frozen=True)
class FetchedWeights:
    """A local file holding the weights, and where it came from."""

    path: Path
    origin: str
    commit: str | None = None


def parse_source(spec: str | os.PathLike[str] | WeightSource) -> WeightSource:
    """Read ``weights=`` as a user writes it: a path, a URL, or ``hf://org/repo[/file][@rev]``."""
    if isinstance(spec, WeightSource):
        return spec
    text = os.fspath(spec)
    if text.startswith("hf://"):
        body, _, revision = text[len("hf://") :].partition("@")
        parts = body.split("/")
        if len(parts) < 2:
            raise WeightsNotFoundError(f"{text!r} is not a Hub address; write hf://org/repo[/file][@revision]")
        repo_id = "/".join(parts[:2])
        filename = "/".join(parts[2:]) or "model.safetensors"
        return WeightSource(repo_id=repo_id, filename=filename, revision=revision or "main")
    if urlparse(text).scheme in ("http", "https"):
        return WeightSource(url=text)
    return WeightSource(path=text)


def sha256_of(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str | None, origin: str) -> None:
    if not expected:
        return
    actual = sha256_of(path)
    if not actual.startswith(expected.lower()):
        raise IntegrityError(
            f"{origin}: sha256 is {actual[:16]}…, expected {expected[:16]}…. The file was not used. "
            "If the source legitimately changed, update the sha256 in the registry or lock file; "
            "otherwise delete the cached file and fetch again."
        )


def fetch(
    source: WeightSource,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = False,
) -> FetchedWeights:
    """Make the weights available as a local file, downloading into the cache when needed."""
    if source.path:
        return _local(Path(source.path).expanduser(), source)
    if source.url:
        return _from_url(source, cache_dir=cache_dir, progress=progress)
    return _from_hub(source, revision=revision or source.revision, cache_dir=cache_dir, force=force,
                     progress=progress)


def _local(path: Path, source: WeightSource) -> FetchedWeights:
    if path.is_dir():
        candidates = [path / n for n in _CHECKPOINT_NAMES if (path / n).is_file()]
        if not candidates:
            raise WeightsNotFoundError(
                f"directory {path} holds no checkpoint; expected one of {', '.join(_CHECKPOINT_NAMES)}"
            )
        path = candidates[0]
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist; check the path passed as weights=")
    _verify(path, source.sha256, str(path))
    return FetchedWeights(path=path, origin=str(path))


def _from_url(source: WeightSource, *, cache_dir: str | os.PathLike[str] | None, progress: bool) -> FetchedWeights:
    import torch.hub

    assert source.url is not None
    directory = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    target = directory / os.path.basename(urlparse(source.url).path)
    if not target.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        if _offline():
            raise OfflineCacheMissError(
                f"offline mode (HF_HUB_OFFLINE=1) and {source.url} is not cached at {target}; "
                "run `zooadapt fetch NAME` on a connected machine, or copy the file there."
            )
        try:
            # torch.hub writes to a temporary file, checks the hash prefix, then renames:
            # a failed or interrupted download never leaves a file at `target`.
            torch.hub.download_url_to_file(source.url, str(target), hash_prefix=None, progress=progress)
        except Exception as exc:
            raise WeightSourceError(f"could not download {source.url}: {exc}") from exc
    try:
        _verify(target, source.sha256, source.url)
    except IntegrityError:
        target.unlink(missing_ok=True)  # never keep a bad file as if it were good
        raise
    return FetchedWeights(path=target, origin=source.url)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _from_hub(
    source: WeightSource,
    *,
    revision: str,
    cache_dir: str | os.PathLike[str] | None,
    force: bool,
    progress: bool,
) -> FetchedWeights:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    assert source.repo_id is not None
    where = f"{source.repo_id}/{source.filename}@{revision}"
    toggle = not progress and not are_progress_bars_disabled()
    if toggle:
        disable_progress_bars()
    try:
        path = hf_hub_download(
            source.repo_id, source.filename, revision=revision, cache_dir=cache_dir, force_download=force
        )
    except GatedRepoError as exc:
        raise WeightSourceError(
            f"Hub repo {source.repo_id!r} is gated: accept its terms on the Hub and set HF_TOKEN"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise WeightsNotFoundError(
            f"Hub repo {source.repo_id!r} not found (or private without a token); check the repo id, "
            "or set HF_TOKEN for a private repo"
        ) from exc
    except RevisionNotFoundError as exc:
        raise WeightsNotFoundError(
            f"revision {revision!r} not found in Hub repo {source.repo_id!r}; use a branch, tag or commit "
            "that exists"
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise OfflineCacheMissError(
            f"{where} is not in the local Hub cache and the Hub cannot be reached "
            f"({'HF_HUB_OFFLINE=1' if _offline() else 'no connection'}). Prefetch it on a connected machine "
            "with `zooadapt fetch NAME` (same HF_HOME), or pass weights=PATH to a local copy."
        ) from exc
    except EntryNotFoundError as exc:
        raise WeightsNotFoundError(
            f"file {source.filename!r} not found in Hub repo {source.repo_id!r} at revision {revision!r}"
        ) from exc
    except OSError as exc:
        raise WeightSourceError(f"could not fetch {where}: {exc}") from exc
    finally:
        if toggle:
            enable_progress_bars()
    local = Path(path)
    commit = local.parent.name if len(local.parent.name) == 40 else None
    try:
        _verify(local, source.sha256, f"hf://{where}")
    except IntegrityError:
        _evict(local)
        raise
    return FetchedWeights(path=local, origin=f"hf://{where}", commit=commit)


def _evict(pointer: Path) -> None:
    """Remove a cached Hub file (its snapshot link and blob) so a bad file is never reused."""
    blob = pointer.resolve()
    pointer.unlink(missing_ok=True)
    if blob != pointer:
        blob.unlink(missing_ok=True)
