"""Which weights of a training checkpoint to load, and the metadata that may come with them.

Training scripts save more than one set of weights: timm's train.py writes ``state_dict`` and
``state_dict_ema``, others ``model``/``model_ema`` or ``ema``, DINO a ``student`` and a
``teacher`` (the teacher is the student's moving average). ``use_ema`` chooses; by default
the EMA set wins when there is one, as timm's own ``load_state_dict(use_ema=True)`` does, and
the report says which set was used and that the other exists.

They also save harmless metadata beside the weights: an ``argparse.Namespace`` of arguments,
numpy scalars (a best metric), ``pathlib`` paths. ``torch.load(weights_only=True)`` refuses
them; ``allowed_metadata()`` admits exactly these types (as timm admits ``Namespace``), so
such a checkpoint loads without ``trusted=True``; any other class is replaced by an inert
stand-in (``standins.py``), and ``CheckpointTensors.standins`` names those the report mentions.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["CheckpointTensors", "allowed_metadata", "metadata_names", "choose_weight_set", "LIVE_SETS", "EMA_SETS"]

LIVE_SETS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params", "student")
"""Keys under which training checkpoints keep the weights being trained, most common first."""
EMA_SETS = ("state_dict_ema", "model_ema", "ema", "ema_state_dict", "ema_model", "teacher")
"""Keys under which they keep an exponential moving average of those weights."""
LIGHTNING_AVERAGING = ("state_dict", "current_model_state", "averaging_state")
"""Lightning's ``WeightAveraging`` callbacks (``EMAWeightAveraging``, lightning/pytorch/callbacks/
weight_averaging.py, ``on_save_checkpoint``) turn the usual names round: ``state_dict`` holds the
averaged model and ``current_model_state`` the live one, with the average's counters in
``averaging_state``."""


def _averaged_by_lightning(obj: Mapping[str, Any]) -> bool:
    return all(k in obj for k in LIGHTNING_AVERAGING) and _has_tensors(obj["current_model_state"])


def _is_averaged(weight_set: str, others: tuple[str, ...]) -> bool:
    return weight_set in EMA_SETS or (weight_set == "state_dict" and "current_model_state" in others)


class CheckpointTensors(dict[str, Any]):
    """``{key: tensor}`` plus which weight set of the file it came from (None: the file held one)."""

    weight_set: str | None = None
    alternatives: tuple[str, ...] = ()
    shapes: dict[str, tuple[int, ...]] | None = None
    """Every tensor's shape, when the reader knew them without asking each tensor (a safetensors
    header); None: read them from the tensors."""
    standins: tuple[str, ...] = ()
    """The classes (and functions) the file names that were replaced by inert stand-ins, so that
    it was read without running them; the file's own first. Empty: nothing was replaced."""

    def describe(self) -> str | None:
        """The weight set and how the file was read, for the load report; None when there is
        nothing to say (a plain state dict)."""
        parts = []
        if self.weight_set is not None:
            kind = "EMA" if _is_averaged(self.weight_set, self.alternatives) else "live"
            others = ", ".join(repr(a) for a in self.alternatives)
            switch = "use_ema=False" if kind == "EMA" else "use_ema=True"
            also = f"; the file also holds {others} ({switch})" if others else ""
            parts.append(f"{self.weight_set!r} ({kind} weights){also}")
        if self.standins:
            count = len(self.standins)
            shown = ", ".join(self.standins[:4]) + (f", +{count - 4} more" if count > 4 else "")
            noun = "class" if count == 1 else "classes"
            parts.append(f"read without running its code: {count} {noun} replaced by stand-ins ({shown})")
        return "; ".join(parts) or None


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
    if _averaged_by_lightning(obj):
        if use_ema is False:
            return obj["current_model_state"], "current_model_state", ("state_dict",)
        return obj["state_dict"], "state_dict", ("current_model_state",)
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


def metadata_names() -> set[str]:
    """The global names ``allowed_metadata()`` admits as the real types (never replaced by stand-ins)."""
    return {entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}"
            for entry in _metadata_types()}


_METADATA_LOCK = threading.Lock()
_metadata_users: list[Any] = [0, None]  # reads inside allowed_metadata(), and its registration while any is


@contextlib.contextmanager
def allowed_metadata() -> Iterator[None]:
    """``torch.load(weights_only=True)`` that also admits the metadata training scripts save
    (``argparse.Namespace``, numpy scalars, ``pathlib`` paths) and nothing else.

    torch's allow-list is process-wide: the types are registered by the first read to enter and
    removed by the last to leave, so one thread's read never removes them under another's."""
    import torch

    with _METADATA_LOCK:
        if _metadata_users[0] == 0:
            _metadata_users[1] = torch.serialization.safe_globals(_metadata_types())
            _metadata_users[1].__enter__()
        _metadata_users[0] += 1
    try:
        yield
    finally:
        with _METADATA_LOCK:
            _metadata_users[0] -= 1
            if _metadata_users[0] == 0:
                _metadata_users[1].__exit__(None, None, None)
                _metadata_users[1] = None
