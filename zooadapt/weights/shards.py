"""Sharded checkpoints: an index (``model.safetensors.index.json``) and the shards it names.

``huggingface_hub.save_torch_state_dict(state, folder, max_shard_size=...)`` and transformers'
``save_pretrained`` split a large state dict into ``model-00001-of-0000n.safetensors`` (or
``pytorch_model-…bin``) files and write an index whose ``weight_map`` says which shard holds
each tensor. This module reads and checks that index; ``hub_download.py`` and ``local_files.py``
fetch the shards it names (from the Hub: at the index's own commit) and ``checkpoint.py`` reads
them, each once, into one ``{key: tensor}``.

An index is trusted only as far as the shards agree with it: a shard it names that is missing,
a tensor held by two shards, or a ``weight_map`` that places a tensor in another shard than
the one that holds it, is refused (``ShardIndexError`` or, for a missing shard,
``WeightsNotFoundError``), naming the index, the shard and the fix.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract.errors import ShardIndexError, WeightsNotFoundError
from ..contract.escape import printable

__all__ = ["INDEX_NAMES", "ShardIndex", "ShardIndexError", "WeightsNotFoundError", "is_shard_index", "index_for",
           "find_index", "stray_shards", "read_index", "check_shards"]

INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
"""The indexes a folder or a Hub repo is searched for, safetensors first (as transformers does)."""
_INDEX_SUFFIX = ".index.json"
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.(?:safetensors|bin)$")
_MAX_INDEX = 64 << 20
"""An index is a small JSON file (a 1,000-tensor model's is ~60 kB); a larger one is refused unread."""
_RESAVE = ("save the checkpoint again (huggingface_hub.save_torch_state_dict or save_pretrained write the "
           "index and its shards together), or restore the folder from where it came")




@dataclass(frozen=True)
class ShardIndex:
    """An index file: which shard (a path relative to the index's folder) holds each tensor."""

    path: Path
    weight_map: dict[str, str]
    shards: tuple[str, ...]
    """The shard files, each once, in the order the index first names them."""

    def shard_path(self, shard: str) -> Path:
        return self.path.parent.joinpath(*shard.split("/"))

    def present_shard(self, shard: str) -> Path:
        """``shard_path``, refused (``WeightsNotFoundError``) when no such file is there."""
        path = self.shard_path(shard)
        if not path.is_file():
            raise WeightsNotFoundError(
                f"{printable(self.path)} names shard {shard!r}, but {printable(path)} does not exist: the checkpoint "
                "is incomplete. Copy or download the missing shard beside the index (every file its weight_map "
                "names), or save the checkpoint again.")
        return path

    def expected(self) -> dict[str, set[str]]:
        """Shard -> the keys the index places in it."""
        out: dict[str, set[str]] = {s: set() for s in self.shards}
        for key, shard in self.weight_map.items():
            out[shard].add(key)
        return out


def is_shard_index(path: str | os.PathLike[str]) -> bool:
    """A file named like an index (``*.index.json``): read as the index of a sharded checkpoint."""
    return os.fspath(path).endswith(_INDEX_SUFFIX)


def index_for(filename: str) -> str | None:
    """The index that stands for ``filename`` when it is sharded (``model.safetensors`` ->
    ``model.safetensors.index.json``), for the usual weight file names; else None."""
    base = filename.rsplit("/", 1)[-1]
    if base + _INDEX_SUFFIX in INDEX_NAMES:
        return filename + _INDEX_SUFFIX
    return None


def find_index(folder: Path) -> Path | None:
    """The index in ``folder`` (``INDEX_NAMES``, safetensors first); None when it has none."""
    for name in INDEX_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def stray_shards(folder: Path) -> list[str]:
    """Shard-named files in ``folder`` (for the message when it has no index)."""
    try:
        return sorted(p.name for p in folder.iterdir() if _SHARD.search(p.name))
    except OSError:
        return []


def _pairs(where: Path) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out and out[key] != value:
                raise ShardIndexError(
                    f"{where}: its weight_map places tensor {key!r} in two shards, {out[key]!r} and {value!r}. A "
                    f"tensor belongs to one shard: {_RESAVE}.")
            out[key] = value
        return out

    return hook


def _shard_format(index: Path) -> str:
    """The suffix the index's shards must have: ``model.safetensors.index.json`` -> ``.safetensors``."""
    stem = index.name[: -len(_INDEX_SUFFIX)]
    return os.path.splitext(stem)[1]


def _check_shard_name(index: Path, name: object, suffix: str) -> str:
    if not isinstance(name, str):
        raise ShardIndexError(f"{index}: its weight_map names a shard as {name!r}, not a file name; {_RESAVE}.")
    parts = name.split("/")
    if (not name or "\\" in name or "\x00" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name)
            or any(p in ("", ".", "..") for p in parts)):
        raise ShardIndexError(
            f"{index}: its weight_map names shard {name!r}, which is not a file beside the index (no '..', '.', "
            f"empty or absolute parts): zooadapt reads shards only from the index's own folder. {_RESAVE[0].upper()}"
            f"{_RESAVE[1:]}.")
    if suffix and not name.endswith(suffix):
        raise ShardIndexError(
            f"{index}: its weight_map names shard {name!r}, but a {index.name} indexes {suffix} files; {_RESAVE}.")
    return name


