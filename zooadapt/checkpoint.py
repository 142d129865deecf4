"""Reading checkpoint files into ``{key: tensor}``, safely.

safetensors files are memory-mapped (no copy until a page is touched). Pickle-based files
(``.pth .pt .bin .tar .ckpt``) are read only with ``torch.load(weights_only=True)``, which
cannot run code; a file that needs more is refused unless the caller passes
``trusted=True`` for a file they trust. Nested training checkpoints (``{"state_dict": …,
"optimizer": …}``) are unwrapped to their weights.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointFormatError, UnsafeCheckpointError

if TYPE_CHECKING:
    import torch

__all__ = ["read_checkpoint", "unwrap_state_dict", "is_safetensors"]

_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params",
                "model_ema", "state_dict_ema")


def is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors starts with an 8-byte little-endian header length followed by '{'
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 32)


def _is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def unwrap_state_dict(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the weights inside a training checkpoint: the dict itself, or a nested entry."""
    import torch

    if _is_tensor_dict(obj):
        return dict(obj)
    if isinstance(obj, torch.nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if key in obj:
                try:
                    return unwrap_state_dict(obj[key], f"{where}[{key!r}]")
                except CheckpointFormatError:
                    continue
        # a dict that mixes tensors with metadata (e.g. a lone "epoch" int): keep the tensors
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
        found = ", ".join(repr(k) for k in list(obj)[:10])
        raise CheckpointFormatError(
            f"{where} holds no tensors zooadapt recognises; its top-level keys are {found}. Extract the "
            "state dict yourself (torch.load(...)['your_key']) and save it with safetensors."
        )
    raise CheckpointFormatError(f"{where} is a {type(obj).__name__}, not a state dict")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointFormatError(
            f"{path} is not a readable safetensors file ({exc}); it may be truncated or corrupt. "
            "Delete it and download again (zooadapt fetch NAME --force)."
        ) from exc


def _read_pickle(path: Path, trusted: bool) -> Any:
    import torch

    mmap = zipfile.is_zipfile(path)  # only the zip format can be memory-mapped
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only load failed" in str(exc):
            raise UnsafeCheckpointError(
                f"{path} needs arbitrary Python code to unpickle, and a pickle can run any code on this "
                "machine. zooadapt refused it. If you trust where the file came from, pass trusted=True "
                "(or convert it once to safetensors). Detail: " + str(exc).splitlines()[0]
            ) from exc
        raise CheckpointFormatError(f"{path} is not a readable checkpoint: {exc}") from exc
    except (EOFError, RuntimeError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CheckpointFormatError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: {_first_line(exc)}); "
            "it may be truncated or corrupt. Download or copy it again."
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


def read_checkpoint(path: str | os.PathLike[str], *, trusted: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict in file order."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointFormatError(f"{path} is not a file")
    if path.stat().st_size == 0:
        raise CheckpointFormatError(f"{path} is empty; download or copy it again")
    if is_safetensors(path):
        return _read_safetensors(path)
    return unwrap_state_dict(_read_pickle(path, trusted), str(path))
