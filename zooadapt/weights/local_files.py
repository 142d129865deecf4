"""Weights the user already has: a file, a folder holding one, or a sharded checkpoint's index.

A user's own file is read where it lies and never removed, whatever a check finds; a pinned
sha256 is checked (``digests``); a folder is searched for the usual checkpoint names, one file
before a shard index, safetensors first, as transformers does. A folder holding several models'
files (accelerate's ``save_state`` of two prepared models) is refused with the files named.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from ..contract.errors import AmbiguousCheckpointError, CheckpointFormatError, WeightsNotFoundError
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
            _refuse_training_folder(path)
            raise WeightsNotFoundError(
                f"directory {printable(path)} holds no checkpoint; expected one of {', '.join(_CHECKPOINT_NAMES)}, "
                f"or a sharded checkpoint's index ({', '.join(INDEX_NAMES)})"
            )
        path = candidates[0]
        _refuse_several_models(path)
    elif path.name == ".metadata" or path.suffix == ".distcp":
        _refuse_training_folder(path.parent)
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


_NUMBERED_MODELS = {"model.safetensors": re.compile(r"model_([1-9][0-9]*)\.safetensors"),
                    "pytorch_model.bin": re.compile(r"pytorch_model_([1-9][0-9]*)\.bin")}
"""The further models' files beside the first, as accelerate names them (``_refuse_several_models``)."""


def _refuse_several_models(first: Path) -> None:
    """Refuse the checkpoint found in a folder when numbered siblings say the folder holds several
    models: accelerate's ``save_state`` writes the models passed to ``prepare()`` as
    ``model.safetensors``, ``model_1.safetensors``, … (``pytorch_model.bin``, ``pytorch_model_1.bin``
    without safetensors: accelerate/checkpointing.py ``save_accelerator_state``, names from
    utils/constants.py). Which one is the network wanted (a generator or a discriminator, a
    student or a teacher) only the user knows: loading the first would be a silent guess."""
    pattern = _NUMBERED_MODELS.get(first.name)
    if pattern is None:
        return
    numbered = sorted(((int(m.group(1)), p) for p in first.parent.iterdir()
                       if (m := pattern.fullmatch(p.name)) and p.is_file()), key=lambda item: item[0])
    if not numbered:
        return
    files = [first, *(p for _, p in numbered)]
    names = ", ".join(p.name for p in files[:6]) + (f", … (+{len(files) - 6})" if len(files) > 6 else "")
    raise AmbiguousCheckpointError(
        f"directory {printable(first.parent)} holds the weights of {len(files)} models ({names}): accelerate's "
        f"save_state writes the models passed to accelerator.prepare() in that order, the first as {first.name}. "
        f"zooadapt will not guess which one you mean; pass its file, e.g. weights='{printable(files[0])}' (the "
        f"first model) or weights='{printable(files[1])}' (the second)")


def _refuse_training_folder(folder: Path) -> None:
    """A folder that distributed training wrote, whose files hold no model alone, refused with the
    conversion its framework ships: torch.distributed.checkpoint (``dcp.save``, Lightning's FSDP
    sharded checkpoints: ``.metadata`` beside ``*.distcp`` files) and DeepSpeed (``latest``,
    ``global_stepN/``, ``mp_rank_00_model_states.pt``: its ``zero_to_fp32.py`` gathers the weights)."""
    if (folder / ".metadata").is_file() and any(folder.glob("*.distcp")):
        raise CheckpointFormatError(
            f"{printable(folder)} is a torch.distributed.checkpoint (DCP) folder: its tensors are spread over the "
            ".distcp files its ranks wrote, with the plan in .metadata. Convert it once into one file: python -m "
            f"torch.distributed.checkpoint.format_utils dcp_to_torch {printable(folder)} model.pt, then load "
            "weights='model.pt' (Lightning's FSDP checkpoints hold the model under 'state_dict').")
    if (folder / "zero_to_fp32.py").is_file() or (folder / "latest").is_file() and any(folder.glob("global_step*")) \
            or any(folder.glob("mp_rank_*_model_states.pt")) or any(folder.glob("*/mp_rank_*_model_states.pt")):
        raise CheckpointFormatError(
            f"{printable(folder)} is a DeepSpeed checkpoint folder: under ZeRO its parameters are partitioned "
            "across the ranks' optimizer states. Gather them once with the script DeepSpeed saved beside them: "
            f"python {printable(folder / 'zero_to_fp32.py')} {printable(folder)} pytorch_model.bin, then load "
            "weights='pytorch_model.bin'.")


_FORMS_HINT = ("weights= takes a file or directory path, a registry model name (weights='resnet18'), a timm Hub id "
               "(weights='timm/resnet34.tv_in1k') or an hf://org/repo[@revision][/file] address.")
