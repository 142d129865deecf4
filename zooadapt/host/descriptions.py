"""Remembered model descriptions, so ``zooadapt info NAME`` answers without importing torch.

What ``info`` shows about a model (its stages with parameter counts, head, key rules,
preprocessing) needs the model built on ``meta``, which needs torch (and timm for timm names):
~2-5 s of imports for a few lines of text. The answer depends only on the code that builds and
describes the model, so it is stored once in zooadapt's cache directory
(``$ZOOADAPT_CACHE/descriptions/``) under a key of everything it depends on, and read back
while that key still holds:

* the versions of zooadapt, torch, torchvision and timm;
* the loaded plugins (name, distribution, version) and the registry entry of the name (a
  changed ``ZOOADAPT_REGISTRY`` file or a disabled plugin is a different key);
* the size and modification time of zooadapt's source files, of the loaded plugins' modules and
  of the files the caller names (an edited checkout is a different key).

A key that does not match means the description is built again and the file replaced; a
description is never used on a guess, and none is kept while a plugin registered by hand (not
installed, so without a version) is loaded. Anything that can change between two calls with the
same key (the lock file's pin of the model) is not stored. A cache that cannot be read or
written is skipped: ``info`` still answers, it just builds the description.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from .plugin_manager import plugin_infos
from .registry import Registry

__all__ = ["FORMAT", "description_key", "read_description", "write_description", "description_path"]

log = logging.getLogger("zooadapt")

FORMAT = 1
"""The layout of a stored description; a change of what ``info`` stores bumps it."""

_PACKAGES = ("torch", "torchvision", "timm")


def _version(package: str) -> str | None:
    # always the installed metadata, never ``module.__version__``: the key must come out the same
    # in a process that imported the package and in one that did not
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _fingerprint(paths: Iterable[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for path in sorted(set(paths)):
        try:
            status = os.stat(path)
        except OSError:
            out[path] = [-1, -1]  # a file that is gone is part of the key too
            continue
        out[path] = [status.st_mtime_ns, status.st_size]
    return out


def _zooadapt_sources(registry: Registry) -> list[str]:
    """zooadapt's source files and those of the loaded plugins: the same set whatever this process
    imported so far (the built-in plugins may live outside the package, in an editable install)."""
    package = Path(__file__).resolve().parents[1]
    files = [os.path.join(root, f) for root, dirs, names in os.walk(package) for f in names if f.endswith(".py")
             if "__pycache__" not in root]
    plugins = registry.pm.get_plugins() if registry.pm is not None else ()
    for plugin in plugins:  # a module, or an object whose class a module defines
        module = plugin if isinstance(plugin, ModuleType) else sys.modules.get(type(plugin).__module__)
        path = getattr(module, "__file__", None)
        if path:
            files.append(path)
    for name, module in list(sys.modules.items()):  # a plugin's helper modules (``timm_stages``…)
        helper = getattr(module, "__file__", None) if name.startswith("zooadapt.plugins.") else None
        if helper:
            files.append(helper)
    return files


def description_key(name: str, registry: Registry,
                    files: Iterable[str | os.PathLike[str]] = ()) -> dict[str, Any] | None:
    """Everything the description of ``name`` depends on (see the module docstring), or None when
    that cannot be written down: a plugin registered in this process by hand (a test, a notebook)
    rather than installed has no version, so nothing is read or stored then. ``files``: source
    files of modules the description is built with that are not imported yet (the model-building
    code, which needs torch). Costs a few stat calls, no import."""
    from .. import __version__

    installed = {i.name for i in plugin_infos()}
    registered = {n for n, _ in registry.pm.list_name_plugin()} if registry.pm is not None else set()
    if not registered <= installed:
        return None
    entry = registry.models.get(name)
    return {
        "format": FORMAT,
        "name": name,
        "zooadapt": __version__,
        "python": sys.version.split()[0],
        "packages": {p: _version(p) for p in _PACKAGES},
        "plugins": sorted([i.name, i.distribution, i.version] for i in plugin_infos()),
        "entry": repr(entry) if entry is not None else None,
        "sources": _fingerprint([*_zooadapt_sources(registry), *(os.fspath(f) for f in files)]),
    }


def description_path(directory: str | os.PathLike[str], name: str) -> Path:
    """One file per name (hashed: names hold ``/`` and ``:``); the key inside says what it is for."""
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]
    return Path(directory) / "descriptions" / f"{digest}.json"


def read_description(directory: str | os.PathLike[str], name: str,
                     key: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored description of ``name`` when it was stored under exactly ``key``, else None."""
    if key is None:
        return None
    path = description_path(directory, name)
    try:
        with open(path, encoding="utf-8") as fh:
            stored = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("key") != key or not isinstance(stored.get("info"), dict):
        return None
    return stored["info"]


def write_description(directory: str | os.PathLike[str], name: str, key: dict[str, Any] | None,
                      info: dict[str, Any]) -> None:
    """Store ``info`` for ``name`` under ``key`` (atomically: a reader sees the old file or the new
    one); nothing without a key."""
    if key is None:
        return
    path = description_path(directory, name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"key": key, "info": info}, fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (OSError, TypeError, ValueError) as exc:  # a read-only cache: info still answers, it just rebuilds
        log.debug("could not store the description of %s at %s: %s", name, path, exc)
