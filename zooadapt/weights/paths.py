"""Where zooadapt keeps its own small derived files (never weights: those live in the Hub cache).

One directory for all of them — timm's model-name list, remembered sha256 digests — so users
have one place to look and one variable to set: ``$ZOOADAPT_CACHE``, else
``$XDG_CACHE_HOME/zooadapt``, else ``~/.cache/zooadapt``. Everything in it is safe to delete.
Plugins may keep their own derived files here too.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    explicit = os.environ.get("ZOOADAPT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "zooadapt"