def read_index(path: str | os.PathLike[str]) -> ShardIndex:
    """The index at ``path``, checked to be a ``{"weight_map": {key: shard}}`` whose shards are
    files beside it, in the index's format (``.safetensors`` or ``.bin``)."""
    where = Path(path)
    try:
        size = where.stat().st_size
        if size > _MAX_INDEX:
            raise ShardIndexError(f"{where}: {size:,} bytes is too large for a shard index (an index lists tensor "
                                  f"names, ~60 bytes each); check that it is the index. {_RESAVE}.")
        text = where.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ShardIndexError(f"{where} is not a shard index (not UTF-8 text: {exc.reason}); {_RESAVE}.") from None
    except FileNotFoundError:
        raise WeightsNotFoundError(
            f"shard index {printable(where)} does not exist; check the path passed as weights=") from None
    except OSError as exc:
        raise ShardIndexError(f"{where} cannot be read ({exc.strerror or exc}); check its permissions") from exc
    try:
        data = json.loads(text, object_pairs_hook=_pairs(where))
    except (ValueError, RecursionError) as exc:  # (a ShardIndexError from the hook is no ValueError: it passes)
        raise ShardIndexError(f"{where} is not a shard index (not valid JSON: {exc}); {_RESAVE}.") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ShardIndexError(
            f"{where} is not a shard index: it has no weight_map (a table of tensor name -> shard file, as "
            f"save_torch_state_dict writes it); {_RESAVE}.")
    suffix = _shard_format(where)
    seen: dict[str, None] = {}
    for shard in weight_map.values():
        if shard not in seen:
            seen[_check_shard_name(where, shard, suffix)] = None
    return ShardIndex(where, dict(weight_map), tuple(seen))


def check_shards(index: ShardIndex, contents: Iterable[tuple[str, Iterable[str]]]) -> None:
    """Every shard holds exactly the tensors the index places in it, and no tensor is in two
    shards. ``contents``: (shard, the keys read from it), each shard once."""
    holder: dict[str, str] = {}
    for shard, keys in contents:
        for key in keys:
            if key in holder:
                raise ShardIndexError(
                    f"{index.path}: tensor {key!r} is in two shards, {holder[key]!r} and {shard!r}; the index places "
                    f"it in {index.weight_map.get(key, 'neither')!r}. One of the shards is stale: {_RESAVE}.")
            holder[key] = shard
    moved = [k for k, s in holder.items() if k in index.weight_map and index.weight_map[k] != s]
    absent = [k for k in index.weight_map if k not in holder]
    unlisted = [k for k in holder if k not in index.weight_map]
    if not (moved or absent or unlisted):
        return
    problems = [f"tensor {k!r} is in shard {holder[k]!r}, but the index places it in {index.weight_map[k]!r}"
                for k in moved[:3]]
    problems += [f"the index places tensor {k!r} in shard {index.weight_map[k]!r}, which does not hold it"
                 for k in absent[:3]]
    problems += [f"shard {holder[k]!r} holds tensor {k!r}, which the index does not list" for k in unlisted[:3]]
    count = len(moved) + len(absent) + len(unlisted)
    more = f" (and {count - len(problems)} more)" if count > len(problems) else ""
    raise ShardIndexError(
        f"{index.path}: its weight_map disagrees with the shards: {'; '.join(problems)}{more}. The index and the "
        f"shards come from different saves: {_RESAVE}.")
