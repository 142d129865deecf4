"""Freezing that really freezes: ``requires_grad=False`` *and* fixed BatchNorm statistics.

``requires_grad=False`` alone leaves BatchNorm running statistics updating in ``train()``
mode, so a "frozen" stage silently drifts. Frozen BatchNorm modules here get a subclass
whose ``train()`` keeps them in eval mode, so the policy survives ``model.train()``. The
class swap keeps the module's state-dict keys, so a saved model still loads into a plain
torchvision/timm model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from .errors import InvalidArgumentError, ZooadaptError
from .stages import StageMap

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["freeze", "unfreeze", "frozen_stages", "BNPolicy"]

BNPolicy = Literal["frozen", "train"]


class _FrozenBatchNormMixin:
    """Mixed into a BatchNorm class: the module stays in eval mode whatever ``train()`` says."""

    _zooadapt_base: type

    def train(self, mode: bool = True):  # type: ignore[override]
        return super().train(False)  # type: ignore[misc]


_frozen_classes: dict[type, type] = {}


def _frozen_class(cls: type) -> type:
    if issubclass(cls, _FrozenBatchNormMixin):
        return cls
    frozen = _frozen_classes.get(cls)
    if frozen is None:
        frozen = type(f"Frozen{cls.__name__}", (_FrozenBatchNormMixin, cls), {"_zooadapt_base": cls,
                                                                            "__module__": __name__})
        _frozen_classes[cls] = frozen
        globals()[frozen.__name__] = frozen  # picklable by name within this process
    return frozen


def _is_batchnorm(module: nn.Module) -> bool:
    from torch.nn.modules.batchnorm import _BatchNorm

    return isinstance(module, _BatchNorm)


def _stage_map(model: nn.Module, stages: StageMap | None) -> StageMap:
    if stages is not None:
        return stages
    info = getattr(_unwrap(model), "zooadapt", None)
    if info is None:
        raise ZooadaptError(
            "this model was not loaded by zooadapt, so its stages are unknown; pass stages=StageMap(...) "
            "or family='resnet' (see `zooadapt info NAME`)"
        )
    return info.stages


def _unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside DataParallel/DistributedDataParallel wrappers."""
    inner = getattr(model, "module", None)
    return inner if inner is not None and type(model).__name__ in ("DataParallel", "DistributedDataParallel") \
        else model


def _record(model: nn.Module, names: set[str], bn: str | None) -> None:
    info = getattr(model, "zooadapt", None)
    if info is not None:
        info.frozen = tuple(n for n in info.stages.names if n in names)
        if bn is not None:
            info.bn = bn


def frozen_stages(model: nn.Module) -> tuple[str, ...]:
    """The stages currently frozen on a model loaded by zooadapt."""
    info = getattr(_unwrap(model), "zooadapt", None)
    return tuple(info.frozen) if info is not None else ()


def freeze(
    model: nn.Module,
    spec: str | int | Sequence[str] | None,
    *,
    bn: BNPolicy = "frozen",
    stages: StageMap | None = None,
) -> tuple[str, ...]:
    """Freeze the stages named by ``spec`` (see ``StageMap.resolve`` for the grammar).

    Parameters of those stages get ``requires_grad=False``; with ``bn="frozen"`` their
    BatchNorm layers also stop updating running statistics, even after ``model.train()``.
    Returns every stage frozen after the call (earlier freezes accumulate).
    """
    if bn not in ("frozen", "train"):
        raise InvalidArgumentError(f"bn={bn!r}: use 'frozen' (statistics fixed) or 'train' (statistics update)")
    model = _unwrap(model)
    smap = _stage_map(model, stages)
    names = set(smap.resolve(spec))
    if not names:
        return frozen_stages(model)
    for pname, param in model.named_parameters():
        if smap.stage_of(pname) in names:
            param.requires_grad_(False)
    if bn == "frozen":
        for mname, module in model.named_modules():
            if mname and _is_batchnorm(module) and smap.stage_of(mname) in names:
                module.__class__ = _frozen_class(type(module))
                module.train(False)
    _record(model, names | set(frozen_stages(model)), bn)
    return frozen_stages(model) if getattr(model, "zooadapt", None) is not None else tuple(
        n for n in smap.names if n in names)


def unfreeze(
    model: nn.Module,
    spec: str | int | Sequence[str] | None = "all",
    *,
    stages: StageMap | None = None,
) -> tuple[str, ...]:
    """Make the stages named by ``spec`` trainable again (gradual unfreezing).

    Their parameters get ``requires_grad=True`` and their BatchNorm layers follow
    ``model.train()``/``eval()`` again (they are put in the model's current mode).
    Returns the stages still frozen.
    """
    model = _unwrap(model)
    smap = _stage_map(model, stages)
    names = set(smap.resolve(spec))
    for pname, param in model.named_parameters():
        if smap.stage_of(pname) in names:
            param.requires_grad_(True)
    for mname, module in model.named_modules():
        if isinstance(module, _FrozenBatchNormMixin) and smap.stage_of(mname) in names:
            module.__class__ = module._zooadapt_base
            module.train(model.training)
    still = set(frozen_stages(model)) - names
    _record(model, still, None)
    return tuple(n for n in smap.names if n in still)

