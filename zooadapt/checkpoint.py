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


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _map_safetensors(path: Path) -> dict[str, torch.Tensor] | None:
    """The file's tensors, each on its own slice of one memory map (no copy), or None to let
    safetensors read the file.

    ``safetensors.torch.load_file`` maps the file the same way (``UntypedStorage.from_file``)
    and slices it per tensor, but through several Python-level calls each: ~13 us per tensor,
    4.4 ms of a ~20 ms ResNet-50 load; this takes 1.9 ms. Anything not exactly as the format
    specifies (header size, dtypes, shapes, offsets contiguous from 0 to the end of the file,
    alignment) returns None, and the library reads, validates and reports the file instead.
    """
    import json
    from math import prod

    import torch

    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            length = int.from_bytes(fh.read(8), "little")
            if not 0 < length <= min(size - 8, 100_000_000):
                return None
            header = json.loads(fh.read(length))
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    entries = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(info, dict):
            return None
        dtype = getattr(torch, _SAFETENSORS_DTYPES.get(info.get("dtype"), ""), None)  # type: ignore[arg-type]
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if (not isinstance(dtype, torch.dtype) or not isinstance(shape, list)
                or not all(type(d) is int and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)):
            return None
        entries.append((offsets[0], offsets[1], key, dtype, shape))
    entries.sort(key=lambda e: (e[0], e[1]))
    base, end = 8 + length, 0
    for start, stop, _, dtype, shape in entries:
        if start != end or stop - start != prod(shape) * dtype.itemsize or (base + start) % dtype.itemsize:
            return None
        end = stop
    if base + end != size:
        return None
    storage = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)  # mmap, copy-on-write
    tensors = {}
    for start, stop, key, dtype, shape in entries:
        # each tensor gets its own storage (a slice of the map, no copy) and is not a view: views
        # share one version counter (an optimizer step on one parameter would invalidate
        # autograd's record of all), and tensors of one storage with several dtypes, or a
        # storage larger than the tensor, break or bloat torch.save
        piece = storage[base + start : base + stop]
        tensors[key] = torch.empty(0, dtype=dtype).set_(piece, 0, shape, _contiguous_strides(shape))
    return tensors


def _contiguous_strides(shape: list[int]) -> tuple[int, ...]:
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    mapped = _map_safetensors(path)
    if mapped is not None:
        return mapped
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
