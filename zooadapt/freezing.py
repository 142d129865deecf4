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

__all__ = ["freeze", "unfreeze", "frozen_stages", "bn_frozen_stages", "BNPolicy"]

BNPolicy = Literal["frozen", "train"]


class _FrozenBatchNormMixin:
    """Mixed into a BatchNorm class: the module stays in eval mode whatever ``train()`` says.

    The frozen class is generated per BatchNorm class (torch's, timm's ``BatchNormAct2d``, a
    user's subclass), so it cannot be found by name in another process. Pickling therefore
    records the *base* class (importable wherever the model's code is) and rebuilds the frozen
    class on load: ``deepcopy``, ``torch.save(model)`` and multiprocessing all keep the policy.
    """

    _zooadapt_base: type

    def train(self, mode: bool = True):  # type: ignore[override]
        return super().train(False)  # type: ignore[misc]

    def __reduce_ex__(self, protocol):  # type: ignore[no-untyped-def]
        reduced = super().__reduce_ex__(protocol)  # type: ignore[misc]
        return (_new_frozen, (self._zooadapt_base,), *reduced[2:])


def _new_frozen(base: type) -> object:
    """Unpickling entry point: an empty instance of the frozen variant of ``base``."""
    cls = _frozen_class(base)
    return cls.__new__(cls)


_frozen_classes: dict[type, type] = {}
_PREDEFINED = {"FrozenBatchNorm1d": "BatchNorm1d", "FrozenBatchNorm2d": "BatchNorm2d",
               "FrozenBatchNorm3d": "BatchNorm3d", "FrozenSyncBatchNorm": "SyncBatchNorm"}


def _frozen_class(cls: type) -> type:
    """The frozen variant of a BatchNorm class (created once per class, then cached)."""
    if issubclass(cls, _FrozenBatchNormMixin):
        return cls
    frozen = _frozen_classes.get(cls)
    if frozen is None:
        name = f"Frozen{cls.__name__}"
        frozen = type(name, (_FrozenBatchNormMixin, cls), {"_zooadapt_base": cls, "__module__": __name__,
                                                          "__qualname__": name})
        _frozen_classes[cls] = frozen
    return frozen


def __getattr__(name: str) -> type:
    """``FrozenBatchNorm1d/2d/3d`` and ``FrozenSyncBatchNorm``, made on first use (torch loads lazily)."""
    base = _PREDEFINED.get(name)
    if base is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import torch.nn as nn

    frozen = _frozen_class(getattr(nn, base))
    globals()[name] = frozen
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
            "this model was not loaded by zooadapt, so its stages are unknown; pass stages=StageMap(...), e.g. "
            "the family's map: stages=zooadapt.get_registry().family('resnet').stage_map(model)"
        )
    return info.stages


def _unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside DataParallel/DistributedDataParallel wrappers."""
    inner = getattr(model, "module", None)
    return inner if inner is not None and type(model).__name__ in ("DataParallel", "DistributedDataParallel") \
        else model


def _record(model: nn.Module, smap: StageMap, bn: str | None = None) -> tuple[str, ...]:
    """Read the frozen stages back from the parameters, note them on ``model.zooadapt``, return them."""
    frozen = _frozen_from_grads(model, smap)
    info = getattr(model, "zooadapt", None)
    if info is not None:
        info.frozen = frozen
        if bn is not None:
            info.bn = bn
    return frozen


def _frozen_from_grads(model: nn.Module, smap: StageMap) -> tuple[str, ...]:
    """Stages whose parameters all have ``requires_grad=False`` (the truth, however it was set)."""
    seen: dict[str, bool] = {}
    for pname, param in model.named_parameters():
        stage = smap.stage_of(pname)
        if stage is not None:
            seen[stage] = seen.get(stage, True) and not param.requires_grad
    return tuple(n for n in smap.names if seen.get(n))


def bn_frozen_stages(model: nn.Module, smap: StageMap | None = None) -> tuple[str, ...]:
    """Stages holding BatchNorm layers whose statistics are frozen (``bn="frozen"``)."""
    model = _unwrap(model)
    smap = _stage_map(model, smap)
    found = {smap.stage_of(m) for m, module in model.named_modules() if isinstance(module, _FrozenBatchNormMixin)}
    return tuple(n for n in smap.names if n in found)


def frozen_stages(model: nn.Module, stages: StageMap | None = None) -> tuple[str, ...]:
    """The stages whose parameters are all frozen, input to output.

    Read from the parameters themselves, so it stays true after a manual ``requires_grad_``.
    """
    model = _unwrap(model)
    if stages is None and getattr(model, "zooadapt", None) is None:
        return ()
    return _frozen_from_grads(model, _stage_map(model, stages))


def _check_bn(bn: object) -> None:
    if bn not in ("frozen", "train"):
        raise InvalidArgumentError(f"bn={bn!r}: use 'frozen' (statistics fixed) or 'train' (statistics update)")


def _set_bn(model: nn.Module, smap: StageMap, names: set[str], frozen: bool) -> None:
    for mname, module in model.named_modules():
        if not mname or not _is_batchnorm(module) or smap.stage_of(mname) not in names:
            continue
        if frozen:
            module.__class__ = _frozen_class(type(module))
            module.train(False)
        elif isinstance(module, _FrozenBatchNormMixin):
            module.__class__ = module._zooadapt_base
            module.train(model.training)


def freeze(
    model: nn.Module,
    spec: str | int | Sequence[str] | None,
    *,
    bn: BNPolicy = "frozen",
    stages: StageMap | None = None,
) -> tuple[str, ...]:
    """Freeze the stages named by ``spec`` (see ``StageMap.resolve`` for the grammar).

    Parameters of those stages get ``requires_grad=False``. ``bn`` is explicit: with
    ``"frozen"`` (default) their BatchNorm layers also stop updating running statistics and
    stay in eval mode even after ``model.train()``; with ``"train"`` their statistics keep
    following the batches (and a stage frozen earlier with ``"frozen"`` gets its BatchNorm back).
    Returns every stage frozen after the call (earlier freezes accumulate).
    """
    _check_bn(bn)
    model = _unwrap(model)
    smap = _stage_map(model, stages)
    names = set(smap.resolve(spec))
    for pname, param in model.named_parameters():
        if smap.stage_of(pname) in names:
            param.requires_grad_(False)
    _set_bn(model, smap, names, frozen=bn == "frozen")
    return _record(model, smap, bn if names else None)


def unfreeze(
    model: nn.Module,
    spec: str | int | Sequence[str] | None = "all",
    *,
    stages: StageMap | None = None,
) -> tuple[str, ...]:
    """Make the stages named by ``spec`` trainable again (gradual unfreezing).

    Their parameters get ``requires_grad=True`` and their BatchNorm layers follow
    ``model.train()``/``eval()`` again (they are put in the model's current mode).
    Returns the stages still frozen. Add the newly trainable parameters to your optimizer
    with ``zooadapt.add_param_group(optimizer, model, lr=...)``.
    """
    model = _unwrap(model)
    smap = _stage_map(model, stages)
    names = set(smap.resolve(spec))
    for pname, param in model.named_parameters():
        if smap.stage_of(pname) in names:
            param.requires_grad_(True)
    _set_bn(model, smap, names, frozen=False)
    return _record(model, smap)
