"""Weights the user already has: a file, a folder holding one, or a sharded checkpoint's index.

A user's own file is read where it lies and never removed, whatever a check finds; a pinned
sha256 is checked (``digests``); a folder is searched for the usual checkpoint names, one file
before a shard index, safetensors first, as transformers does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..contract.errors import WeightsNotFoundError
from ..contract.escape import printable
from ..contract.family import WeightSource
from .digests import check_hash
from .fetched import FetchedWeights

__all__ = ["from_path"]

_CHECKPOINT_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt", "checkpoint.pth")


def from_path(path: Path, source: WeightSource, *, rehash: bool = False) -> FetchedWeights:
    """The local file ``path`` names (a folder: the checkpoint inside it), checked against a pin."""
    try:
        return _local_file(path, source, rehash)
    except WeightsNotFoundError:  # itself an OSError (FileNotFoundError)
        raise
    except OSError as exc:  # a name too long, a permission denied, a folder that vanished
        raise WeightsNotFoundError(
            f"weights path {path} cannot be read ({exc.strerror or exc}); check the path passed as weights= and its "
            "permissions") from exc


def _local_file(path: Path, source: WeightSource, rehash: bool) -> FetchedWeights:
    from .shards import INDEX_NAMES, find_index, is_shard_index, read_index, stray_shards

    if path.is_dir():
        candidates = [path / n for n in _CHECKPOINT_NAMES if (path / n).is_file()]
        found = find_index(path)
        if found is not None:
            candidates.append(found)  # after any single file: one file first, safetensors first (as transformers)
        if not candidates:
            shards = stray_shards(path)
            if shards:
                raise WeightsNotFoundError(
                    f"directory {path} holds checkpoint shards ({', '.join(shards[:3])}"
                    f"{', …' if len(shards) > 3 else ''}) but no index saying which tensor each holds; copy the "
                    f"index ({' or '.join(INDEX_NAMES)}) beside them, or pass weights= the index's path")
            raise WeightsNotFoundError(
                f"directory {printable(path)} holds no checkpoint; expected one of {', '.join(_CHECKPOINT_NAMES)}, "
                f"or a sharded checkpoint's index ({', '.join(INDEX_NAMES)})"
            )
        path = candidates[0]
    if not path.is_file() and path.exists():  # a FIFO, a device, a socket: never read (it may never end)
        raise WeightsNotFoundError(
            f"weights file {printable(path)} is not a regular file (a pipe, a device or a socket), so it is not read: "
            "pass the path of a checkpoint file or of a folder holding one")
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {printable(path)} does not exist; check the path passed as weights=. "
                                   f"{_FORMS_HINT}")
    sha = check_hash(path, source.sha256, str(path), removed=False, rehash=rehash) if source.sha256 else None
    fetched = FetchedWeights(path=path, origin=str(path), sha256=sha, kind="path")
    if not is_shard_index(path):
        return fetched
    index = read_index(path)
    parts: list[tuple[str, FetchedWeights]] = []
    for shard in index.shards:
        shard_path = index.present_shard(shard)
        parts.append((shard, FetchedWeights(path=shard_path, origin=str(shard_path), kind="path")))
    return replace(fetched, shards=tuple(parts))


_FORMS_HINT = ("weights= takes a file or directory path, a registry model name (weights='resnet18'), a timm Hub id "
               "(weights='timm/resnet34.tv_in1k') or an hf://org/repo[@revision][/file] address.")
