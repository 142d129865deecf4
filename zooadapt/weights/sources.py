"""Fetching weights: picks the fetcher for a ``WeightSource`` and reads ``weights=`` as users write it.

One job per module below this one: ``local_files`` (a path), ``url_download`` (a URL through
torch.hub, sha256 required), ``hub_download`` (a Hub file through huggingface_hub, its errors
mapped, its bytes checked), ``hub_cache`` (snapshot entries, blobs, locks, eviction),
``digests`` (sha256s remembered across processes, pins), ``fetched`` (what each returns).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

from ..contract.errors import InvalidArgumentError
from ..contract.family import WeightSource
from .digests import check_pin
from .fetched import FetchedWeights
from .hub_cache import check_revision
from .hub_download import from_hub
from .local_files import from_path
from .url_download import from_url

__all__ = ["fetch", "parse_source"]


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
            f"address or a zooadapt.plugin_api.WeightSource, not a {type(spec).__name__}")
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
        raise InvalidArgumentError(f"source={source!r}: give a zooadapt.plugin_api.WeightSource (parse_source reads a "
                                   "string)")
    _check_source_types(source)
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise InvalidArgumentError(f"cache_dir={cache_dir!r}: give a folder path as a str or Path, or None")
    if revision is not None:
        check_revision(revision)
        if source.path or source.url:  # a file or a URL has no commits to pick from: say so, not ignore it
            raise InvalidArgumentError(
                f"revision={revision!r} picks a commit of a Hub repository, and the weights are "
                f"{source.describe()}, which has none; drop revision= (or give the weights as hf://org/repo@REV)")
    source = replace(source, sha256=check_pin(source.sha256, source.describe()))
    if source.path:
        return from_path(Path(source.path).expanduser(), source, rehash=rehash)
    if source.url:
        return from_url(source, cache_dir=cache_dir, progress=progress, force=force, name=name, rehash=rehash)
    return from_hub(source, revision=revision or source.revision, cache_dir=cache_dir, force=force,
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
