"""``load()``: name -> registry entry -> family -> weights -> plan -> model -> head -> freeze -> report.

Each step is a small function whose output is a plain value; nothing downstream re-derives
what an earlier step decided. The architecture is built with its parameters on the
``meta`` device, so no time goes into initialising weights that are about to be replaced;
checkpoint tensors are then assigned (not copied) into the model.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import is_safetensors, read_checkpoint
from .errors import InvalidArgumentError, ZooadaptError
from .family import Family, ModelEntry, WeightSource
from .freezing import BNPolicy
from .meta_build import build_on_meta
from .plan import CheckpointOrder, LoadPlan, make_plan
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
        own = module._parameters  # direct: this walk runs on every load
        meta = [n for n, p in own.items() if p is not None and p.is_meta]
        if not meta:
            continue
        if len(meta) == sum(p is not None for p in own.values()) and hasattr(module, "reset_parameters"):
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


def _planned_tensors(plan: LoadPlan, tensors: Mapping[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """(model key, checkpoint tensor in the model's layout) for everything the plan loads."""
    for mapping in plan.loaded:
        assert mapping.model_key is not None
        tensor = tensors[mapping.checkpoint_key]
        rule = plan.converters.get(mapping.checkpoint_key)
        if rule is not None:
            tensor = rule.convert(tensor, mapping.model_shape)
        yield mapping.model_key, tensor


def _execute(model: nn.Module, plan: LoadPlan, tensors: Mapping[str, torch.Tensor]) -> None:
    """Assign the planned tensors into the model (no copy unless a dtype or layout changes)."""
    target = model.state_dict(keep_vars=True)
    assigned: dict[str, torch.Tensor] = {}
    for key, tensor in _planned_tensors(plan, tensors):
        want = target[key]
        if tensor.dtype != want.dtype and want.dtype.is_floating_point:
            tensor = tensor.to(want.dtype)
        assigned[key] = tensor
    for key in plan.defaulted:
        assigned[key] = target[key].new_zeros(()) if not target[key].is_meta else _zeros_like_meta(target[key])
    _assign(model, assigned)


def _assign(model: nn.Module, assigned: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict(assigned, strict=False, assign=True)``, without its per-module
    Python walk when no module customises loading (ResNet-50: 4.5 -> 0.8 ms).

    The plan has already checked every key and shape. Any load hook or any
    ``_load_from_state_dict`` other than ``nn.Module``'s and BatchNorm's (which only supplies
    a missing ``num_batches_tracked``, and the plan fills those) takes the general path.
    """
    import torch.nn as nn
    from torch.nn.modules.batchnorm import _NormBase

    plain = (nn.Module._load_from_state_dict, _NormBase._load_from_state_dict)
    modules: dict[str, nn.Module] = {}
    for mname, module in model.named_modules(remove_duplicate=False):
        if (type(module)._load_from_state_dict not in plain or module._load_state_dict_pre_hooks
                or module._load_state_dict_post_hooks):
            model.load_state_dict(assigned, strict=False, assign=True)
            return
        modules[mname] = module
    if type(model).load_state_dict is not nn.Module.load_state_dict:
        model.load_state_dict(assigned, strict=False, assign=True)
        return
    for key, tensor in assigned.items():
        mname, _, leaf = key.rpartition(".")
        module = modules[mname]
        old = module._parameters.get(leaf)
        if old is not None:
            module._parameters[leaf] = nn.Parameter(tensor, requires_grad=old.requires_grad)
        else:
            module._buffers[leaf] = tensor


def _zeros_like_meta(t: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.zeros(t.shape, dtype=t.dtype)


def resolve(name: str) -> tuple[ModelEntry, Family]:
    """The registry entry and family for a model name (raises with suggestions when unknown)."""
    registry = get_registry()
    entry = registry.entry(name)
    return entry, registry.family(entry.family)


def _fetch_weights(
    entry: ModelEntry | None,
    weights: str | os.PathLike[str] | WeightSource | None,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    *,
    lock: str | os.PathLike[str] | bool | None = None,
    distributed: bool | None = None,
) -> FetchedWeights:
    """Explicit ``weights`` as given; a registry model at its locked commit, verified (lock.py).

    Under torch.distributed one process per node downloads while the others wait, then
    read the commit it got from the cache (distributed.py).
    """
    from .distributed import fetch_once
    from .lockfile import fetch_entry

    name = entry.name if entry else None
    if weights is not None:
        source = parse_source(weights)
        return fetch_once(lambda commit: fetch(source, revision=commit or revision, cache_dir=cache_dir, name=name),
                          enabled=distributed)
    if entry is None or entry.source is None:
        raise ZooadaptError(
            f"model {name!r} has no published weights in the registry; pass weights=PATH "
            "(a local checkpoint) or pretrained=False for random initialisation"
        )
    return fetch_once(lambda commit: fetch_entry(entry, revision=commit or revision, cache_dir=cache_dir, lock=lock),
                      enabled=distributed)


def _count(model: nn.Module) -> tuple[int, int]:
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def load(
    name: str | os.PathLike[str],
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
    lock: str | os.PathLike[str] | bool | None = None,
    distributed: bool | None = None,
    features_only: bool = False,
    out_stages: str | int | Sequence[str | int] | None = None,
) -> nn.Module:
    """Build a pretrained backbone ready to fine-tune, in one call.

    Args:
        name: a registry name (``zooadapt list``), a name a plugin resolves, or a directory
            written by ``zooadapt.save`` (rebuilt as saved: head, frozen stages, BatchNorm policy).
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
        lock: lock file pinning commit and sha256 (default: ``$ZOOADAPT_LOCK``, else ``./zooadapt.lock``
            if present); False ignores lock files.
        distributed: under an initialised torch.distributed group (default: auto), one process per
            node downloads while the others wait; every rank must then call ``load``. False opts out.
        features_only: return the backbone without its head, as a module whose forward returns
            the outputs of ``out_stages`` (a tuple, in that order).
        out_stages: stage names or indices for ``features_only`` (default: every stage). The
            backbone is cut after the last of them: later stages are neither kept, loaded nor run.

    The returned model carries ``model.zooadapt`` (stages, frozen stages, load report).
    """
    started = time.perf_counter()
    _check_num_classes(num_classes)
    if bn not in ("frozen", "train"):
        raise InvalidArgumentError(f"bn={bn!r}: use 'frozen' (statistics fixed) or 'train' (statistics update)")
    from . import saving

    if saving.is_saved_directory(name):
        return saving.load_saved(name, num_classes=num_classes, freeze=freeze, bn=bn, weights=weights,
                                 revision=revision, pretrained=pretrained, features_only=features_only,
                                 out_stages=out_stages, cache_dir=cache_dir, lock=lock, distributed=distributed)
    if out_stages is not None and not features_only:
        raise InvalidArgumentError("out_stages= selects the outputs of a headless backbone; pass features_only=True")
    if features_only and num_classes is not None:
        raise InvalidArgumentError("features_only=True returns the backbone without a head; drop num_classes=")
    entry, family = resolve(os.fspath(name))
    classes = num_classes if num_classes is not None else entry.num_classes
    cut = None
    build_kwargs = dict(entry.build_kwargs)

    if not pretrained and weights is None:
        model = family.build(entry.arch, num_classes=classes, **build_kwargs)
        plan, fetched = None, None
        smap = family.stage_map(model)
        if features_only:
            from .features import cut_features

            cut = cut_features(family, model, smap, out_stages)
            model, smap = cut.module, cut.stages
    else:
        fetched = _fetch_weights(entry, weights, revision, cache_dir, lock=lock, distributed=distributed)
        tensors = read_checkpoint(fetched.path, trusted=trusted)
        model = build_on_meta(family, entry.arch, classes, **build_kwargs)
        smap = family.stage_map(model)
        if features_only:  # cut before anything is allocated; the plan marks what lies beyond as skipped
            from .features import cut_features

            cut = cut_features(family, model, smap, out_stages)
            plan = cut.plan(tensors, family.key_rules, _skip_prefixes(skip, smap),
                            order=_checkpoint_order(fetched.path))
            model, smap = cut.module, cut.stages
        else:
            plan = _plan_for(model, tensors, family.key_rules, smap, skip, _checkpoint_order(fetched.path))
        plan.check(partial=partial, what=f"{entry.name} ({family.name}/{entry.arch})")
        _execute(model, plan, tensors)
        _materialise(model)

    model.zooadapt = ModelInfo(  # type: ignore[assignment]
        name=entry.name, family=family.name, arch=entry.arch, stages=smap, num_classes=0 if cut else classes,
        source=fetched.origin if fetched else None, revision=fetched.commit if fetched else None,
    )
    from .freezing import freeze as _freeze

    frozen = _freeze(model, freeze, bn=bn) if freeze is not None else ()
    trainable, total = _count(model)
    report = LoadReport(
        model=entry.name, family=family.name, arch=entry.arch,
        source=fetched.origin if fetched else None, path=str(fetched.path) if fetched else None,
        commit=fetched.commit if fetched else None, plan=plan, num_classes=0 if cut else classes, frozen=frozen,
        trainable_params=trainable, total_params=total, seconds=time.perf_counter() - started,
    )
    model.zooadapt.report = report
    model.zooadapt.extra["freeze_spec"] = freeze
    if cut is not None:
        model.zooadapt.extra.update(features_only=True, out_stages=cut.out_stages)
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
              skip: Sequence[str], order: CheckpointOrder = "auto") -> LoadPlan:
    shapes, params = _model_shapes(model)
    return make_plan(
        {k: tuple(t.shape) for k, t in tensors.items()}, shapes, parameters=params,
        rules=rules, head=smap.head, skip=_skip_prefixes(skip, smap), checkpoint_order=order,
    )


def _checkpoint_order(path: Path) -> CheckpointOrder:
    """safetensors stores keys sorted by name; a pickled state dict keeps the model's order."""
    return "unordered" if is_safetensors(path) else "file"


_CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".tar", ".ckpt", ".pkl")


def _names_a_model(source: object) -> bool:
    """True when ``source`` reads as a registry/plugin model name rather than a file, URL or Hub path."""
    if not isinstance(source, str) or "://" in source or Path(source).exists():
        return False
    return not (source.endswith(_CHECKPOINT_SUFFIXES) or source.startswith(("/", "./", "../", "~"))
                or os.sep in source.replace("timm/", "", 1))


def resolve_weights(
    source: str | os.PathLike[str] | WeightSource,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[ModelEntry | None, FetchedWeights]:
    """A checkpoint given as a model name (its registry weights), a file, a URL or ``hf://…``,
    fetched to a local file; the entry is returned when a name was given."""
    if _names_a_model(source):
        entry = get_registry().entry(str(source))
        return entry, _fetch_weights(entry, None, revision, cache_dir)
    return None, _fetch_weights(None, source, revision, cache_dir)


def fitting_stage_map(family: Family, model: nn.Module) -> StageMap | None:
    """The family's stage map if it describes ``model`` (every stage and the head name a module
    or parameter of it), else None: a model the user built may name its parts differently."""
    try:
        smap = family.stage_map(model)
    except Exception:  # a user's variant may not follow the family's layout
        return None
    names = {n for n, _ in model.named_modules()} | {n for n, _ in model.named_parameters()}
    prefixes = [p for s in smap.stages for p in s.prefixes] + ([smap.head] if smap.head else [])
    return smap if all(p in names for p in prefixes) else None


def _family_head(family: Family | None, model: nn.Module) -> str:
    """The family's head prefix when the model has a module of that name (else no head)."""
    if family is None:
        return ""
    try:
        head = family.stage_map(model).head
    except Exception:
        return ""
    return head if head in dict(model.named_modules()) else ""


def _check_skip(skip: Sequence[str], smap: StageMap | None, model_keys: Mapping[str, Any],
                checkpoint_keys: Mapping[str, Any]) -> list[str]:
    """``skip`` as module prefixes (stage names expanded); an entry that names nothing is refused,
    since a typo would otherwise load the very tensors the user meant to keep."""
    if isinstance(skip, str):
        skip = (skip,)
    out: list[str] = []
    for item in skip:
        prefixes = _skip_prefixes([item], smap) if smap else [item]
        hit = any(k == p or k.startswith(p + ".") for p in prefixes for k in (*model_keys, *checkpoint_keys))
        if not hit:
            from .errors import suggest

            tops = sorted({k.split(".")[0] for k in model_keys})
            vocabulary = [*tops, *(smap.names if smap else ())]
            raise InvalidArgumentError(
                f"skip={tuple(skip)!r}: {item!r} names no part of the model or the checkpoint."
                f"{suggest(item, vocabulary)} Give module prefixes of your model (top level: {', '.join(tops[:12])})"
                + (f" or stage names ({', '.join(smap.names)})" if smap else "") + "."
            )
        out += prefixes
    return out


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

    The checkpoint's keys are planned against your model exactly as ``load`` plans them
    (``zooadapt.plan_for(model, source)`` shows the plan without copying anything), then copied
    in place, so the model may already sit on a GPU or have your own layers.

    Args:
        family: lends its key rules, and its stage names when its stage map fits your model
            (so ``skip=("layer4",)`` means ResNet's layer4). A model name as ``source``
            implies its family.
        rules: key rules to use instead of the family's, e.g. ``[zooadapt.rules.Positional()]``
            for a checkpoint whose names differ from yours but whose order is the same.
        skip: stage names or module prefixes to leave untouched; checkpoint tensors meant for
            them are reported as skipped.
        head: your classifier's module prefix (default: the family's): a head of another
            shape is left as you built it instead of raising.
        partial: leave model tensors the checkpoint does not fill as they are, instead of raising.

    Returns the load report: ``report.plan.left_out()`` lists every tensor of your model the
    checkpoint did not fill and why (skipped, new head, missing, defaulted); checkpoint keys
    your model has no place for are ``report.plan.unexpected`` (never an error).
    """
    import torch

    from .checkpoint import is_safetensors

    started = time.perf_counter()
    registry = get_registry()
    fam = registry.family(family) if family else None
    entry, fetched = resolve_weights(source, revision=revision, cache_dir=cache_dir)
    if entry is not None and fam is None:
        fam = registry.family(entry.family)
    tensors = read_checkpoint(fetched.path, trusted=trusted)
    key_rules = list(rules) if rules is not None else list(fam.key_rules if fam else ())
    smap = fitting_stage_map(fam, model) if fam is not None else None
    if head is None:
        head = smap.head if smap else _family_head(fam, model)
    shapes, params = _model_shapes(model)
    skip_prefixes = _check_skip(skip, smap, shapes, tensors)
    plan = make_plan({k: tuple(t.shape) for k, t in tensors.items()}, shapes, parameters=params,
                     rules=key_rules, head=head, skip=skip_prefixes,
                     checkpoint_order="unordered" if is_safetensors(fetched.path) else "file")
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
    """Copy planned tensors into an existing model in place (it may already be on a device);
    tensors still on ``meta`` (a model built without storage) take the checkpoint's tensor."""
    target = model.state_dict(keep_vars=True)
    on_meta: dict[str, torch.Tensor] = {}
    for key, tensor in _planned_tensors(plan, tensors):
        want = target[key]
        if want.is_meta:
            on_meta[key] = tensor.to(want.dtype) if want.dtype.is_floating_point else tensor
        else:
            want.copy_(tensor)
    for key in plan.defaulted:
        if target[key].is_meta:
            on_meta[key] = _zeros_like_meta(target[key])
        else:
            target[key].zero_()
    if on_meta:
        model.load_state_dict(on_meta, strict=False, assign=True)
