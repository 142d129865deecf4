"""Which weights of a training checkpoint to load, and the metadata that may come with them.

Training scripts save more than one set of weights: timm's train.py writes ``state_dict`` and
``state_dict_ema``, others ``model``/``model_ema`` or ``ema``, DINO a ``student`` and a
``teacher`` (the teacher is the student's moving average). ``use_ema`` chooses; by default
the EMA set wins when there is one, as timm's own ``load_state_dict(use_ema=True)`` does, and
the report says which set was used and that the other exists. The conventions that need more
than a set's name are in ``averages.py``: latent-diffusion's ``LitEma`` buffers, Lightning's
``StochasticWeightAveraging`` average, and MMEngine's ``EMAHook`` and Composer's ``EMA``, which
swap the average into the model's weights on save. VISSL nests its weights under
``classy_state_dict`` (``_vissl``).

They also save harmless metadata beside the weights: an ``argparse.Namespace`` of arguments,
numpy scalars (a best metric), ``pathlib`` paths. ``torch.load(weights_only=True)`` refuses
them; ``allowed_metadata()`` admits exactly these types (as timm admits ``Namespace``), so
such a checkpoint loads without ``trusted=True``; any other class is replaced by an inert
stand-in (``standins.py``), and ``CheckpointTensors.standins`` names those the report mentions.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from math import prod
from typing import Any

from .averages import WeightChoice, has_tensors, lightning_swa, lit_ema, swapped_on_save

__all__ = ["CheckpointTensors", "WeightChoice", "averaged_model_counters", "averaged_model_counter_keys",
           "AVERAGED_MODEL_COUNTER", "allowed_metadata", "metadata_names", "choose_weight_set", "LIVE_SETS", "EMA_SETS"]

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
    return all(k in obj for k in LIGHTNING_AVERAGING) and has_tensors(obj["current_model_state"])


def _is_averaged(weight_set: str, others: tuple[str, ...]) -> bool:
    return weight_set in EMA_SETS or (weight_set == "state_dict" and "current_model_state" in others)


class CheckpointTensors(dict[str, Any]):
    """``{key: tensor}`` plus which weight set of the file it came from (None: the file held one)."""

    weight_set: str | None = None
    alternatives: tuple[str, ...] = ()
    kind: str | None = None
    """What the set is ("EMA", "live", "SWA average"); None: told by its name (``_is_averaged``)."""
    notes: tuple[str, ...] = ()
    """What the report must add about the sets (where an average came from, what it lacks)."""
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
            kind = self.kind or ("EMA" if _is_averaged(self.weight_set, self.alternatives) else "live")
            also = self._also(kind)
            what = f"{kind} weights" if kind in ("EMA", "live") else kind
            parts.append(f"{self.weight_set!r} ({what}){also}")
        parts += self.notes
        if self.standins:
            count = len(self.standins)
            shown = ", ".join(self.standins[:4]) + (f", +{count - 4} more" if count > 4 else "")
            noun = "class" if count == 1 else "classes"
            parts.append(f"read without running its code: {count} {noun} replaced by stand-ins ({shown})")
        return "; ".join(parts) or None

    def _also(self, kind: str) -> str:
        """The file's other sets, each with what loads it: the other kind by ``use_ema``; one of the
        same kind holds the same tensors (``_one_set_of_its_kind`` refuses two that differ)."""
        if not self.alternatives:
            return ""
        names = (self.weight_set or "", *self.alternatives)
        if kind not in ("EMA", "live") or self.kind is not None or not all(n in LIVE_SETS + EMA_SETS for n in names):
            # sets told apart otherwise than by these names (mmengine's swap, LitEma's buffers, an SWA
            # average): each alternative is the other kind
            switch = "use_ema=False" if kind != "live" else "use_ema=True"
            return f"; the file also holds {', '.join(repr(a) for a in self.alternatives)} ({switch})"
        other = [a for a in self.alternatives if _is_averaged(a, names) != (kind == "EMA")]
        same = [a for a in self.alternatives if a not in other]
        said = []
        if other:
            said.append(f"{', '.join(map(repr, other))} ({'use_ema=True' if kind == 'live' else 'use_ema=False'})")
        if same:
            said.append(f"{', '.join(map(repr, same))} (the same weights)")
        return "; the file also holds " + " and ".join(said)


AVERAGED_MODEL_COUNTER = "n_averaged"
"""The buffer ``torch.optim.swa_utils.AveragedModel`` registers beside the copy it averages
(``module.``): how many updates it took, not a weight of the network (torchvision's reference
train.py saves its ``ExponentialMovingAverage`` this way as ``model_ema``)."""


def averaged_model_counter_keys(keys: Collection[str], shape_of: Callable[[str], Sequence[int]]) -> list[str]:
    """The keys that are an ``AveragedModel``'s ``n_averaged`` counter: one element, beside keys
    under the same prefix's ``module.`` (its averaged copy); a key of that name anywhere else is a
    weight like any other. Names and shapes only (a safetensors header is enough)."""
    named = [k for k in keys if k.endswith(AVERAGED_MODEL_COUNTER) and k.rpartition(".")[2] == AVERAGED_MODEL_COUNTER]
    return [k for k in named if prod(shape_of(k)) == 1
            and any(o.startswith(k[: -len(AVERAGED_MODEL_COUNTER)] + "module.") for o in keys)]


def averaged_model_counters(tensors: CheckpointTensors) -> CheckpointTensors:
    """``tensors`` without the ``n_averaged`` counter of each ``AveragedModel`` state it holds
    (``averaged_model_counter_keys``), the report told how many updates the average took."""
    found = []
    for key in averaged_model_counter_keys(tensors, lambda k: tuple(tensors[k].shape)):
        value = tensors.pop(key)
        if tensors.shapes is not None:
            tensors.shapes.pop(key, None)
        count = "" if getattr(value, "is_meta", False) else f"={int(value.item())}"  # a meta read holds no value
        found.append(f"{key}{count}")
    if found:
        tensors.notes = (*tensors.notes, f"an average by torch.optim.swa_utils.AveragedModel ({', '.join(found)}: "
                                         "its count of updates, not a weight)")
    return tensors


def choose_weight_set(obj: Any, use_ema: bool | None) -> WeightChoice:
    """The weights of an unpickled checkpoint to read, which set they are and which others it holds.

    ``use_ema`` None prefers an EMA set when there is one (timm's default); True requires one, or
    where there is none a Lightning SWA average; False takes the live weights.
    """
    if not isinstance(obj, Mapping):
        return WeightChoice(obj)
    vissl = _vissl(obj)
    if vissl is not None:
        if use_ema:
            raise _no_ema(obj)
        return vissl
    swapped = swapped_on_save(obj, use_ema)
    if swapped is not None:
        return swapped
    swa = lightning_swa(obj)
    if swa is None:
        return _choose_ema(obj, use_ema)
    if _holds_ema(obj):  # an EMA is what use_ema names first: the SWA average is only mentioned
        chosen = _choose_ema(obj, use_ema)
        return WeightChoice(chosen.weights, chosen.weight_set, chosen.alternatives, chosen.kind,
                            (*chosen.notes, swa.mention()))
    return swa.choose(use_ema)


def _choose_ema(obj: Mapping[str, Any], use_ema: bool | None) -> WeightChoice:
    """The live or EMA set of a checkpoint's named sets (``LIVE_SETS``, ``EMA_SETS``, Lightning's
    ``WeightAveraging`` names) or of the ``LitEma`` buffers beside its live weights."""
    from ..contract.errors import InvalidArgumentError

    if _averaged_by_lightning(obj):
        if use_ema is False:
            return WeightChoice(obj["current_model_state"], "current_model_state", ("state_dict",))
        return WeightChoice(obj["state_dict"], "state_dict", ("current_model_state",))
    live = [k for k in LIVE_SETS if k in obj and has_tensors(obj[k])]
    ema = [k for k in EMA_SETS if k in obj and has_tensors(obj[k])]
    if use_ema is False or not ema:
        _one_set_of_its_kind(obj, live, "live")
    elif not (use_ema is None and live and _averaged_nothing(obj[ema[0]])):
        _one_set_of_its_kind(obj, ema, "EMA")
    if not ema:
        found = lit_ema(obj, LIVE_SETS)
        if found is not None:
            return found.choose(use_ema)
        if use_ema:
            raise _no_ema(obj)
        if len(live) <= 1:
            return WeightChoice(obj)
        return WeightChoice(obj[live[0]], live[0], tuple(live[1:]))
    if use_ema is False:
        if not live:
            raise InvalidArgumentError(
                f"use_ema=False, but the checkpoint holds only EMA weights ({', '.join(map(repr, ema))}); drop use_ema")
        return WeightChoice(obj[live[0]], live[0], tuple(live[1:] + ema))
    if use_ema is None and live and _averaged_nothing(obj[ema[0]]):
        return WeightChoice(obj[live[0]], live[0], tuple(live[1:] + ema), notes=(
            f"{ema[0]!r} (torch.optim.swa_utils.AveragedModel) has averaged nothing yet ({AVERAGED_MODEL_COUNTER}=0: "
            "saved before its first update, it holds the weights it was made from), so the live weights load; "
            "use_ema=True loads that copy",))
    return WeightChoice(obj[ema[0]], ema[0], tuple(ema[1:] + live))


def _one_set_of_its_kind(obj: Mapping[str, Any], names: list[str], kind: str) -> None:
    """Refuse two sets of the kind a load would choose from (``{'model': A, 'net': B}``, or
    ``model_ema`` beside ``teacher``) unless they hold the same tensors: which one the file's
    author meant cannot be told from their names, so no order of names may pick one."""
    from ..contract.errors import AmbiguousCheckpointError

    if len(names) < 2 or all(_same_tensors(obj[names[0]], obj[n]) for n in names[1:]):
        return
    listed = ", ".join(repr(n) for n in names)
    raise AmbiguousCheckpointError(
        f"the checkpoint holds {len(names)} different {kind} weight sets ({listed}) and zooadapt does not pick one "
        f"by its name. Pass the one you mean in memory: weights=torch.load(PATH, weights_only=True)[{names[-1]!r}]"
        + (", or use_ema=False for the live weights" if kind == "EMA" else ""))


def _same_tensors(a: object, b: object) -> bool:
    """Whether two weight sets hold the same keys with equal tensors (a copy saved twice)."""
    import torch

    if not (isinstance(a, Mapping) and isinstance(b, Mapping)) or a.keys() != b.keys():
        return a is b
    for key, value in a.items():
        other = b[key]
        if isinstance(value, torch.Tensor) and isinstance(other, torch.Tensor):
            if value.shape != other.shape or value.dtype != other.dtype or not torch.equal(value, other):
                return False
        elif (isinstance(value, Mapping) or isinstance(other, Mapping)) and not _same_tensors(value, other):
            return False
    return True


def _averaged_nothing(state: object) -> bool:
    """Whether ``state`` is an ``AveragedModel``'s that took no update (``n_averaged`` 0)."""
    if not isinstance(state, Mapping):
        return False
    count = state.get(AVERAGED_MODEL_COUNTER)
    return (getattr(count, "numel", lambda: 0)() == 1 and int(count.item()) == 0  # type: ignore[union-attr]
            and any(isinstance(k, str) and k.startswith("module.") for k in state))


