"""``load()``: name -> registry entry -> family -> weights -> plan -> model -> head -> freeze -> report.

Each step is a small function whose output is a plain value; nothing downstream re-derives
what an earlier step decided. The architecture is built with its parameters on the
``meta`` device, so no time goes into initialising weights that are about to be replaced;
checkpoint tensors are then assigned (not copied) into the model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import read_checkpoint
from .errors import InvalidArgumentError, ZooadaptError
from .family import Family, ModelEntry, WeightSource
from .freezing import BNPolicy
from .plan import LoadPlan, make_plan
from .registry import get_registry
from .report import LoadReport, ModelInfo
from .sources import FetchedWeights, fetch, parse_source
from .stages import StageMap

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

__all__ = ["load", "load_weights", "build_on_meta", "resolve"]

log = logging.getLogger("zooadapt")


def _check_num_classes(num_classes: int | None) -> None:
    if num_classes is None:
        return
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InvalidArgumentError(
            f"num_classes={num_classes!r}: give the number of classes in your dataset as an integer >= 1, "
            "or None to keep the checkpoint's head"
        )


_meta_state = threading.local()
_patch_lock = threading.Lock()
_patch_users = 0


def _register_parameter_maybe_on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
    import torch.nn as nn

    _original_register_parameter(self, name, param)
    if param is not None and getattr(_meta_state, "active", False) and param.device.type != "meta":
        p = self._parameters[name]
        self._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)


_original_register_parameter: Any = None


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Create parameters on ``meta`` while buffers stay real.

    Buffers are cheap and some are computed in ``__init__`` without being saved
    (non-persistent); parameters are the bulk and all come from the checkpoint (or the new
    head, initialised afterwards). Initialisers run on meta tensors and cost nothing. The
    patch of ``register_parameter`` only acts in the calling thread.
    """
    import torch.nn as nn

    global _original_register_parameter, _patch_users
    with _patch_lock:
        if _patch_users == 0:
            _original_register_parameter = nn.Module.register_parameter
            nn.Module.register_parameter = _register_parameter_maybe_on_meta  # type: ignore[method-assign]
        _patch_users += 1
    previous = getattr(_meta_state, "active", False)
    _meta_state.active = True
    try:
        yield
    finally:
        _meta_state.active = previous
        with _patch_lock:
            _patch_users -= 1
            if _patch_users == 0:
                nn.Module.register_parameter = _original_register_parameter  # type: ignore[method-assign]


