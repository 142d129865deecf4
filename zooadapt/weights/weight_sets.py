"""Which weights of a training checkpoint to load, and the metadata that may come with them.

Training scripts save more than one set of weights: timm's train.py writes ``state_dict`` and
``state_dict_ema``, others ``model``/``model_ema`` or ``ema``, DINO a ``student`` and a
``teacher`` (the teacher is the student's moving average). ``use_ema`` chooses; by default
the EMA set wins when there is one, as timm's own ``load_state_dict(use_ema=True)`` does, and
the report says which set was used and that the other exists.

They also save harmless metadata beside the weights: an ``argparse.Namespace`` of arguments,
numpy scalars (a best metric), ``pathlib`` paths. ``torch.load(weights_only=True)`` refuses
them; ``allowed_metadata()`` admits exactly these types (as timm admits ``Namespace``), so
such a checkpoint loads without ``trusted=True`` while anything else is still refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["CheckpointTensors", "allowed_metadata", "choose_weight_set", "LIVE_SETS", "EMA_SETS"]

LIVE_SETS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params", "student")
"""Keys under which training checkpoints keep the weights being trained, most common first."""
EMA_SETS = ("state_dict_ema", "model_ema", "ema", "ema_state_dict", "ema_model", "teacher")
"""Keys under which they keep an exponential moving average of those weights."""


class CheckpointTensors(dict):  # type: ignore[type-arg]
    """``{key: tensor}`` plus which weight set of the file it came from (None: the file held one)."""

    weight_set: str | None = None
    alternatives: tuple[str, ...] = ()
    shapes: dict[str, tuple[int, ...]] | None = None
    """Every tensor's shape, when the reader knew them without asking each tensor (a safetensors
    header); None: read them from the tensors."""

    def describe(self) -> str | None:
        if self.weight_set is None:
            return None
        kind = "EMA" if self.weight_set in EMA_SETS else "live"
        others = ", ".join(repr(a) for a in self.alternatives)
        switch = "use_ema=False" if kind == "EMA" else "use_ema=True"
        also = f"; the file also holds {others} ({switch})" if others else ""
        return f"{self.weight_set!r} ({kind} weights){also}"


def _has_tensors(value: object) -> bool:
    import torch

    if isinstance(value, torch.nn.Module):
        return True
    return isinstance(value, Mapping) and any(isinstance(v, torch.Tensor) for v in value.values())


def choose_weight_set(obj: Any, use_ema: bool | None) -> tuple[Any, str | None, tuple[str, ...]]:
    """(the chosen weights, their key, the other weight sets present) of an unpickled checkpoint.

    ``use_ema`` None prefers an EMA set when there is one (timm's default); True requires one;
    False takes the live weights.
    """
    from ..contract.errors import InvalidArgumentError

    if not isinstance(obj, Mapping):
        return obj, None, ()
    live = [k for k in LIVE_SETS if k in obj and _has_tensors(obj[k])]
    ema = [k for k in EMA_SETS if k in obj and _has_tensors(obj[k])]
    if not ema:
        if use_ema:
            present = ", ".join(repr(k) for k in list(obj)[:10])
            raise InvalidArgumentError(
                f"use_ema=True, but the checkpoint holds no EMA weights (looked for {', '.join(EMA_SETS)}; its keys "
                f"are {present}); drop use_ema")
        if len(live) <= 1:
            return obj, None, ()
        return obj[live[0]], live[0], tuple(live[1:])
    if use_ema is False:
        if not live:
            raise InvalidArgumentError(
                f"use_ema=False, but the checkpoint holds only EMA weights ({', '.join(map(repr, ema))}); drop use_ema")
        return obj[live[0]], live[0], tuple(live[1:] + ema)
    return obj[ema[0]], ema[0], tuple(ema[1:] + live)


def _metadata_types() -> list[Any]:
    import argparse
    import pathlib

    types: list[Any] = [argparse.Namespace, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath,
                        pathlib.PureWindowsPath]
    try:
        import numpy as np
    except ImportError:
        return types
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    # a pickle names the module numpy had when it was written: numpy.core (1.x) or numpy._core (2.x)
    types += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    types += [(type(np.dtype(t)), f"numpy.dtypes.{type(np.dtype(t)).__name__}")
              for t in ("float64", "float32", "float16", "int64", "int32", "bool")]
    return types


@contextlib.contextmanager
def allowed_metadata() -> Iterator[None]:
    """``torch.load(weights_only=True)`` that also admits the metadata training scripts save
    (``argparse.Namespace``, numpy scalars, ``pathlib`` paths) and nothing else."""
    import torch

    with torch.serialization.safe_globals(_metadata_types()):
        yield
