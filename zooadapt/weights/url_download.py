"""Weights from a URL: downloaded through ``torch.hub`` only with a sha256 to check them against.

The file lands in torch.hub's ``checkpoints/`` folder (or ``cache_dir``) under the URL's last
path segment; torch.hub writes a temporary file, checks the hash prefix and renames, so a failed
or mismatching download never leaves a file behind. A cached copy is served when its digest
matches the pin (``digests``), without a request.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from ..contract.errors import (
    DownloadError,
    IntegrityError,
    OfflineCacheMissError,
    WeightsNotFoundError,
    WeightSourceError,
)
from ..contract.family import WeightSource
from .digests import cached_sha256, check_hash, check_pin, full_digest, pin_matches
from .fetched import USE_LOCAL, FetchedWeights, is_offline, prefetch_hint

__all__ = ["from_url"]

log = logging.getLogger("zooadapt")


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


def from_url(source: WeightSource, *, cache_dir: str | os.PathLike[str] | None, progress: bool, force: bool,
             name: str | None, rehash: bool = False) -> FetchedWeights:
    """The URL's file, from the cache when its digest matches the pin, else downloaded and checked."""
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
        if pin_matches(cached_sha256(target, rehash=rehash), expected):
            sha = check_hash(target, expected, source.url, removed=False)  # records an upgraded short pin
            return FetchedWeights(path=target, origin=source.url, sha256=sha, kind="url")
        log.warning("%s holds other bytes than %s pins (sha256 %s…); downloading again", target, source.url,
                    expected[:16])
    if is_offline():
        raise OfflineCacheMissError(
            f"offline mode (HF_HUB_OFFLINE=1) and {source.url} is not cached at {target}; run "
            f"{prefetch_hint(name, source.url)} on a connected machine, or copy the file there, or pass weights=PATH "
            "to a local copy."
        )
    directory.mkdir(parents=True, exist_ok=True)
    try:
        # torch.hub writes to a temporary file, checks the hash prefix, then renames: a failed,
        # interrupted or mismatching download never leaves a file at `target`.
        torch.hub.download_url_to_file(source.url, str(target), hash_prefix=full_digest(expected) or expected,
                                       progress=progress)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise WeightsNotFoundError(f"{source.url} answered 404 Not Found; check the URL") from exc
        raise DownloadError(f"could not download {source.url}: HTTP {exc.code} {exc.reason}. {USE_LOCAL}") from exc
    except RuntimeError as exc:
        if "invalid hash value" in str(exc):
            raise IntegrityError(
                f"{source.url}: the downloaded bytes do not match the pinned sha256 {expected[:16]}… ({exc}). "
                "Nothing was cached. If the file changed on purpose, update the pinned sha256."
            ) from exc
        raise DownloadError(f"could not download {source.url}: {exc}. {USE_LOCAL}") from exc
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise DownloadError(f"could not download {source.url}: {exc}. {USE_LOCAL}") from exc
    sha = check_hash(target, expected, source.url, removed=True, rehash=True)
    return FetchedWeights(path=target, origin=source.url, sha256=sha, kind="url")
