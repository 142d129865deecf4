"""Averaged weights that no set's name gives away, and frameworks that swap the average in on save.

``weight_sets.choose_weight_set`` reads the sets a checkpoint names (``state_dict_ema``,
``model_ema``, ``teacher``); the conventions here need more than a name:

* latent-diffusion's ``LitEma`` keeps its average as buffers named without dots
  (``model_ema.layer10conv1weight``), read back onto the live names (``lit_ema``);
* Lightning's ``StochasticWeightAveraging`` keeps its average in the checkpoint's ``callbacks``
  state, offered to ``use_ema=True`` but never loaded by default (``lightning_swa``);
* MMEngine's ``EMAHook`` and Composer's ``EMA`` algorithm swap the average into the model's own
  weights when they save, so the set named as the EMA copy holds the live weights
  (``swapped_on_save``): the model's weights are the average, as each framework evaluates and
  deploys them, and ``use_ema=False`` takes the live weights back from the other set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["WeightChoice", "has_tensors", "lit_ema", "lightning_swa", "swapped_on_save", "LIT_EMA_COUNTERS",
           "SWA_AVERAGE"]

LIT_EMA_COUNTERS = ("decay", "num_updates")
"""The two buffers latent-diffusion's ``LitEma`` (ldm/modules/ema.py) registers beside its copies
of the parameters: its settings, not weights."""
SWA_AVERAGE = "average_model_state"
"""Where Lightning's ``StochasticWeightAveraging.state_dict()`` (lightning/pytorch/callbacks/
stochastic_weight_avg.py) keeps its averaged LightningModule, beside ``n_averaged``; the checkpoint
holds that under ``callbacks[<the callback's state_key>]``."""
_BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def has_tensors(value: object) -> bool:
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


def lit_ema(obj: Mapping[str, Any], live_sets: tuple[str, ...]) -> _LitEma | None:
    """The ``LitEma`` in the checkpoint's state dict (the checkpoint itself or one of its live
    sets: a Lightning checkpoint's ``state_dict``), or None.

    CompVis/latent-diffusion's ``LitEma`` (ldm/modules/ema.py) cannot register buffers with dots
    in their names, so it keeps the average of parameter ``a.b.c`` as buffer ``abc``
    (``m_name2s_name``) beside ``decay`` and ``num_updates``; the LightningModule holds it as
    ``self.model_ema = LitEma(self.model)``, so its checkpoint has ``model_ema.layer10conv1weight``
    beside ``model.layer1.0.conv1.weight``. No key rule can put the dots back: the names are matched
    against the live ones instead (``_lit_ema_owner``)."""
    for state in (obj, *(obj[k] for k in live_sets if k in obj)):
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


def lightning_swa(obj: Mapping[str, Any]) -> _LightningSwa | None:
    """Lightning's SWA callback state, when the checkpoint holds one beside its ``state_dict``.

    Found by what it holds (``n_averaged`` and the averaged state), not by its key: that is the
    callback's class name, a subclass's own."""
    callbacks, live = obj.get("callbacks"), obj.get("state_dict")
    if not isinstance(callbacks, Mapping) or not isinstance(live, Mapping) or not has_tensors(live):
        return None
    for name, state in callbacks.items():
        if isinstance(state, Mapping) and "n_averaged" in state and isinstance(state.get(SWA_AVERAGE), Mapping) \
                and has_tensors(state[SWA_AVERAGE]):
            return _LightningSwa(str(name), state[SWA_AVERAGE], _count(state["n_averaged"]) or 0,
                                 _count(state.get("latest_update_epoch")), live, _count(obj.get("epoch")))
    return None


def _count(value: object) -> int | None:
    """A counter as saved (an int; a one-element tensor in older files); None when it is neither."""
    import torch

    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- frameworks that swap the average into the model's weights when they save --------------------


@dataclass(frozen=True)
class _Swapped:
    """A checkpoint whose framework swapped its EMA into the model's weights on save: ``average``
    is the set it saved as the model (``average_set``), ``live`` the live weights rebuilt from the
    set it saved as the EMA copy (``live_set``); ``note`` says so in the report."""

    average_set: str
    average: Mapping[str, Any]
    live_set: str
    live: Mapping[str, Any]
    note: str

    def choose(self, use_ema: bool | None) -> WeightChoice:
        if use_ema is False:
            return WeightChoice(self.live, self.live_set, (self.average_set,), "live", (self.note,))
        return WeightChoice(self.average, self.average_set, (self.live_set,), "EMA", (self.note,))


MMENGINE_MODULE = "module."
"""The prefix of the averaged copy in MMEngine's ``ema_state_dict``: its ``BaseAveragedModel``
(mmengine/model/averaged_model.py) holds the model as ``self.module``, beside a ``steps`` buffer."""


def swapped_on_save(obj: Mapping[str, Any], use_ema: bool | None) -> WeightChoice | None:
    """The weights of a Composer checkpoint, or of an MMEngine one whose ``EMAHook`` swapped its
    average in; None for any other checkpoint."""
    composer = _composer(obj, use_ema)
    if composer is not None:
        return composer
    mmengine = _mmengine_ema(obj)
    return mmengine.choose(use_ema) if mmengine is not None else None


def _mmengine_ema(obj: Mapping[str, Any]) -> _Swapped | None:
    """MMEngine's ``EMAHook`` (mmengine/hooks/ema_hook.py, ``before_save_checkpoint``) saves its
    ``ExponentialMovingAverage`` as ``ema_state_dict`` (``module.``-prefixed keys and ``steps``),
    then swaps every ``module.`` tensor with the model's own in ``state_dict`` "so that we can
    directly load the averaged model weights for deployment": ``state_dict`` holds the average,
    ``ema_state_dict`` the live weights (mmpretrain's ``EMAHook`` inherits this). The hook only
    runs inside MMEngine's ``Runner``, whose ``save_checkpoint`` always writes ``meta`` and
    ``message_hub``: without them an ``ema_state_dict`` is read by its name, as an EMA set."""
    model, ema = obj.get("state_dict"), obj.get("ema_state_dict")
    if not (isinstance(model, Mapping) and isinstance(ema, Mapping) and "meta" in obj and "message_hub" in obj):
        return None
    steps = _count(ema.get("steps"))
    copies = {k[len(MMENGINE_MODULE):]: v for k, v in ema.items()
              if isinstance(k, str) and k.startswith(MMENGINE_MODULE)}
    if steps is None or not copies or len(copies) + 1 != len(ema) or not copies.keys() <= model.keys():
        return None
    live = {k: copies.get(k, v) for k, v in model.items()}
    return _Swapped("state_dict", model, "ema_state_dict", live, (
        f"MMEngine's EMAHook swapped its average (steps={steps}) into 'state_dict' when it saved, as MMEngine loads "
        "it for testing; the live weights are in 'ema_state_dict', under 'module.'"))


def _composer(obj: Mapping[str, Any], use_ema: bool | None) -> WeightChoice | None:
    """A Composer checkpoint (composer/utils/checkpoint.py, ``_save_checkpoint``): ``{'state':
    State.state_dict(), 'rng': [...]}`` (``{'state': {'model', 'integrations', 'metadata'}}`` with
    ``weights_only``), the model's weights in ``state['model']`` (a ``ComposerClassifier``'s under
    ``module.``). Its ``EMA`` algorithm (composer/algorithms/ema/ema.py) keeps the other weights as
    ``EMAParameters`` in ``state['algorithms']``, ``[('EMA', {'ema_model': {'named_parameters_dict',
    'named_buffers_dict'}, 'ema_weights_active', 'ema_started'})]``, and swaps them into the model
    for checkpointing once it has started (``ema_weights_active``: the model holds the average)."""
    from ..contract.errors import InvalidArgumentError

    state = obj.get("state")
    if not (isinstance(state, Mapping) and has_tensors(state.get("model"))
            and ("rng" in obj or "integrations" in state or "timestamp" in state)):
        return None
    model = state["model"]
    ema = _composer_ema_state(state.get("algorithms"))
    if ema is None or ema.get("ema_started") is not True:
        if use_ema:
            raise InvalidArgumentError(
                "use_ema=True, but the Composer checkpoint holds no EMA weights (its 'algorithms' have no EMA, or its "
                "EMA had not started when it was saved); drop use_ema")
        return WeightChoice(model, "state.model", (), "live")
    stored = ema["ema_model"]
    others = {**stored.get("named_parameters_dict", {}), **stored.get("named_buffers_dict", {})}
    other = {k: others.get(k, v) for k, v in model.items()}
    where = "state.algorithms.EMA"
    if ema.get("ema_weights_active") is True:
        note = (f"Composer's EMA swapped its average into 'state.model' for checkpointing; the live weights are in "
                f"{where!r}")
        return _Swapped("state.model", model, where, other, note).choose(use_ema)
    note = f"Composer's EMA average is in {where!r}; 'state.model' holds the live weights"
    return _Swapped(where, other, "state.model", model, note).choose(use_ema)


def _composer_ema_state(algorithms: object) -> Mapping[str, Any] | None:
    """The ``EMA`` algorithm's state among Composer's ``[(qualname, state_dict), ...]``, when it
    holds weights."""
    if not isinstance(algorithms, (list, tuple)):
        return None
    for entry in algorithms:
        if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], Mapping):
            stored = entry[1].get("ema_model")
            if isinstance(stored, Mapping) and has_tensors(stored.get("named_parameters_dict")):
                return entry[1]
    return None
