"""Gradual unfreezing by stage name in Lightning: ``StageFinetuning``, a ``BaseFinetuning`` callback.

Lightning's ``BaseFinetuning`` knows modules, not stages, and its ``freeze`` leaves BatchNorm
statistics updating. This callback speaks the family's stage names (the same grammar as
``zooadapt.freeze``), freezes with zooadapt's BatchNorm policy, and unfreezes through
``zooadapt.unfreeze`` and the parameter-group logic of ``zooadapt.param_groups``::

    model = MyLightningModule()        # holds self.model = zooadapt.load("resnet34", num_classes=5)
    trainer = lightning.Trainer(callbacks=[
        StageFinetuning(freeze="all", unfreeze={2: "layer4", 4: ("layer3", 1e-4)})])

Install with ``pip install zooadapt[lightning]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..contract.errors import FreezeSpecError, InvalidArgumentError, MissingDependencyError

try:
    from lightning.pytorch.callbacks import BaseFinetuning
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        from pytorch_lightning.callbacks import BaseFinetuning  # type: ignore[no-redef]
    except ImportError as exc:
        raise MissingDependencyError(
            "zooadapt.lightning needs Lightning: pip install 'zooadapt[lightning]' (or pip install lightning)"
        ) from exc

from ..tuning.freezing import _check_bn, _ddp_misses_trainable, _stage_map
from ..tuning.freezing import freeze as _freeze
from ..tuning.freezing import unfreeze as _unfreeze
from ..tuning.optim import _check_settings, add_param_group, param_groups
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
    rates from its base rates, as ``LambdaLR`` does, overrides that at its next step). With an optimizer that holds only
    trainable parameters, the unfrozen ones are added by ``zooadapt.add_param_group`` at ``lr``
    (required then), with this callback's ``decay``, ``weight_decay`` and
    ``no_decay_norm_bias`` (as ``param_groups`` reads them: the stage k below the head trains at
    ``lr * decay**k``). Resuming from a checkpoint re-applies every unfreeze up to the epoch.

    Lightning's "Found N module(s) in eval mode at the start of training" warning counts the
    frozen BatchNorm layers, which stay in eval mode on purpose (``bn="train"`` lets them train).

    Under a DDP strategy the wrapper is rebuilt after an unfreeze (``zooadapt.rewrap_ddp``),
    because DDP synchronises only the parameters trainable when it was built; communication
    hooks given to the strategy are not registered again.
    """

    def __init__(self, freeze: Spec = "all", unfreeze: Mapping[int, Any] | None = None, *, bn: str = "frozen",
                 decay: float | None = None, weight_decay: float | None = None,
                 no_decay_norm_bias: bool = True) -> None:
        super().__init__()
        _check_bn(bn)
        _check_settings(0.0, None, decay, weight_decay, no_decay_norm_bias)
        self.freeze_spec = freeze
        self.schedule = _schedule(unfreeze)
        self.bn = bn
        self.decay = decay
        self.weight_decay = weight_decay
        self.no_decay_norm_bias = no_decay_norm_bias

    # -- BaseFinetuning's two hooks -----------------------------------------------------------
    def freeze_before_training(self, pl_module: Any) -> None:
        model = unwrap(pl_module)
        smap = _stage_map(model, None)
        for epoch, spec, _ in self.schedule:  # a misspelt stage fails now, not epochs later
            try:
                smap.resolve(spec)
            except FreezeSpecError as exc:
                raise FreezeSpecError(f"unfreeze at epoch {epoch}: {exc}") from None
        _freeze(model, self.freeze_spec, bn=self.bn)  # type: ignore[arg-type]

    def finetune_function(self, pl_module: Any, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        model = unwrap(pl_module)
        smap = _stage_map(model, None)
        for at, spec, lr in self.schedule:
            if at > epoch:
                break
            names = set(smap.resolve(spec))
            _unfreeze(model, spec)
            params = {id(p) for n, p in model.named_parameters() if smap.stage_of(n) in names}
            held = {id(p) for g in optimizer.param_groups for p in g["params"]}
            if params - held:
                if lr is None:
                    raise InvalidArgumentError(
                        f"unfreezing {spec!r} at epoch {at}: the optimizer does not hold its parameters and no lr was "
                        f"given. Build the optimizer from zooadapt.param_groups(self, ..., include_frozen=True), or "
                        f"give a rate: unfreeze={{{at}: ({spec!r}, 1e-4)}}")
                add_param_group(optimizer, model, lr, decay=self.decay, weight_decay=self.weight_decay,
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

    # -- DDP: synchronise what was unfrozen -----------------------------------------------------
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        wrapped = getattr(trainer.strategy, "model", None)
        if type(wrapped).__name__ == "DistributedDataParallel" and _ddp_misses_trainable(wrapped):
            trainer.strategy.model = rewrap_ddp(wrapped)