def build_on_meta(family: Family, arch: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """The architecture with parameters on ``meta`` (no allocation, no initialisation)."""
    with _parameters_on_meta():
        return family.build(arch, num_classes=num_classes, **kwargs)


def _materialise(model: nn.Module) -> list[str]:
    """Give every parameter still on ``meta`` real storage and a fresh initialisation.

    Modules whose parameters are all missing (the new head) are reset with their own
    ``reset_parameters``; a stray missing tensor in a partly loaded module (only under
    ``partial=True``) gets zeros for vectors and Kaiming-uniform for matrices.
    """
    import torch
    import torch.nn as nn

    fresh: list[str] = []
    for mname, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        meta = [n for n, p in own if p.is_meta]
        if not meta:
            continue
        if len(meta) == len(own) and hasattr(module, "reset_parameters"):
            module.to_empty(device="cpu", recurse=False)
            module.reset_parameters()
        else:
            for n in meta:
                old = module._parameters[n]
                assert old is not None
                data = torch.empty(old.shape, dtype=old.dtype)
                if data.ndim >= 2:
                    nn.init.kaiming_uniform_(data, a=5**0.5)
                else:
                    nn.init.zeros_(data)
                module._parameters[n] = nn.Parameter(data, requires_grad=old.requires_grad)
        fresh += [f"{mname}.{n}" if mname else n for n in meta]
    return fresh


def _model_shapes(model: nn.Module) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    state = model.state_dict(keep_vars=True)
    return {k: tuple(v.shape) for k, v in state.items()}, [n for n, _ in model.named_parameters()]


def _execute(model: nn.Module, plan: LoadPlan, tensors: Mapping[str, torch.Tensor]) -> None:
    """Assign the planned tensors into the model (no copy unless a dtype or layout changes)."""
    target = model.state_dict(keep_vars=True)
    assigned: dict[str, torch.Tensor] = {}
    for mapping in plan.loaded:
        assert mapping.model_key is not None
        tensor = tensors[mapping.checkpoint_key]
        rule = plan.converters.get(mapping.checkpoint_key)
        if rule is not None:
            tensor = rule.convert(tensor, mapping.model_shape)
        want = target[mapping.model_key]
        if tensor.dtype != want.dtype and want.dtype.is_floating_point:
            tensor = tensor.to(want.dtype)
        assigned[mapping.model_key] = tensor
    for key in plan.defaulted:
        assigned[key] = target[key].new_zeros(()) if not target[key].is_meta else _zeros_like_meta(target[key])
    model.load_state_dict(assigned, strict=False, assign=True)


def _zeros_like_meta(t: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.zeros(t.shape, dtype=t.dtype)


def resolve(name: str) -> tuple[ModelEntry, Family]:
    """The registry entry and family for a model name (raises with suggestions when unknown)."""
    registry = get_registry()
    entry = registry.entry(name)
    return entry, registry.family(entry.family)


def _fetch_weights(
    entry: ModelEntry,
    weights: str | os.PathLike[str] | WeightSource | None,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
) -> FetchedWeights:
    if weights is not None:
        return fetch(parse_source(weights), revision=revision, cache_dir=cache_dir)
    if entry.source is None:
        raise ZooadaptError(
            f"model {entry.name!r} has no published weights in the registry; pass weights=PATH "
            "(a local checkpoint) or pretrained=False for random initialisation"
        )
    return fetch(entry.source, revision=revision, cache_dir=cache_dir)


def _count(model: nn.Module) -> tuple[int, int]:
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def load(
    name: str,
    *,
    num_classes: int | None = None,
    freeze: str | int | Sequence[str] | None = None,
    weights: str | os.PathLike[str] | WeightSource | None = None,
    revision: str | None = None,
    pretrained: bool = True,
    bn: BNPolicy = "frozen",
    partial: bool = False,
    skip: Sequence[str] = (),
    trusted: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Build a pretrained backbone ready to fine-tune, in one call.

    Args:
        name: a registry name (``zooadapt list``) or a name a plugin resolves.
        num_classes: classes of your task; the old head is replaced by a fresh one when it
            differs. None keeps the checkpoint's head.
        freeze: stages to freeze, e.g. ``"layer1-3"``, ``"stem,layer1"``, ``":layer3"``, ``"all"``, 2.
        weights: a local checkpoint file or directory, a URL, or ``hf://org/repo/file@rev``,
            instead of the registry's source.
        revision: Hub branch, tag or commit, overriding the registry's.
        pretrained: False builds with random initialisation and downloads nothing.
        bn: ``"frozen"`` keeps BatchNorm statistics fixed in frozen stages; ``"train"`` lets them update.
        partial: load what fits when backbone tensors are missing or mismatched, instead of raising.
        skip: stage names or module prefixes to leave at their initialisation.
        trusted: allow a pickle checkpoint that needs code execution (only for files you trust).
        cache_dir: Hub cache directory (default: huggingface_hub's, from ``HF_HOME``/``HF_HUB_CACHE``).

    The returned model carries ``model.zooadapt`` (stages, frozen stages, load report).
    """
    started = time.perf_counter()
    _check_num_classes(num_classes)
    if bn not in ("frozen", "train"):
        raise InvalidArgumentError(f"bn={bn!r}: use 'frozen' (statistics fixed) or 'train' (statistics update)")
    entry, family = resolve(name)
    classes = num_classes if num_classes is not None else entry.num_classes
    build_kwargs = dict(entry.build_kwargs)

    if not pretrained and weights is None:
        model = family.build(entry.arch, num_classes=classes, **build_kwargs)
        plan, fetched = None, None
        smap = family.stage_map(model)
    else:
        fetched = _fetch_weights(entry, weights, revision, cache_dir)
        tensors = read_checkpoint(fetched.path, trusted=trusted)
        model = build_on_meta(family, entry.arch, classes, **build_kwargs)
        smap = family.stage_map(model)
        plan = _plan_for(model, tensors, family.key_rules, smap, skip)
        plan.check(partial=partial, what=f"{entry.name} ({family.name}/{entry.arch})")
        _execute(model, plan, tensors)
        _materialise(model)

    model.zooadapt = ModelInfo(  # type: ignore[assignment]
        name=entry.name, family=family.name, arch=entry.arch, stages=smap, num_classes=classes,
        source=fetched.origin if fetched else None, revision=fetched.commit if fetched else None,
    )
    from .freezing import freeze as _freeze

    frozen = _freeze(model, freeze, bn=bn) if freeze is not None else ()
    trainable, total = _count(model)
    report = LoadReport(
        model=entry.name, family=family.name, arch=entry.arch,
        source=fetched.origin if fetched else None, path=str(fetched.path) if fetched else None,
        commit=fetched.commit if fetched else None, plan=plan, num_classes=classes, frozen=frozen,
        trainable_params=trainable, total_params=total, seconds=time.perf_counter() - started,
    )
    model.zooadapt.report = report
    model.zooadapt.extra["freeze_spec"] = freeze
    log.info("%s", report)
    return model


def _skip_prefixes(skip: Sequence[str], smap: StageMap) -> list[str]:
    """Stage names in ``skip`` become their module prefixes; other entries are prefixes already."""
    out: list[str] = []
    for item in skip:
        if item in smap.names or item in smap.groups:
            for stage in smap.resolve(item):
                out.extend(smap.stage(stage).prefixes)
        else:
            out.append(item)
    return out


def _plan_for(model: nn.Module, tensors: Mapping[str, torch.Tensor], rules: Sequence[Any], smap: StageMap,
              skip: Sequence[str]) -> LoadPlan:
    shapes, params = _model_shapes(model)
    return make_plan(
        {k: tuple(t.shape) for k, t in tensors.items()}, shapes, parameters=params,
        rules=rules, head=smap.head, skip=_skip_prefixes(skip, smap),
    )


def load_weights(
    model: nn.Module,
    source: str | os.PathLike[str] | WeightSource,
    *,
    family: str | None = None,
    rules: Sequence[Any] | None = None,
    skip: Sequence[str] = (),
    head: str | None = None,
    partial: bool = False,
    trusted: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LoadReport:
    """Load a checkpoint (a registry name, a file, a URL or ``hf://…``) into a model you built.

    ``family`` lends its key rules and stage names (so ``skip=("layer4",)`` works);
    ``rules`` adds or replaces key rules (e.g. ``[zooadapt.rules.Positional()]``). Keys of
    the checkpoint the model does not have are reported as unexpected, never an error; model
    tensors outside ``skip`` and ``head`` that stay unfilled raise unless ``partial=True``.
    """
    import torch

    started = time.perf_counter()
    registry = get_registry()
    fam = registry.family(family) if family else None
    entry: ModelEntry | None = None
    if isinstance(source, str) and not Path(source).exists() and "://" not in source:
        entry = registry.entry(source)
        fam = fam or registry.family(entry.family)
        fetched = _fetch_weights(entry, None, revision, cache_dir)
    else:
        fetched = fetch(parse_source(source), revision=revision, cache_dir=cache_dir)
    tensors = read_checkpoint(fetched.path, trusted=trusted)
    key_rules = list(rules) if rules is not None else list(fam.key_rules if fam else ())
    smap: StageMap | None = None
    if fam is not None:
        try:
            smap = fam.stage_map(model)
        except Exception:  # a user's variant may not follow the family's layout
            smap = None
    head_prefix = head if head is not None else (smap.head if smap else "")
    skip_prefixes = _skip_prefixes(skip, smap) if smap else list(skip)
    shapes, params = _model_shapes(model)
    plan = make_plan({k: tuple(t.shape) for k, t in tensors.items()}, shapes, parameters=params,
                     rules=key_rules, head=head_prefix, skip=skip_prefixes)
    plan.check(partial=partial, what=f"{type(model).__name__}")
    with torch.no_grad():
        _copy_into(model, plan, tensors)
    trainable, total = _count(model)
    return LoadReport(
        model=entry.name if entry else type(model).__name__, family=fam.name if fam else "-",
        arch=entry.arch if entry else type(model).__name__, source=fetched.origin, path=str(fetched.path),
        commit=fetched.commit, plan=plan, num_classes=-1, trainable_params=trainable, total_params=total,
        seconds=time.perf_counter() - started,
    )


def _copy_into(model: nn.Module, plan: LoadPlan, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy planned tensors into an existing model in place (it may already be on a device)."""
    target = model.state_dict(keep_vars=True)
    for mapping in plan.loaded:
        assert mapping.model_key is not None
        tensor = tensors[mapping.checkpoint_key]
        rule = plan.converters.get(mapping.checkpoint_key)
        if rule is not None:
            tensor = rule.convert(tensor, mapping.model_shape)
        target[mapping.model_key].copy_(tensor)
    for key in plan.defaulted:
        target[key].zero_()
