"""What every way of fetching weights hands back, and the words its errors share.

``sources.fetch`` picks the fetcher (``local_files``, ``url_download`` or ``hub_download``); each
returns a ``FetchedWeights``, which is all the loader, the lock file and the distributed helpers
need to know about where the bytes came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["FetchedWeights", "is_offline", "USE_LOCAL", "prefetch_hint"]


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


def is_offline() -> bool:
    """``HF_HUB_OFFLINE=1`` (read by huggingface_hub at import; tests patch its constant)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


USE_LOCAL = "To use a copy you already have, pass weights=PATH."
"""The way around any failed download, closing the errors that name one."""


def prefetch_hint(name: str | None, address: str) -> str:
    """The command that fills the cache for ``name`` (or the address) on a connected machine."""
    return f"`zooadapt fetch {name or address}`"
