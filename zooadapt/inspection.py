"""Previewing a load: what a checkpoint holds, and how it would fill a model, before anything loads.

Key rules are data, so the plan they produce can be shown on its own: which rule maps each
checkpoint key to which model key, how much of the model the checkpoint covers, and what would
be missing, unexpected, mismatched or dropped. ``plan_for`` builds that plan for a model name
(built on ``meta``: nothing allocated) or a model you built; ``inspect_checkpoint`` is the one
entry point ``zooadapt inspect`` uses. Reading a safetensors file here touches only its header.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgumentError
from .family import WeightSource
from .plan import CheckpointOrder, LoadPlan, make_plan

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["checkpoint_shapes", "plan_for", "inspect_checkpoint"]

Shape = tuple[int, ...]
CheckpointLike = str | os.PathLike[str] | WeightSource | Mapping[str, Any]


def _shapes_of_file(path: Path, trusted: bool) -> tuple[dict[str, Shape], CheckpointOrder]:
    from .checkpoint import is_safetensors, read_checkpoint

    if is_safetensors(path):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}, "unordered"  # noqa: SIM118
        except (SafetensorError, OSError, ValueError):
            pass  # read_checkpoint raises the proper CheckpointFormatError
    tensors = read_checkpoint(path, trusted=trusted)
    return {k: tuple(t.shape) for k, t in tensors.items()}, "file"


def checkpoint_shapes(
    checkpoint: CheckpointLike,
    *,
    trusted: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Shape], CheckpointOrder, str]:
    """``(key -> shape, order, origin)`` of a checkpoint: a state dict, a file, a URL, ``hf://…``,
    or a model name (its registry weights). ``order`` is ``"unordered"`` for safetensors files,
    which keep no key order, else ``"file"``."""
    if isinstance(checkpoint, Mapping):
        return {k: tuple(getattr(v, "shape", v)) for k, v in checkpoint.items()}, "file", "state dict"
    from .loader import resolve_weights

    _, fetched = resolve_weights(checkpoint, revision=revision, cache_dir=cache_dir)
    shapes, order = _shapes_of_file(Path(fetched.path), trusted)
    return shapes, order, fetched.origin


def _model_and_family(model: str | nn.Module, family: str | None, num_classes: int | None) -> tuple[Any, Any, Any]:
    """(built model, family or None, stage map or None) for a model name or a module."""
    from .loader import build_on_meta, fitting_stage_map, resolve
    from .registry import get_registry

    if isinstance(model, str):
        entry, fam = resolve(model)
        if family is not None:
            fam = get_registry().family(family)
        classes = num_classes if num_classes is not None else entry.num_classes
        built = build_on_meta(fam, entry.arch, classes, **dict(entry.build_kwargs))
        return built, fam, fam.stage_map(built)
    if num_classes is not None:
        raise InvalidArgumentError("num_classes= applies to a model name; your model already has its head")
    fam = get_registry().family(family) if family else None
    return model, fam, fitting_stage_map(fam, model) if fam is not None else None


def plan_for(
    model: str | nn.Module,
    checkpoint: CheckpointLike | None = None,
    *,
    family: str | None = None,
    num_classes: int | None = None,
    rules: Sequence[Any] | None = None,
    skip: Sequence[str] = (),
    head: str | None = None,
    trusted: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LoadPlan:
    """The load plan for ``checkpoint`` into ``model``, without loading anything.

    ``model`` is a model name (built on ``meta`` with ``num_classes``, default the published
    head) or a module you built. ``checkpoint`` defaults to the model name's registry weights.
    ``family``, ``rules``, ``skip`` and ``head`` mean what they mean for ``load_weights``.
    Print the result for a summary; ``plan.mappings`` has one row per checkpoint key with
    the rules that mapped it, ``plan.coverage`` the fraction of parameters filled.
    """
    from .loader import _check_skip, _family_head, _model_shapes

    if checkpoint is None:
        if not isinstance(model, str):
            raise InvalidArgumentError("pass the checkpoint to plan for a model you built")
        checkpoint = model
    built, fam, smap = _model_and_family(model, family, num_classes)
    shapes, order, _ = checkpoint_shapes(checkpoint, trusted=trusted, revision=revision, cache_dir=cache_dir)
    key_rules = list(rules) if rules is not None else list(fam.key_rules if fam else ())
    if head is None:
        head = smap.head if smap else _family_head(fam, built)
    model_shapes, params = _model_shapes(built)
    skip_prefixes = _check_skip(skip, smap, model_shapes, shapes)
    return make_plan(shapes, model_shapes, parameters=params, rules=key_rules, head=head, skip=skip_prefixes,
                     checkpoint_order=order)


def inspect_checkpoint(
    checkpoint: CheckpointLike,
    model: str | nn.Module | None = None,
    **kwargs: Any,
) -> LoadPlan | dict[str, Shape]:
    """Without a model: the checkpoint's tensors (key -> shape, in file order). With a model
    (a name or a module): the plan ``plan_for(model, checkpoint, **kwargs)``."""
    if model is None:
        allowed = {"trusted", "revision", "cache_dir"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise InvalidArgumentError(f"{sorted(unknown)} need a model; pass model=NAME")
        return checkpoint_shapes(checkpoint, **kwargs)[0]
    return plan_for(model, checkpoint, **kwargs)
