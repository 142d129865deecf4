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
from typing import TYPE_CHECKING, Any

from ..contract.errors import InvalidArgumentError
from ..contract.family import WeightSource
from .plan import CheckpointOrder, LoadPlan

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["checkpoint_shapes", "plan_for", "inspect_checkpoint"]

Shape = tuple[int, ...]
CheckpointLike = str | os.PathLike[str] | WeightSource | Mapping[str, Any]


def checkpoint_shapes(
    checkpoint: CheckpointLike,
    *,
    trusted: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    use_ema: bool | None = None,
) -> tuple[dict[str, Shape], CheckpointOrder, str]:
    """``(key -> shape, order, origin)`` of a checkpoint: a state dict, a file, a URL, ``hf://…``,
    or a model name (its registry weights). ``order`` is ``"unordered"`` for safetensors files,
    which keep no key order, else ``"file"``."""
    from .pipeline import read_checkpoint_for, resolve_weights, state_dict_checkpoint
    from .request import make_request

    if isinstance(checkpoint, Mapping):
        contents = state_dict_checkpoint(checkpoint)
        return contents.shapes, contents.order, contents.origin
    _, fetched = resolve_weights(checkpoint, revision=revision, cache_dir=cache_dir)
    contents = read_checkpoint_for(make_request(trusted=trusted, use_ema=use_ema), fetched, shapes_only=True)
    return contents.shapes, contents.order, contents.origin


def plan_for(
    model: str | nn.Module,
    checkpoint: CheckpointLike | None = None,
    *,
    family: str | None = None,
    num_classes: int | None = None,
    rules: Sequence[Any] | None = None,
    skip: Sequence[str] | str = (),
    head: str | None = None,
    use_ema: bool | None = None,
    trusted: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LoadPlan:
    """The load plan for ``checkpoint`` into ``model``, without loading anything.

    ``model`` is a model name (built on ``meta`` with ``num_classes``, default the published
    head) or a module you built. ``checkpoint`` defaults to the model name's registry weights.
    ``family``, ``rules``, ``skip`` and ``head`` mean what they mean for ``load_weights``; the
    plan is the one ``load``/``load_weights`` would execute (wrappers and layouts found the
    same way). Print it for a summary; ``plan.mappings`` has one row per checkpoint key with
    the rules that mapped it, ``plan.coverage`` the fraction of parameters filled.
    """
    from .pipeline import reading_on_cpu, run_plan, users_default_device
    from .request import make_request

    if checkpoint is None and not isinstance(model, str):
        raise InvalidArgumentError("pass the checkpoint to plan for a model you built")
    if num_classes is not None and not isinstance(model, str):
        raise InvalidArgumentError("num_classes= applies to a model name; your model already has its head")
    given: dict[str, Any] = dict(family=family, num_classes=num_classes, rules=rules, skip=skip, head=head,
                                 use_ema=use_ema, trusted=trusted, revision=revision, cache_dir=cache_dir)
    if isinstance(model, str):
        given["name"] = model
    else:
        given["model"] = model
    if checkpoint is not None and not isinstance(checkpoint, Mapping):
        given["weights"] = checkpoint
    elif checkpoint is None:
        given["weights"] = model
    with reading_on_cpu(users_default_device()):
        return run_plan(make_request(**given), checkpoint if isinstance(checkpoint, Mapping) else None)


def inspect_checkpoint(
    checkpoint: CheckpointLike,
    model: str | nn.Module | None = None,
    **kwargs: Any,
) -> LoadPlan | dict[str, Shape]:
    """Without a model: the checkpoint's tensors (key -> shape, in file order). With a model
    (a name or a module): the plan ``plan_for(model, checkpoint, **kwargs)``."""
    if model is None:
        allowed = {"trusted", "revision", "cache_dir", "use_ema"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise InvalidArgumentError(f"{sorted(unknown)} need a model; pass model=NAME")
        return checkpoint_shapes(checkpoint, **kwargs)[0]
    return plan_for(model, checkpoint, **kwargs)
