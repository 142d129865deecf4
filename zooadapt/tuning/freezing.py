"""Freezing that really freezes: ``requires_grad=False`` *and* fixed BatchNorm statistics.

``requires_grad=False`` alone leaves BatchNorm running statistics updating in ``train()``
mode, so a "frozen" stage silently drifts. Frozen BatchNorm modules here get a subclass
whose ``train()`` keeps them in eval mode, so the policy survives ``model.train()``. The
class swap keeps the module's state-dict keys, so a saved model still loads into a plain
torchvision/timm model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, SupportsIndex, TypeGuard

from ..contract.errors import FreezeSpecError, InvalidArgumentError
from ..contract.stages import StageMap
from .attached import loaded_info, remember, remembered, unknown_stages_error
from .wrappers import unwrap, wrapper_chain

if TYPE_CHECKING:
    import torch.nn as nn
    from torch.nn import Module as _MixinBase  # the mixin is only ever mixed into a module
    from torch.nn.parallel import DistributedDataParallel
    from typing_extensions import Self
else:
    _MixinBase = object

__all__ = ["freeze", "unfreeze", "frozen_stages", "bn_frozen_stages", "check_batchnorm_policy", "BNPolicy",
           "BatchNormPolicyWarning", "UnsyncedGradientsWarning"]

BNPolicy = Literal["frozen", "train"]


class _FrozenBatchNormMixin(_MixinBase):
    """Mixed into a BatchNorm class: the module stays in eval mode whatever ``train()`` says.

    The frozen class is generated per BatchNorm class (torch's, timm's ``BatchNormAct2d``, a
    user's subclass), so it cannot be found by name in another process. Pickling therefore
    records the *base* class (importable wherever the model's code is) and rebuilds the frozen
    class on load: ``deepcopy``, ``torch.save(model)`` and multiprocessing all keep the policy.
    """

    _zooadapt_base: type[nn.Module]

    def train(self, mode: bool = True) -> Self:
        return super().train(False)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        reduced = super().__reduce_ex__(protocol)
        return (_new_frozen, (self._zooadapt_base,), *reduced[2:])


def _new_frozen(base: type[nn.Module]) -> object:
    """Unpickling entry point: an empty instance of the frozen variant of ``base``."""
    cls = _frozen_class(base)
    return cls.__new__(cls)


_frozen_classes: dict[type, type[_FrozenBatchNormMixin]] = {}
_PREDEFINED = {"FrozenBatchNorm1d": "BatchNorm1d", "FrozenBatchNorm2d": "BatchNorm2d",
               "FrozenBatchNorm3d": "BatchNorm3d", "FrozenSyncBatchNorm": "SyncBatchNorm"}


def _frozen_class(cls: type[nn.Module]) -> type[_FrozenBatchNormMixin]:
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


_unfrozen_classes: dict[type, type] = {}


def _unfrozen_class(cls: type) -> type:
    """The class a frozen BatchNorm goes back to when its stage is unfrozen.

    Usually the base class. A class derived from a frozen one after freezing (FSDP2's
    ``fully_shard`` makes ``FSDPFrozenBatchNorm2d(FSDPModule, FrozenBatchNorm2d)``) keeps its
    other bases: the same class with the frozen base replaced (``FSDPBatchNorm2d``), so the
    module stays an ``FSDPModule``.
    """
    if not issubclass(cls, _FrozenBatchNormMixin):
        return cls
    if "_zooadapt_base" in vars(cls):
        return cls._zooadapt_base
    plain = _unfrozen_classes.get(cls)
    if plain is None:
        namespace = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
        plain = type(cls.__name__.replace("Frozen", "", 1), tuple(_unfrozen_class(b) for b in cls.__bases__),
                     namespace)
        _unfrozen_classes[cls] = plain
    return plain


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
    """The map a call works with: ``stages`` if given (remembered on a user's model that it fits,
    see ``attached``), else the loaded model's, else the one remembered; raises if none is known."""
    if stages is not None:
        if not isinstance(stages, StageMap):
            raise InvalidArgumentError(
                f"stages={stages!r}: pass a zooadapt.plugin_api.StageMap (e.g. the family's: "
                "zooadapt.plugin_api.get_registry().family('resnet').stage_map(model))")
        remember(model, stages)
        return stages
    inner = _unwrap(model)
    info = loaded_info(inner)
    if info is not None:
        return info.stages
    known = remembered(inner)
    if known is None:
        raise unknown_stages_error(inner)
    return known


def _knows_stages(model: nn.Module) -> bool:
    """Whether a stage map is known for ``model`` (already unwrapped) without one being passed."""
    return getattr(model, "zooadapt", None) is not None or remembered(model) is not None


def _unwrap(model: nn.Module, stages: StageMap | None = None) -> nn.Module:
    """The zooadapt model inside compile/DataParallel/DDP/Fabric wrappers or a LightningModule.

    With ``stages`` given the caller's map names this module's parameters, so a zooadapt model
    held inside it is not searched for (the wrappers are still peeled)."""
    return unwrap(model, search=stages is None)


def _target(model: nn.Module, stages: StageMap | None) -> nn.Module:
    """``_unwrap`` for the public functions here, which need a module to work on."""
    import torch.nn as nn

    inner = _unwrap(model, stages)
    if not isinstance(inner, nn.Module):
        raise InvalidArgumentError(
            f"expected a torch.nn.Module (a model from zooadapt.load, or one in torch.compile, DDP, FSDP2 or a "
            f"Lightning module), got {type(model).__name__}")
    return inner


def _record(model: nn.Module, smap: StageMap, bn: str | None = None,
            named: list[tuple[str, nn.Parameter]] | None = None) -> tuple[str, ...]:
    """Read the frozen stages back from the parameters, note them on ``model.zooadapt``, return them."""
    frozen = _frozen_from_grads(model, smap, named)
    info = loaded_info(model)
    if info is not None:
        info.frozen = frozen
        if bn is not None:
            info.bn = bn
    return frozen


def _frozen_from_grads(model: nn.Module, smap: StageMap,
                       named: list[tuple[str, nn.Parameter]] | None = None) -> tuple[str, ...]:
    """Stages whose parameters all have ``requires_grad=False`` (the truth, however it was set);
    ``named`` is ``model.named_parameters()`` when the caller has just listed them."""
    seen: dict[str, bool] = {}
    stage_of = smap.stage_of
    for pname, param in model.named_parameters() if named is None else named:
        stage = stage_of(pname)
        if stage is not None:
            seen[stage] = seen.get(stage, True) and not param.requires_grad
    return tuple(n for n in smap.names if seen.get(n))


# -- the BatchNorm policy, and noticing when something replaced it ---------------------------

_BN_RECORD = "_zooadapt_frozen_bn"
"""Attribute on the model: names of the BatchNorm modules zooadapt froze (a frozenset of str).

A conversion that rebuilds BatchNorm modules (``SyncBatchNorm.convert_sync_batchnorm``) makes
plain ones that ``train()`` switches back to updating statistics; comparing what is there with
this record is how :func:`check_batchnorm_policy` notices."""


class BatchNormPolicyWarning(UserWarning):
    """BatchNorm layers zooadapt froze were replaced by ones that will update their statistics."""


def _lost_frozen_bn(model: nn.Module, smap: StageMap) -> dict[str, list[str]]:
    """Stage -> names of BatchNorm modules zooadapt froze that are now plain BatchNorm again."""
    lost: dict[str, list[str]] = {}
    for name in sorted(getattr(model, _BN_RECORD, ())):
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue  # the model was cut or rebuilt; nothing to compare
        if _is_batchnorm(module) and not isinstance(module, _FrozenBatchNormMixin):
            lost.setdefault(smap.stage_of(name) or name, []).append(name)
    return lost


def check_batchnorm_policy(model: nn.Module, stages: StageMap | None = None) -> tuple[str, ...]:
    """Warn (``BatchNormPolicyWarning``) if frozen BatchNorm layers were swapped for training ones.

    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (and any conversion that rebuilds
    BatchNorm modules) replaces zooadapt's frozen BatchNorm with a plain one, which the next
    ``model.train()`` sets updating statistics again in a frozen stage. ``frozen_stages``,
    ``param_groups`` and ``unfreeze`` call this (``freeze`` does not: ``load`` calls it on every
    load, and re-freezing a stage restores its layers anyway); it returns the affected stages.
    Use ``zooadapt.distributed.convert_sync_batchnorm(model)`` to convert without losing the policy.
    """
    import warnings

    model = _target(model, stages)
    if not getattr(model, _BN_RECORD, None):
        return ()
    smap = _stage_map(model, stages)
    lost = _lost_frozen_bn(model, smap)
    if lost:
        stages_lost = tuple(lost)
        kinds = sorted({type(model.get_submodule(n[0])).__name__ for n in lost.values()})
        warnings.warn(
            f"the BatchNorm layers of frozen stage(s) {', '.join(stages_lost)} are plain {'/'.join(kinds)} again "
            "(torch.nn.SyncBatchNorm.convert_sync_batchnorm or another conversion rebuilt them), so model.train() "
            "will update their running statistics. Convert with zooadapt.distributed.convert_sync_batchnorm(model) "
            "instead, or "
            f"restore the policy: zooadapt.freeze(model, {list(stages_lost)!r})",
            BatchNormPolicyWarning, stacklevel=3)
    return tuple(lost)


def _set_bn(model: nn.Module, smap: StageMap, names: set[str], frozen: bool,
            modules: Iterable[tuple[str, nn.Module]] | None = None) -> None:
    import torch.nn as nn
    from torch.nn.modules.batchnorm import _BatchNorm

    nn_module_train = nn.Module.train
    record = set(getattr(model, _BN_RECORD, ()))
    for mname, module in model.named_modules() if modules is None else modules:
        if not mname or not isinstance(module, _BatchNorm) or smap.stage_of(mname) not in names:
            continue
        if frozen:
            # nn.Module.__setattr__ only passes "__class__" on after its own checks; a BatchNorm
            # without children (torch's) is put in eval mode as train(False) would, without its walk
            frozen_class = _frozen_class(type(module))
            object.__setattr__(module, "__class__", frozen_class)
            if module._modules or frozen_class._zooadapt_base.train is not nn_module_train:
                module.train(False)
            else:
                module.__dict__["training"] = False
            record.add(mname)
        else:
            if isinstance(module, _FrozenBatchNormMixin):
                module.__class__ = _unfrozen_class(type(module))
                module.train(model.training)
            record.discard(mname)
    # a plain attribute (not a buffer): travels with deepcopy and pickle, stays out of the state dict
    model.__dict__[_BN_RECORD] = frozenset(record)


def _refreeze_bn(model: nn.Module) -> list[str]:
    """Put the frozen class back on recorded BatchNorm modules a conversion replaced; their names."""
    fixed = []
    for name in sorted(getattr(model, _BN_RECORD, ())):
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if _is_batchnorm(module) and not isinstance(module, _FrozenBatchNormMixin):
            module.__class__ = _frozen_class(type(module))
            module.train(False)
            fixed.append(name)
    return fixed


def bn_frozen_stages(model: nn.Module, smap: StageMap | None = None) -> tuple[str, ...]:
    """Stages holding BatchNorm layers whose statistics are frozen (``bn="frozen"``)."""
    model = _target(model, smap)
    smap = _stage_map(model, smap)
    check_batchnorm_policy(model, smap)
    found = {smap.stage_of(m) for m, module in model.named_modules() if isinstance(module, _FrozenBatchNormMixin)}
    return tuple(n for n in smap.names if n in found)


def frozen_stages(model: nn.Module, stages: StageMap | None = None) -> tuple[str, ...]:
    """The stages whose parameters are all frozen, input to output.

    Read from the parameters themselves, so it stays true after a manual ``requires_grad_``.
    Works through ``torch.compile``, DataParallel/DDP, FSDP2 and Lightning/Fabric wrappers.
    """
    model = _target(model, stages)
    if stages is None and not _knows_stages(model):
        return ()
    smap = _stage_map(model, stages)
    check_batchnorm_policy(model, smap)
    return _frozen_from_grads(model, smap)


def _check_bn(bn: object) -> None:
    if not isinstance(bn, str) or bn not in ("frozen", "train"):
        raise InvalidArgumentError(f"bn={bn!r}: use 'frozen' (statistics fixed) or 'train' (statistics update)")


def _stage_params(model: nn.Module, smap: StageMap, names: tuple[str, ...], spec: object,
                  call: str, named: list[tuple[str, nn.Parameter]] | None = None) -> list[nn.Parameter]:
    """The parameters of the named stages; raises if the stages named hold none of the model's parameters.

    Then the names do not line up (a wrapper zooadapt does not know, a stage map for another
    model), and doing nothing would look like success. A family whose map has one empty stage
    among others is the plugin's bug, which ``zooadapt.testing.check_family`` reports.
    """
    params, count = [], dict.fromkeys(names, 0)
    stage_of = smap.stage_of
    for pname, param in model.named_parameters() if named is None else named:
        stage = stage_of(pname)
        if stage in count:
            count[stage] += 1
            params.append(param)
    empty = [n for n, c in count.items() if c == 0]
    if names and not params:
        example = next((n for n, _ in model.named_parameters()), None)
        prefixes = sorted({p for n in empty for p in smap.stage(n).prefixes})
        raise FreezeSpecError(
            f"{call}({spec!r}): stage(s) {', '.join(empty)} hold no parameter of this {type(model).__name__} "
            f"(stage prefixes {prefixes}; its parameters are named like {example!r}). Pass the model zooadapt "
            "built (zooadapt unwraps torch.compile, DataParallel, DDP, FSDP2, Fabric and a LightningModule "
            "holding one), or stages= written for this module's parameter names.")
    return params


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
    Returns every stage frozen after the call (earlier freezes accumulate). ``model`` may be
    wrapped (``torch.compile``, DataParallel/DDP, FSDP2, Fabric, a LightningModule holding it).
    A spec naming a stage that holds none of the model's parameters raises ``FreezeSpecError``.
    ``stages`` describes a model zooadapt did not load; it is remembered on the model, so later
    calls (``param_groups``, ``unfreeze``…) need it no more (see ``zooadapt.attach``).
    """
    _check_bn(bn)
    model = _target(model, stages)
    smap = _stage_map(model, stages)
    return freeze_listed(model, smap, spec, bn=bn, parameters=list(model.named_parameters()), modules=None)


def freeze_listed(model: nn.Module, smap: StageMap, spec: str | int | Sequence[str] | None, *, bn: BNPolicy,
                  parameters: list[tuple[str, nn.Parameter]],
                  modules: Iterable[tuple[str, nn.Module]] | None) -> tuple[str, ...]:
    """``freeze`` of an unwrapped model whose parameters the caller has listed by name, as
    ``named_parameters()`` would, and ``modules`` (at least its BatchNorm modules, by name; None
    walks the model): a fresh load knows both from the model's skeleton, and does not walk the
    model again."""
    names = smap.resolve(spec)
    for param in _stage_params(model, smap, names, spec, "freeze", parameters):
        param.requires_grad_(False)
    _set_bn(model, smap, set(names), frozen=bn == "frozen", modules=modules)
    return _record(model, smap, bn if names else None, parameters)


class UnsyncedGradientsWarning(UserWarning):
    """Parameters made trainable after DistributedDataParallel was built will not be synchronised."""


def _is_ddp(module: object) -> TypeGuard[DistributedDataParallel]:
    """Whether ``module`` is a DistributedDataParallel, asked by class name so that torch.distributed is
    not imported to answer."""
    return type(module).__name__ == "DistributedDataParallel"


def _ddp_hooked_count(ddp: DistributedDataParallel) -> int | None:
    """How many parameters DDP's reducer hooked when it was built (None if torch does not say).

    DDP keeps no public list; its logging data counts the tensors it registered."""
    try:
        return int(ddp._get_ddp_logging_data()["num_parameter_tensors"])  # type: ignore[no-untyped-call]  # torch: unannotated
    except Exception:  # an older or newer torch without this private record
        return None


def _ddp_misses_trainable(ddp: DistributedDataParallel) -> bool:
    """Whether ``ddp`` has trainable parameters its reducer never hooked."""
    hooked = _ddp_hooked_count(ddp)
    ignored: set[str] = getattr(ddp, "parameters_to_ignore", set())
    trainable = sum(1 for n, p in ddp.module.named_parameters() if p.requires_grad and n not in ignored)
    return hooked is None or trainable > hooked


def _warn_if_ddp_misses(wrapped: nn.Module, woken: list[nn.Parameter]) -> None:
    """DDP hooks only the parameters that required grad when it was built; say so if new ones appear."""
    import warnings

    if not woken:
        return
    for layer in wrapper_chain(wrapped):
        if _is_ddp(layer):
            if _ddp_misses_trainable(layer):
                warnings.warn(
                    "DistributedDataParallel hooked only the parameters that were trainable when it was built; "
                    "the stages unfrozen now would train on each rank's own gradients and drift apart. Rebuild the "
                    "wrapper: ddp = zooadapt.distributed.rewrap_ddp(ddp) (same settings, new hooks; the optimizer is "
                    "unchanged)",
                    UnsyncedGradientsWarning, stacklevel=3)
            return


def unfreeze(
    model: nn.Module,
    spec: str | int | Sequence[str] | None = "all",
    *,
    stages: StageMap | None = None,
) -> tuple[str, ...]:
    """Make the stages named by ``spec`` trainable again (gradual unfreezing); returns those it unfroze.

    Their parameters get ``requires_grad=True`` and their BatchNorm layers follow
    ``model.train()``/``eval()`` again (they are put in the model's current mode).
    Returns the stages named by ``spec`` that were frozen (a parameter without gradient or
    a frozen BatchNorm) before the call, input to output: ``()`` when they were all trainable
    already. ``zooadapt.frozen_stages(model)`` gives the stages still frozen. With an optimizer
    built from ``param_groups(..., include_frozen=True)`` nothing else is needed; otherwise add
    the newly trainable parameters with ``zooadapt.add_param_group(optimizer, model, lr=...)``.
    Given a DistributedDataParallel wrapper whose hooks miss the unfrozen parameters, it warns
    (``UnsyncedGradientsWarning``): rebuild the wrapper with ``zooadapt.distributed.rewrap_ddp``.
    """
    wrapped = model
    model = _target(model, stages)
    smap = _stage_map(model, stages)
    names = smap.resolve(spec)
    named = list(model.named_parameters())
    params = _stage_params(model, smap, names, spec, "unfreeze", named)
    stage_of = smap.stage_of
    was_frozen = {stage_of(n) for n, p in named if not p.requires_grad}
    was_frozen |= {stage_of(n) for n, m in model.named_modules() if isinstance(m, _FrozenBatchNormMixin)}
    woken = [p for p in params if not p.requires_grad]
    for param in params:
        param.requires_grad_(True)
    _set_bn(model, smap, set(names), frozen=False)
    check_batchnorm_policy(model, smap)
    _warn_if_ddp_misses(wrapped, woken)
    _record(model, smap, named=named)
    return tuple(n for n in names if n in was_frozen)
