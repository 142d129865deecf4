"""Gradual unfreezing by stage name in Lightning: ``StageFinetuning``, a ``BaseFinetuning`` callback.

Lightning's ``BaseFinetuning`` knows modules, not stages, and its ``freeze`` leaves BatchNorm
statistics updating. This callback speaks the family's stage names (the same grammar as
``zooadapt.freeze``), freezes with zooadapt's BatchNorm policy, and unfreezes through
``zooadapt.unfreeze`` and the parameter-group logic of ``zooadapt.param_groups``::

    model = MyLightningModule()        # holds self.model = zooadapt.load("resnet34", num_classes=5)
    trainer = lightning.Trainer(callbacks=[
        StageFinetuning(freeze="all", unfreeze={2: "layer4", 4: ("layer3", 1e-4)})])

A network of your own works once its stages are known (``zooadapt.attach(self.net, family=...)``).
``docs/finetuning.md`` says how rates of added stages are chosen, what is checked before training
and why Lightning's eval-mode warning is silenced for frozen BatchNorm layers only.

Install with ``pip install zooadapt[lightning]``.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from ..contract.errors import FreezeSpecError, InvalidArgumentError, MissingDependencyError

try:
    from lightning.pytorch.callbacks import BaseFinetuning
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from pytorch_lightning.callbacks import BaseFinetuning  # type: ignore[assignment]  # the same class, older name
    except ImportError as exc:
        raise MissingDependencyError(
            "zooadapt.lightning needs Lightning: pip install 'zooadapt[lightning]' (or pip install lightning)"
        ) from exc

from ..tuning.freezing import (
    _check_bn,
    _ddp_misses_trainable,
    _FrozenBatchNormMixin,
    _is_ddp,
    _stage_map,
    _stage_params,
)
from ..tuning.freezing import freeze as _freeze
from ..tuning.freezing import unfreeze as _unfreeze
from ..tuning.optim import _check_settings, _optimizer_weight_decay, add_param_group, param_groups
from ..tuning.parallel import rewrap_ddp
from ..tuning.wrappers import unwrap

if TYPE_CHECKING:
    import torch

__all__ = ["StageFinetuning"]

Spec = str | int | Sequence[str] | None


def _schedule(unfreeze: object) -> list[tuple[int, Spec, float | None]]:
    if unfreeze is None:
        return []
    if not isinstance(unfreeze, Mapping):
        raise InvalidArgumentError(
            f"unfreeze={unfreeze!r}: pass a mapping from epoch to stages, e.g. {{2: 'layer4', 4: ('layer3', 1e-4)}}")
    steps = []
    for epoch, what in unfreeze.items():
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise InvalidArgumentError(f"unfreeze: epoch {epoch!r} must be an int >= 0 (the epoch it happens at)")
        spec, lr = what if isinstance(what, tuple) and len(what) == 2 else (what, None)
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr)
                               or lr < 0):
            raise InvalidArgumentError(f"unfreeze at epoch {epoch}: lr={lr!r} must be a finite number >= 0")
        steps.append((epoch, spec, lr))
    return sorted(steps, key=lambda s: s[0])


class StageFinetuning(BaseFinetuning):
    """Freeze stages before training, unfreeze named stages at given epochs.

    ``freeze``: stages frozen before training (``zooadapt.freeze`` grammar; default ``"all"``:
    only the head trains), with BatchNorm policy ``bn``. ``unfreeze``: ``{epoch: spec}`` or
    ``{epoch: (spec, lr)}``; at the start of that epoch the stages become trainable.

    Learning rates: with an optimizer built from ``zooadapt.param_groups(module, ...,
    include_frozen=True)`` the unfrozen stages' groups are already there (and every scheduler
    drives them); an ``lr`` then resets those groups' current rates (a scheduler that recomputes
    rates from its base rates, as ``LambdaLR`` does, overrides that at its next step). With an
    optimizer that holds only trainable parameters, the unfrozen ones are added by
    ``zooadapt.add_param_group`` with this callback's ``decay``, ``weight_decay`` and
    ``no_decay_norm_bias`` (as ``param_groups`` reads them: the stage k below the head trains at
    ``rate * decay**k``), at ``rate = lr`` or, with no ``lr``, as Lightning's
    ``BaseFinetuning.unfreeze_and_add_param_group`` does: the *current* rate of the optimizer's
    first group (the head's, for an optimizer over the trainable parameters of a model frozen with
    ``"all"``) divided by ``initial_denom_lr`` (default 10). Resuming from a checkpoint re-applies
    every unfreeze up to the epoch.

    What can be checked before training is checked then, not at the unfreeze epoch: stage names
    (at ``setup``), and at ``on_fit_start`` that one optimizer holds the model's parameters and
    can take the stages to add (a first group with a rate when no ``lr`` is given, an unambiguous
    weight decay), and that every unfreeze epoch is before ``max_epochs`` (a warning otherwise).

    Frozen BatchNorm layers stay in eval mode on purpose (their statistics are part of what is
    frozen). Lightning warns "Found N module(s) in eval mode at the start of training" about
    them; this callback silences that one warning when zooadapt's frozen BatchNorm layers (and
    their children) are the only modules in eval mode, and leaves it alone when a module of yours
    is in eval mode too (``bn="train"`` keeps them training, and the warning is not raised).

    Under a DDP strategy the wrapper is rebuilt after an unfreeze (``zooadapt.distributed.rewrap_ddp``),
    because DDP synchronises only the parameters trainable when it was built; communication
    hooks given to the strategy are not registered again.
    """

    def __init__(self, freeze: Spec = "all", unfreeze: Mapping[int, Any] | None = None, *, bn: str = "frozen",
                 decay: float | None = None, weight_decay: float | None = None,
                 no_decay_norm_bias: bool = True, initial_denom_lr: float = 10.0) -> None:
        super().__init__()
        _check_bn(bn)
        _check_settings(0.0, None, decay, weight_decay, no_decay_norm_bias)
        if (isinstance(initial_denom_lr, bool) or not isinstance(initial_denom_lr, (int, float))
                or not math.isfinite(initial_denom_lr) or initial_denom_lr <= 0):
            raise InvalidArgumentError(
                f"initial_denom_lr={initial_denom_lr!r}: a finite number > 0 (an unfrozen stage given no lr starts "
                "at the optimizer's first group's rate divided by it; Lightning's default is 10)")
        self.freeze_spec = freeze
        self.schedule = _schedule(unfreeze)
        self.bn = bn
        self.decay = decay
        self.weight_decay = weight_decay
        self.no_decay_norm_bias = no_decay_norm_bias
        self.initial_denom_lr = float(initial_denom_lr)
        self._quiet: tuple[Any, ...] | None = None

    # -- BaseFinetuning's two hooks -----------------------------------------------------------
    def freeze_before_training(self, pl_module: Any) -> None:
        model = unwrap(pl_module)
        smap = _stage_map(model, None)
        named = list(model.named_parameters())
        for epoch, spec, _ in self.schedule:  # a misspelt or empty stage fails now, not epochs later
            try:
                _stage_params(model, smap, smap.resolve(spec), spec, "unfreeze", named)
            except FreezeSpecError as exc:
                raise FreezeSpecError(f"unfreeze at epoch {epoch}: {exc}") from None
        _freeze(model, self.freeze_spec, bn=self.bn)  # type: ignore[arg-type]

    def finetune_function(self, pl_module: Any, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        model = unwrap(pl_module)
        if not _holds_any(optimizer, model):
            return  # another optimizer of the module (a discriminator's): not the one the stages join
        smap = _stage_map(model, None)
        for at, spec, lr in self.schedule:
            if at > epoch:
                break
            names = set(smap.resolve(spec))
            _unfreeze(model, spec)
            params = {id(p) for n, p in model.named_parameters() if smap.stage_of(n) in names}
            held = {id(p) for g in optimizer.param_groups for p in g["params"]}
            if params - held:
                rate = lr if lr is not None else optimizer.param_groups[0]["lr"] / self.initial_denom_lr
                add_param_group(optimizer, model, rate, decay=self.decay, weight_decay=self.weight_decay,
                                no_decay_norm_bias=self.no_decay_norm_bias)
            elif lr is not None and at == epoch:
                self._reset_rates(model, smap, names, lr, optimizer)

    def _reset_rates(self, model: Any, smap: Any, names: set[str], lr: float,
                     optimizer: torch.optim.Optimizer) -> None:
        """Set the groups holding the unfrozen stages to ``lr`` (layer-decayed as param_groups does)."""
        rates = {g["name"]: g["lr"] for g in param_groups(model, lr, decay=self.decay, include_frozen=True)}
        stage_of = {id(p): smap.stage_of(n) for n, p in model.named_parameters()}
        for group in optimizer.param_groups:
            stages = {stage_of.get(id(p)) for p in group["params"]} & names
            if len(stages) == 1:
                group["lr"] = rates[stages.pop()]

    # -- checks before the first epoch ------------------------------------------------------------
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_fit_start(trainer, pl_module)  # restores groups added before a checkpoint
        self._check_optimizers(trainer, pl_module)
        self._check_epochs(trainer)
        self._quiet_frozen_bn_warning(pl_module)

    def _check_optimizers(self, trainer: Any, pl_module: Any) -> None:
        """Fail now on what would fail at an unfreeze epoch: no optimizer to take the stages, no rate."""
        if not self.schedule:
            return
        model = unwrap(pl_module)
        smap = _stage_map(model, None)
        optimizers = list(trainer.optimizers)
        holders = [opt for opt in optimizers if _holds_any(opt, model)]
        held = {id(p) for opt in holders for g in opt.param_groups for p in g["params"]}
        for at, spec, lr in self.schedule:
            names = set(smap.resolve(spec))
            if all(id(p) in held for n, p in model.named_parameters() if smap.stage_of(n) in names):
                continue  # include_frozen groups: nothing to add
            where = f"unfreeze at epoch {at} ({spec!r}) adds its parameters to the optimizer"
            if not holders:
                none = "no optimizer holds" if optimizers else "configure_optimizers returned no optimizer holding"
                raise InvalidArgumentError(
                    f"{where}, but {none} a parameter of this {type(model).__name__}. Return one over the model, "
                    "best torch.optim.AdamW(zooadapt.param_groups(self, lr=..., include_frozen=True))")
            if len(holders) > 1:
                raise InvalidArgumentError(
                    f"{where}, but {len(holders)} optimizers hold parameters of this {type(model).__name__}, so which "
                    "one should take them is not clear. Build one with zooadapt.param_groups(self, lr=..., "
                    "include_frozen=True): every stage is in it from the start and nothing is added")
            opt = holders[0]
            if lr is None:
                first = opt.param_groups[0].get("lr") if opt.param_groups else None
                if isinstance(first, bool) or not isinstance(first, (int, float)) or not math.isfinite(first):
                    raise InvalidArgumentError(
                        f"{where} at the first group's rate / initial_denom_lr, but {type(opt).__name__}'s first group "
                        f"has lr={first!r}. Give a rate: unfreeze={{{at}: ({spec!r}, 1e-4)}}")
            if self.weight_decay is None:
                try:
                    _optimizer_weight_decay(opt)
                except InvalidArgumentError as exc:
                    raise InvalidArgumentError(f"{where}: {exc}") from None

    def _check_epochs(self, trainer: Any) -> None:
        last = getattr(trainer, "max_epochs", None)
        late = [at for at, _, _ in self.schedule if isinstance(last, int) and last >= 0 and at >= last]
        if late:
            warnings.warn(
                f"StageFinetuning: unfreeze at epoch {', '.join(map(str, late))} never happens: the Trainer stops "
                f"after max_epochs={last} (epochs count from 0)", UserWarning, stacklevel=2)

    # -- the eval-mode warning about zooadapt's frozen BatchNorm ----------------------------------
    def _quiet_frozen_bn_warning(self, pl_module: Any) -> None:
        """Ignore Lightning's "Found N module(s) in eval mode" when zooadapt's frozen BatchNorm layers
        (and their children) are all the N: the exact message, until ``on_train_start``.

        Lightning's fit loop warns (``rank_zero_warn``, a ``PossibleUserWarning``) between this hook
        and ``on_train_start``; a module put in eval mode later by your ``on_fit_start`` changes N,
        so the filter no longer matches and the warning shows."""
        self._unquiet()
        ours: set[str] = set()
        for name, module in pl_module.named_modules():
            if isinstance(module, _FrozenBatchNormMixin):
                ours.update(f"{name}.{sub}" if sub else name for sub, _ in module.named_modules())
        others = [name for name, module in pl_module.named_modules() if not module.training and name not in ours]
        count = sum(1 for _, module in pl_module.named_modules() if not module.training)
        if others or not count:
            return
        message = re.escape(f"Found {count} module(s) in eval mode at the start of training.")
        before = list(warnings.filters)
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
        added = [f for f in warnings.filters if f not in before]
        self._quiet = added[0] if added else None

    def _unquiet(self) -> None:
        quiet, self._quiet = self._quiet, None
        if quiet is not None and quiet in warnings.filters:
            cast("list[Any]", warnings.filters).remove(quiet)  # a list at run time; typeshed says Sequence
            mutated = getattr(warnings, "_filters_mutated", None)
            if callable(mutated):
                mutated()  # drop the per-module caches of decisions made under the filter

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._unquiet()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._unquiet()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._unquiet()

    # -- DDP: synchronise what was unfrozen -----------------------------------------------------
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        wrapped = getattr(trainer.strategy, "model", None)
        if _is_ddp(wrapped) and _ddp_misses_trainable(wrapped):
            trainer.strategy.model = rewrap_ddp(wrapped)


def _holds_any(optimizer: Any, model: Any) -> bool:
    """Whether ``optimizer`` holds a parameter of ``model``."""
    ids = {id(p) for p in model.parameters()}
    return any(id(p) in ids for g in optimizer.param_groups for p in g["params"])
