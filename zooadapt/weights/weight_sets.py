"""Which weights of a training checkpoint to load, and the metadata that may come with them.

Training scripts save more than one set of weights: timm's train.py writes ``state_dict`` and
``state_dict_ema``, others ``model``/``model_ema`` or ``ema``, DINO a ``student`` and a
``teacher`` (the teacher is the student's moving average). ``use_ema`` chooses; by default
the EMA set wins when there is one, as timm's own ``load_state_dict(use_ema=True)`` does, and
the report says which set was used and that the other exists. Two averages are kept where no
key names them: latent-diffusion's ``LitEma`` stores its copy as buffers with the dots taken
out of the names (``model_ema.layer10conv1weight``), read back onto the live names
(``_lit_ema``); Lightning's ``StochasticWeightAveraging`` keeps its average in the checkpoint's
``callbacks`` state, offered to ``use_ema=True`` when no EMA is there but never loaded by
default (``_lightning_swa``).

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
from dataclasses import dataclass
from typing import Any

__all__ = ["CheckpointTensors", "WeightChoice", "allowed_metadata", "metadata_names", "choose_weight_set", "LIVE_SETS",
           "EMA_SETS"]

LIVE_SETS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params", "student")
"""Keys under which training checkpoints keep the weights being trained, most common first."""
EMA_SETS = ("state_dict_ema", "model_ema", "ema", "ema_state_dict", "ema_model", "teacher")
"""Keys under which they keep an exponential moving average of those weights."""
LIGHTNING_AVERAGING = ("state_dict", "current_model_state", "averaging_state")
"""Lightning's ``WeightAveraging`` callbacks (``EMAWeightAveraging``, lightning/pytorch/callbacks/
weight_averaging.py, ``on_save_checkpoint``) turn the usual names round: ``state_dict`` holds the
averaged model and ``current_model_state`` the live one, with the average's counters in
``averaging_state``."""


LIT_EMA_COUNTERS = ("decay", "num_updates")
"""The two buffers latent-diffusion's ``LitEma`` (ldm/modules/ema.py) registers beside its copies
of the parameters: its settings, not weights."""
SWA_AVERAGE = "average_model_state"
"""Where Lightning's ``StochasticWeightAveraging.state_dict()`` (lightning/pytorch/callbacks/
stochastic_weight_avg.py) keeps its averaged LightningModule, beside ``n_averaged``; the checkpoint
holds that under ``callbacks[<the callback's state_key>]``."""
_BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _averaged_by_lightning(obj: Mapping[str, Any]) -> bool:
    return all(k in obj for k in LIGHTNING_AVERAGING) and _has_tensors(obj["current_model_state"])


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
            others = ", ".join(repr(a) for a in self.alternatives)
            switch = "use_ema=True" if kind == "live" else "use_ema=False"
            also = f"; the file also holds {others} ({switch})" if others else ""
            what = f"{kind} weights" if kind in ("EMA", "live") else kind
            parts.append(f"{self.weight_set!r} ({what}){also}")
        parts += self.notes
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


@dataclass(frozen=True)
class WeightChoice:
    """What ``choose_weight_set`` took from an unpickled checkpoint: the weights, their set's name
    (None: the file holds one), the other sets, and what the report says of them (the fields
    ``CheckpointTensors`` carries on)."""

    weights: Any
    weight_set: str | None = None
    alternatives: tuple[str, ...] = ()
    kind: str | None = None
    notes: tuple[str, ...] = ()


def choose_weight_set(obj: Any, use_ema: bool | None) -> WeightChoice:
    """The weights of an unpickled checkpoint to read, which set they are and which others it holds.

    ``use_ema`` None prefers an EMA set when there is one (timm's default); True requires one, or
    where there is none a Lightning SWA average; False takes the live weights.
    """
    if not isinstance(obj, Mapping):
        return WeightChoice(obj)
    swa = _lightning_swa(obj)
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
    live = [k for k in LIVE_SETS if k in obj and _has_tensors(obj[k])]
    ema = [k for k in EMA_SETS if k in obj and _has_tensors(obj[k])]
    if not ema:
        lit_ema = _lit_ema(obj)
        if lit_ema is not None:
            return lit_ema.choose(use_ema)
        if use_ema:
            present = ", ".join(repr(k) for k in list(obj)[:10])
            raise InvalidArgumentError(
                f"use_ema=True, but the checkpoint holds no EMA weights (looked for {', '.join(EMA_SETS)}, Lightning's "
                f"EMAWeightAveraging and StochasticWeightAveraging states and LitEma buffers; its keys are {present}); "
                "drop use_ema")
        if len(live) <= 1:
            return WeightChoice(obj)
        return WeightChoice(obj[live[0]], live[0], tuple(live[1:]))
    if use_ema is False:
        if not live:
            raise InvalidArgumentError(
                f"use_ema=False, but the checkpoint holds only EMA weights ({', '.join(map(repr, ema))}); drop use_ema")
        return WeightChoice(obj[live[0]], live[0], tuple(live[1:] + ema))
    return WeightChoice(obj[ema[0]], ema[0], tuple(ema[1:] + live))


def _holds_ema(obj: Mapping[str, Any]) -> bool:
    """Whether ``_choose_ema`` finds an EMA set in the checkpoint."""
    return (_averaged_by_lightning(obj) or any(k in obj and _has_tensors(obj[k]) for k in EMA_SETS)
            or _lit_ema(obj) is not None)


# -- latent-diffusion's LitEma: the average as buffers named without dots ----------------------


@dataclass(frozen=True)
class _LitEma:
    """A ``LitEma``'s buffers in a state dict: ``prefix`` is the EMA module's (``model_ema.``),
    ``owner`` that of the module it averages (``model.``), ``averaged`` each of the owner's keys
    with its average."""

    prefix: str
    owner: str
    averaged: dict[str, Any]
    state: Mapping[str, Any]

    def choose(self, use_ema: bool | None) -> WeightChoice:
        """The live set (the state without the EMA's buffers) or the EMA set: the live set with
        each averaged parameter in place of the live one, as ``LitEma.copy_to`` makes the model
        (it averages parameters only: buffers such as BatchNorm statistics stay the live ones)."""
        ema_set, live_set = f"{self.prefix}*", f"{self.owner}*"
        rest = {k: v for k, v in self.state.items() if not (isinstance(k, str) and k.startswith(self.prefix))}
        if use_ema is False:
            return WeightChoice(rest, live_set, (ema_set,), "live")
        note = (f"{ema_set!r} is LitEma's average of {len(self.averaged)} parameters under {self.owner!r} (named "
                "without dots); buffers such as BatchNorm statistics are the live ones, as LitEma.copy_to leaves them")
        chosen = {k: self.averaged.get(k, v) for k, v in rest.items()}
        return WeightChoice(chosen, ema_set, (live_set,), "EMA", (note,))


def _lit_ema(obj: Mapping[str, Any]) -> _LitEma | None:
    """The ``LitEma`` in the checkpoint's state dict (the checkpoint itself or one of its live
    sets: a Lightning checkpoint's ``state_dict``), or None.

    CompVis/latent-diffusion's ``LitEma`` (ldm/modules/ema.py) cannot register buffers with dots
    in their names, so it keeps the average of parameter ``a.b.c`` as buffer ``abc``
    (``m_name2s_name``) beside ``decay`` and ``num_updates``; the LightningModule holds it as
    ``self.model_ema = LitEma(self.model)``, so its checkpoint has ``model_ema.layer10conv1weight``
    beside ``model.layer1.0.conv1.weight``. No key rule can put the dots back: the names are matched
    against the live ones instead (``_lit_ema_owner``)."""
    for state in (obj, *(obj[k] for k in LIVE_SETS if k in obj)):
        found = _lit_ema_in(state) if isinstance(state, Mapping) else None
        if found is not None:
            return found
    return None


def _lit_ema_in(state: Mapping[str, Any]) -> _LitEma | None:
    """A ``LitEma`` among the keys of one state dict: a prefix with both counters as scalars and
    every other key under it one name without dots."""
    import torch

    for key, counter in state.items():
        if not (isinstance(key, str) and key.endswith("." + LIT_EMA_COUNTERS[1])):
            continue
        prefix = key[:-len(LIT_EMA_COUNTERS[1])]
        decay = state.get(prefix + LIT_EMA_COUNTERS[0])
        if not (_scalar(counter) and _scalar(decay)):
            continue
        names = {k[len(prefix):]: v for k, v in state.items()
                 if isinstance(k, str) and k.startswith(prefix) and k[len(prefix):] not in LIT_EMA_COUNTERS}
        if names and all("." not in n and isinstance(v, torch.Tensor) for n, v in names.items()):
            found = _lit_ema_owner(state, prefix, names)
            if found is not None:
                return found
    return None


def _scalar(value: object) -> bool:
    import torch

    return isinstance(value, torch.Tensor) and value.ndim == 0


def _lit_ema_owner(state: Mapping[str, Any], prefix: str, names: Mapping[str, Any]) -> _LitEma | None:
    """The module a ``LitEma``'s dotless names belong to: the prefix under which every name, its
    dots taken out, is a key of the same shape. When several prefixes fit (two copies of one
    network), the one the EMA is named after (``model_ema.`` -> ``model.``); None when none does.

    Two keys may read the same without dots (``layer1.0.x`` and ``layer10.x``): ``LitEma`` then
    keeps one buffer for both and ``copy_to`` writes it into each, so each gets it here too."""
    import torch

    by_owner: dict[str, dict[str, list[str]]] = {}
    for key, value in state.items():
        if not isinstance(key, str) or key.startswith(prefix) or not isinstance(value, torch.Tensor):
            continue
        parts = key.split(".")
        for i in range(1, len(parts)):
            by_owner.setdefault(".".join(parts[:i]) + ".", {}).setdefault("".join(parts[i:]), []).append(key)
    fits = [owner for owner, index in by_owner.items()
            if all(n in index and all(state[k].shape == v.shape for k in index[n]) for n, v in names.items())]
    owner = fits[0] if len(fits) == 1 else next((o for o in fits if o in _named_after(prefix)), None)
    if owner is None:
        return None
    averaged = {k: names[n] for n, keys in by_owner[owner].items() if n in names for k in keys}
    return _LitEma(prefix, owner, averaged, state)


def _named_after(prefix: str) -> set[str]:
    """The prefixes of the module an EMA prefix is named after: ``model_ema.`` and ``ema_model.``
    -> ``model.``."""
    head, _, last = prefix[:-1].rpartition(".")
    bases = {last.removesuffix("_ema"), last.removeprefix("ema_")} - {last, ""}
    return {f"{head}.{base}." if head else f"{base}." for base in bases}


# -- Lightning's StochasticWeightAveraging: the average in the callbacks' state ------------------


@dataclass(frozen=True)
class _LightningSwa:
    """A Lightning ``StochasticWeightAveraging`` callback's state in a checkpoint: ``callback`` its
    key in ``callbacks``, ``average`` the averaged LightningModule's state dict, ``count`` its
    ``n_averaged``, ``latest`` its ``latest_update_epoch``, ``live`` the checkpoint's ``state_dict``
    and ``epoch`` its ``epoch`` (None: not saved as an int)."""

    callback: str
    average: Mapping[str, Any]
    count: int
    latest: int | None
    live: Mapping[str, Any]
    epoch: int | None

    @property
    def where(self) -> str:
        return f"callbacks[{self.callback!r}]"

    @property
    def epochs(self) -> str:
        """How many epochs were averaged, in words (Lightning updates the average once an epoch)."""
        return f"{self.count} epoch{'s' if self.count != 1 else ''}"

    def transferred(self) -> bool:
        """Whether ``state_dict`` is the average: when SWA ends Lightning copies the averaged
        parameters into the model (``transfer_weights``: at the start of the extra epoch in which
        it recomputes a BatchNorm model's statistics, else in ``on_train_end``). The average is
        updated at the start of each SWA epoch, so a checkpoint saved in a later epoch than the
        last update is past the copy. A BatchNorm model's parameters need not equal the average's
        then (Lightning steps the optimizer once more on the extra epoch's last batch, with the
        gradients left from training); any other model's must, or training stopped early, before
        SWA ended, and nothing was copied. Without the epochs, the parameters alone decide."""
        if self.count < 1:
            return False
        if self.epoch is not None and self.latest is not None:
            return self.epoch > self.latest and (self.has_statistics or self.same_parameters())
        return self.same_parameters()

    @property
    def has_statistics(self) -> bool:
        """Whether the model has BatchNorm statistics (which the average never updates)."""
        return any(k.endswith(_BN_STATISTICS[:2]) for k in self.average)

    def same_parameters(self) -> bool:
        """Whether ``state_dict`` holds the average's tensors, BatchNorm statistics aside."""
        import torch

        if self.average.keys() != self.live.keys():
            return False
        for key, value in self.average.items():
            other = self.live[key]
            if key.endswith(_BN_STATISTICS) or not isinstance(value, torch.Tensor):
                continue
            if not (isinstance(other, torch.Tensor) and other.shape == value.shape and torch.equal(other, value)):
                return False
        return True

    def mention(self) -> str:
        """What the report says of the average, and of what it lacks."""
        if self.count < 1:
            return (f"{self.where} (Lightning's StochasticWeightAveraging) holds no average yet (n_averaged=0: SWA had "
                    "not started when this was saved)")
        return (f"{SWA_AVERAGE!r} is Lightning's StochasticWeightAveraging average over {self.epochs}, in {self.where}"
                + ("; its BatchNorm statistics are not averaged (they are the model's from when training began): "
                   "once it is loaded, recompute them on your data with torch.optim.swa_utils.update_bn(loader, "
                   "model) before evaluating" if self.has_statistics else ""))

    def choose(self, use_ema: bool | None) -> WeightChoice:
        """The live ``state_dict`` unless ``use_ema=True`` asks for the average: unlike an EMA, the
        average is not the model Lightning evaluates until SWA ends, when it becomes ``state_dict``
        (then the only set: the live weights are gone)."""
        from ..contract.errors import InvalidArgumentError

        if self.transferred():
            if use_ema is False:
                raise InvalidArgumentError(
                    f"use_ema=False, but the checkpoint's 'state_dict' is Lightning's stochastic weight average "
                    f"({self.where}, n_averaged={self.count}), copied into the model when SWA ended: the live weights "
                    "were not kept. Drop use_ema, or load a checkpoint saved before SWA ended")
            return WeightChoice(self.live, "state_dict", (), "SWA average", (
                f"Lightning's StochasticWeightAveraging ({self.where}) copied its average over {self.epochs} "
                "into the model when SWA ended",))
        if use_ema is True:
            if self.count < 1:
                raise InvalidArgumentError(
                    f"use_ema=True, but the checkpoint holds no EMA weights, and its StochasticWeightAveraging average "
                    f"({self.where}) has averaged nothing yet (n_averaged=0: SWA had not started when it was saved); "
                    "drop use_ema, or load a checkpoint saved once SWA had started")
            return WeightChoice(self.average, SWA_AVERAGE, ("state_dict",), "SWA average", (self.mention(),))
        return WeightChoice(self.live, "state_dict", (SWA_AVERAGE,) if self.count >= 1 else (), "live",
                            (self.mention(),))


def _lightning_swa(obj: Mapping[str, Any]) -> _LightningSwa | None:
    """Lightning's SWA callback state, when the checkpoint holds one beside its ``state_dict``.

    Found by what it holds (``n_averaged`` and the averaged state), not by its key: that is the
    callback's class name, a subclass's own."""
    callbacks, live = obj.get("callbacks"), obj.get("state_dict")
    if not isinstance(callbacks, Mapping) or not isinstance(live, Mapping) or not _has_tensors(live):
        return None
    for name, state in callbacks.items():
        if isinstance(state, Mapping) and "n_averaged" in state and isinstance(state.get(SWA_AVERAGE), Mapping) \
                and _has_tensors(state[SWA_AVERAGE]):
            return _LightningSwa(str(name), state[SWA_AVERAGE], _count(state["n_averaged"]) or 0,
                                 _count(state.get("latest_update_epoch")), live, _count(obj.get("epoch")))
    return None


def _count(value: object) -> int | None:
    """A counter as saved (an int; a one-element tensor in older files); None when it is neither."""
    import torch

    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
