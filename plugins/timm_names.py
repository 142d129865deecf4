"""timm's model names without importing timm, for the timm plugin.

``zooadapt list`` must not import torch or timm, so timm's architecture and pretrained names are
cached in a JSON file keyed by timm's version, in zooadapt's cache directory
(``zooadapt.plugin_api.cache_dir()``: ``$ZOOADAPT_CACHE``, else ``$XDG_CACHE_HOME/zooadapt``, else
``~/.cache/zooadapt``), built on first use in a child process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from zooadapt.plugin_api import cache_dir, remembered

__all__ = ["timm_version", "timm_names"]

log = logging.getLogger("zooadapt")


@remembered("timm version", 1, "nothing: the installed timm's version, read once (package metadata is slow)")
def timm_version() -> str | None:
    try:
        return metadata.version("timm")
    except metadata.PackageNotFoundError:
        return None


_NAMES_SCRIPT = (
    "import json, sys, timm\n"
    "json.dump({'timm': timm.__version__, 'pretrained': timm.list_models(pretrained=True),\n"
    "           'architectures': timm.list_models()}, sys.stdout)\n"
)


def _names_from_timm(import_ok: bool) -> dict[str, Any]:
    """Ask timm for its names: in this process when timm is imported already or the caller is
    about to need torch anyway (``import_ok``), else in a child process, so ``zooadapt list``
    never imports torch."""
    if import_ok or "timm" in sys.modules:
        import timm

        return {"timm": timm.__version__, "pretrained": timm.list_models(pretrained=True),
                "architectures": timm.list_models()}
    result = subprocess.run([sys.executable, "-c", _NAMES_SCRIPT], capture_output=True, text=True, timeout=300,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"listing timm's models failed: {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout)


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@remembered("timm names", 4, "timm's version, the cache directory, and whether timm may be imported here")
def _names_for(version: str, directory: str, import_ok: bool) -> tuple[frozenset[str], tuple[str, ...]]:
    path = Path(directory) / f"timm-names-{version}.json"
    data: dict[str, Any] | None = None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not data or data.get("timm") != version:
        data = _names_from_timm(import_ok)
        try:
            _write_atomically(path, data)
        except OSError as exc:  # a read-only home still lists, just without the cache
            log.debug("could not cache timm's names at %s: %s", path, exc)
    return frozenset(data.get("architectures", ())), tuple(data.get("pretrained", ()))


def timm_names(import_ok: bool = False) -> tuple[frozenset[str], tuple[str, ...]]:
    """timm's architecture names and pretrained ``arch.tag`` names (empty without timm).

    ``import_ok``: on a cold cache, ask timm in this process (the caller needs torch anyway).
    """
    version = timm_version()
    if version is None:
        return frozenset(), ()
    return _names_for(version, str(cache_dir()), import_ok)