def _no_ema(obj: Mapping[str, Any]) -> Exception:
    from ..contract.errors import InvalidArgumentError

    present = ", ".join(repr(k) for k in list(obj)[:10])
    return InvalidArgumentError(
        f"use_ema=True, but the checkpoint holds no EMA weights (looked for {', '.join(EMA_SETS)}, Lightning's "
        f"EMAWeightAveraging and StochasticWeightAveraging states, LitEma buffers, MMEngine's EMAHook and Composer's "
        f"EMA; its keys are {present}); drop use_ema")


VISSL_MODEL = ("classy_state_dict", "base_model", "model")
"""Where VISSL keeps the model's weights (vissl/utils/checkpoint.py; its extra_scripts/
convert_vissl_to_torchvision.py reads ``[...]["trunk"]``): ``{"trunk": {...}, "heads": {...}}``."""


def _vissl(obj: Mapping[str, Any]) -> WeightChoice | None:
    """A VISSL checkpoint's trunk and heads, the heads' keys under ``heads.`` (their own start
    with the head's index, ``0.clf.0.weight``), so that a trained classifier is placed or named,
    never dropped unseen; None for any other checkpoint."""
    found: Any = obj
    for key in VISSL_MODEL:
        found = found.get(key) if isinstance(found, Mapping) else None
    if not isinstance(found, Mapping) or not has_tensors(found.get("trunk")):
        return None
    weights = dict(found["trunk"])
    heads = found.get("heads")
    if isinstance(heads, Mapping):
        weights.update({f"heads.{k}": v for k, v in heads.items() if isinstance(k, str)})
    return WeightChoice(weights, "classy_state_dict", (), "live", (
        "VISSL's trunk and heads (classy_state_dict -> base_model -> model), the heads under 'heads.'",))


def _holds_ema(obj: Mapping[str, Any]) -> bool:
    """Whether ``_choose_ema`` finds an EMA set in the checkpoint."""
    return (_averaged_by_lightning(obj) or any(k in obj and has_tensors(obj[k]) for k in EMA_SETS)
            or lit_ema(obj, LIVE_SETS) is not None)



_NUMPY_DTYPES = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16",
                 "uint8", "bool")
"""The numpy dtypes a checkpoint's metadata may pickle: a best metric's, and ``uint32``, the dtype of
``np.random.get_state()``'s key array, which checkpoints that save RNG states hold (Composer's ``rng``)."""


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
              for t in _NUMPY_DTYPES]
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
