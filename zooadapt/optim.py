"""Optimizer parameter groups from the family's stage map.

Every group carries a real ``lr`` (and ``weight_decay`` when asked), so any optimizer and
any scheduler read the same numbers — no private scale factor only one scheduler knows.
Frozen parameters are in no group; every trainable parameter is in exactly one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgumentError
from .freezing import _stage_map, _unwrap
from .stages import HEAD, StageMap

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

__all__ = ["param_groups", "format_param_groups", "add_param_group"]

OTHER = "other"
"""Group name for trainable parameters outside every stage and the head (e.g. a final norm)."""


def _check_rate(name: str, value: float | None) -> None:
    if value is not None and (not isinstance(value, (int, float)) or value < 0):
        raise InvalidArgumentError(f"{name}={value!r}: a learning rate or decay must be a number >= 0")


def param_groups(
    model: nn.Module,
    lr: float,
    head_lr: float | None = None,
    decay: float | None = None,
    weight_decay: float | None = None,
    no_decay_norm_bias: bool = True,
    *,
    stages: StageMap | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups for ``torch.optim``: one per stage (input to output), then the head.

    The head trains at ``head_lr`` (default ``lr``). With ``decay`` (e.g. 0.7) the stage k
    steps below the head trains at ``lr * decay**k`` (layer-wise decay); without it every
    stage trains at ``lr``. With ``weight_decay`` set and ``no_decay_norm_bias``, biases and
    normalisation weights (1-D tensors) get ``weight_decay=0`` in a group of their own; without
    ``weight_decay`` the groups carry none and the optimizer's default applies to all of them.
    Trainable parameters outside every stage and the head (a final norm) form the group
    ``"other"`` at ``lr``. Each group carries ``name`` (its stage) for logs and schedulers.
    """
    _check_rate("lr", lr)
    _check_rate("head_lr", head_lr)
    _check_rate("weight_decay", weight_decay)
    if decay is not None and not 0 < decay <= 1:
        raise InvalidArgumentError(f"decay={decay!r}: layer decay must be in (0, 1]")
    model = _unwrap(model)
    smap = _stage_map(model, stages)
    order = [*smap.names, OTHER, HEAD]
    rates: dict[str, float] = {HEAD: head_lr if head_lr is not None else lr, OTHER: lr}
    for k, name in enumerate(reversed(smap.names), start=1):
        rates[name] = lr * decay**k if decay is not None else lr

    buckets: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for pname, param in model.named_parameters():
        if not param.requires_grad:
            continue
        stage = smap.stage_of(pname) or OTHER
        no_wd = weight_decay is not None and no_decay_norm_bias and param.ndim <= 1
        buckets.setdefault((stage, no_wd), []).append(param)

    groups: list[dict[str, Any]] = []
    for stage in order:
        for no_wd in (False, True):
            params = buckets.get((stage, no_wd))
            if not params:
                continue
            group: dict[str, Any] = {"params": params, "lr": rates[stage], "name": stage}
            if weight_decay is not None:
                group["weight_decay"] = 0.0 if no_wd else weight_decay
            groups.append(group)
    return groups


def format_param_groups(groups: Iterable[dict[str, Any]], model: nn.Module | None = None) -> str:
    """A small table of groups (stage, tensors, parameters, lr, weight decay) for logs.

    Works on ``param_groups(...)`` or on ``optimizer.param_groups`` (current learning rates).
    With ``model`` (loaded by zooadapt), frozen stages are listed too, as ``frozen``.
    """
    rows = [("stage", "tensors", "params", "lr", "weight_decay")]
    if model is not None:
        from .freezing import frozen_stages

        inner = _unwrap(model)
        smap = _stage_map(inner, None)
        for stage in frozen_stages(inner):
            params = [p for n, p in inner.named_parameters() if smap.stage_of(n) == stage]
            rows.append((stage, str(len(params)), f"{sum(p.numel() for p in params):,}", "frozen", "-"))
    for g in groups:
        params = list(g["params"])
        wd = g.get("weight_decay")
        rows.append((str(g.get("name", "?")), str(len(params)), f"{sum(p.numel() for p in params):,}",
                     f"{g['lr']:.3g}", "-" if wd is None else f"{wd:.3g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def add_param_group(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    lr: float,
    *,
    name: str = "unfrozen",
    weight_decay: float | None = None,
) -> dict[str, Any] | None:
    """Add the model's trainable parameters the optimizer does not hold yet as one new group.

    For gradual unfreezing: ``zooadapt.unfreeze(model, "layer4")`` then
    ``add_param_group(opt, model, lr=1e-4)``. Returns the new group, or None if nothing was new.
    """
    _check_rate("lr", lr)
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    fresh = [p for p in _unwrap(model).parameters() if p.requires_grad and id(p) not in held]
    if not fresh:
        return None
    group: dict[str, Any] = {"params": fresh, "lr": lr, "name": name}
    if weight_decay is not None:
        group["weight_decay"] = weight_decay
    optimizer.add_param_group(group)
    return optimizer.param_groups[-1]
