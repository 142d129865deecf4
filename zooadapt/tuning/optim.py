"""Optimizer parameter groups from the family's stage map.

Every group carries a real ``lr`` (and ``weight_decay`` when asked), so any optimizer and
any scheduler read the same numbers — no private scale factor only one scheduler knows.
By default frozen parameters are in no group; with ``include_frozen=True`` every stage has
its group from step 0 (frozen parameters have no gradient, so optimizers skip them until
``unfreeze``), which makes gradual unfreezing need no optimizer or scheduler surgery.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..contract.errors import InvalidArgumentError
from ..contract.stages import HEAD, StageMap
from .freezing import _stage_map, _target, _unwrap, check_batchnorm_policy

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

__all__ = ["param_groups", "format_param_groups", "add_param_group", "ParamGroups", "ParamGroupTable"]

OTHER = "other"
"""Group name for trainable parameters outside every stage and the head (e.g. a final norm)."""


def _check_rate(name: str, value: object, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(
            f"{name}={value!r}: a learning rate or weight decay must be a finite number >= 0 (e.g. {name}=1e-3)")


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name}={value!r}: use True or False")


def _check_settings(lr: object, head_lr: object, decay: object, weight_decay: object, no_decay_norm_bias: object,
                    ) -> None:
    _check_rate("lr", lr, optional=False)
    _check_rate("head_lr", head_lr)
    _check_rate("weight_decay", weight_decay)
    if decay is not None and (isinstance(decay, bool) or not isinstance(decay, (int, float))
                              or not math.isfinite(decay) or not 0 < decay <= 1):
        raise InvalidArgumentError(
            f"decay={decay!r}: layer decay must be a number in (0, 1] (e.g. 0.7: each stage below the head "
            "trains at 0.7x the one above), or None for no decay")
    _check_flag("no_decay_norm_bias", no_decay_norm_bias)


def param_groups(
    model: nn.Module,
    lr: float,
    head_lr: float | None = None,
    decay: float | None = None,
    weight_decay: float | None = None,
    no_decay_norm_bias: bool = True,
    *,
    include_frozen: bool = False,
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

    ``include_frozen=False`` (default) leaves frozen parameters out. ``include_frozen=True``
    puts frozen stages in their groups too, at their real rates: they have no gradient, so
    SGD/Adam/AdamW skip them (no update, no weight decay, no state) until ``unfreeze`` makes
    them trainable; every scheduler built at the start already drives their groups. ``model``
    may be wrapped (``torch.compile``, DataParallel/DDP, FSDP2, Fabric, a LightningModule).
    """
    _check_settings(lr, head_lr, decay, weight_decay, no_decay_norm_bias)
    _check_flag("include_frozen", include_frozen)
    model = _target(model, stages)
    smap = _stage_map(model, stages)
    check_batchnorm_policy(model, smap)
    order = [*smap.names, OTHER, HEAD]
    rates: dict[str, float] = {HEAD: head_lr if head_lr is not None else lr, OTHER: lr}
    for k, name in enumerate(reversed(smap.names), start=1):
        rates[name] = lr * decay**k if decay is not None else lr

    buckets: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    matched = False
    for pname, param in model.named_parameters():
        stage = smap.stage_of(pname)
        matched = matched or stage is not None
        if not param.requires_grad and not include_frozen:
            continue
        no_wd = weight_decay is not None and no_decay_norm_bias and param.ndim <= 1
        buckets.setdefault((stage or OTHER, no_wd), []).append(param)
    if not matched and any(True for _ in model.parameters()):
        example = next(n for n, _ in model.named_parameters())
        raise InvalidArgumentError(
            f"no parameter of this {type(model).__name__} belongs to a stage or the head (its parameters are named "
            f"like {example!r}; {smap.describe()}); every parameter would land in one group at lr. Pass the model "
            "zooadapt built (zooadapt unwraps torch.compile, DataParallel, DDP, FSDP2, Fabric and a LightningModule "
            "holding one), or stages= written for this module's parameter names")

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
    return ParamGroups(groups)


def format_param_groups(groups: Iterable[dict[str, Any]], model: nn.Module | None = None) -> ParamGroupTable:
    """A small table of groups (stage, tensors, parameters, lr, weight decay) for logs.

    Works on ``param_groups(...)`` or on ``optimizer.param_groups`` (current learning rates).
    A group whose parameters are all frozen (``include_frozen=True``) shows its lr as
    ``frozen@<lr>``. With ``model`` (loaded by zooadapt), frozen stages in no group are listed
    too, as ``frozen``. The result is the text (a ``str``); a notebook shows it as an HTML table.
    """
    groups = _checked_groups(groups)
    rows = [("stage", "tensors", "params", "lr", "weight_decay")]
    if model is not None:
        import torch.nn as nn

        from .freezing import frozen_stages

        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(f"model={type(model).__name__}: format_param_groups(groups, model) takes the "
                                       "torch.nn.Module the groups came from (or no model)")
        inner = _unwrap(model)
        smap = _stage_map(inner, None)
        grouped = {id(p) for g in groups for p in g["params"]}
        for stage in frozen_stages(inner):
            params = [p for n, p in inner.named_parameters() if smap.stage_of(n) == stage]
            if any(id(p) in grouped for p in params):
                continue
            rows.append((stage, str(len(params)), f"{sum(p.numel() for p in params):,}", "frozen", "-"))
    for g in groups:
        params = g["params"]
        lr = _rate(g.get("lr"))  # a group without one gets the optimizer's default, as torch.optim fills it in
        if params and not any(p.requires_grad for p in params):
            lr = f"frozen@{lr}"
        rows.append((str(g.get("name", "?")), str(len(params)), f"{sum(p.numel() for p in params):,}",
                     lr, _rate(g.get("weight_decay"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
    return ParamGroupTable(text, tuple(rows))


_GROUPS_FORMS = ("param_groups(...) or optimizer.param_groups: a list of dicts, each with 'params' (the group's "
                 "tensors) and usually 'lr'")


def _checked_groups(groups: object) -> list[dict[str, Any]]:
    """``groups`` as a list of dicts whose ``params`` is a list of tensors, or an ``InvalidArgumentError``
    saying what was passed instead (rather than a ``KeyError`` or ``TypeError`` from the table below)."""
    import torch
    import torch.nn as nn

    if isinstance(groups, torch.optim.Optimizer):
        raise InvalidArgumentError(f"format_param_groups({type(groups).__name__}): pass optimizer.param_groups, "
                                   "the optimizer's groups, not the optimizer")
    if isinstance(groups, nn.Module):
        raise InvalidArgumentError(f"format_param_groups({type(groups).__name__}): pass the groups, e.g. "
                                   "format_param_groups(zooadapt.param_groups(model, lr=1e-3), model); the model "
                                   "goes second, if at all")
    if (groups is None or isinstance(groups, (str, bytes, Mapping, torch.Tensor))
            or not isinstance(groups, Iterable)):
        what = "a single group" if isinstance(groups, Mapping) else type(groups).__name__
        raise InvalidArgumentError(f"format_param_groups({what}): give {_GROUPS_FORMS}")
    checked: list[dict[str, Any]] = []
    for i, group in enumerate(groups):
        if not isinstance(group, Mapping) or "params" not in group:
            what = "a dict without 'params'" if isinstance(group, Mapping) else f"{type(group).__name__}, not a dict"
            raise InvalidArgumentError(f"format_param_groups: group {i} is {what}; give {_GROUPS_FORMS}")
        params = group["params"]
        if isinstance(params, torch.Tensor):  # torch.optim takes one tensor as a group of one
            params = [params]
        if isinstance(params, (str, bytes, Mapping)) or not isinstance(params, Iterable):
            raise InvalidArgumentError(f"format_param_groups: group {i}'s params is {type(params).__name__}; give "
                                       "a list of tensors")
        # torch.optim also takes (name, tensor) pairs; the table counts the tensors
        tensors = [p[1] if isinstance(p, tuple) and len(p) == 2 else p for p in params]
        if not all(isinstance(p, torch.Tensor) for p in tensors):
            bad = next(p for p in tensors if not isinstance(p, torch.Tensor))
            raise InvalidArgumentError(f"format_param_groups: group {i}'s params holds {type(bad).__name__}; give "
                                       "a list of tensors")
        for key in ("lr", "weight_decay"):
            value = group.get(key)
            if key in group and not _is_rate(value):
                raise InvalidArgumentError(
                    f"format_param_groups: group {i} ({group.get('name', 'unnamed')}) has {key}={value!r}; give a "
                    f"number, or leave '{key}' out and the optimizer's default fills it in")
        checked.append({**group, "params": tensors})
    return checked


def _is_rate(value: object) -> bool:
    import torch

    if isinstance(value, torch.Tensor):  # torch.optim accepts a tensor lr (for capturable/compiled steps)
        return value.numel() == 1 and value.is_floating_point()
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rate(value: Any) -> str:
    return "-" if value is None else f"{float(value):.3g}"


class ParamGroupTable(str):
    """``format_param_groups``' text, which logs print as it is and a notebook shows as an HTML
    table (``_repr_html_``) of the same rows."""

    rows: tuple[tuple[str, ...], ...]

    def __new__(cls, text: str, rows: tuple[tuple[str, ...], ...]) -> ParamGroupTable:
        table = super().__new__(cls, text)
        table.rows = rows
        return table

    def _repr_html_(self) -> str:
        import html

        header, *body = self.rows
        cells = "".join(f"<th>{html.escape(c)}</th>" for c in header)
        lines = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
        return f'<table class="zooadapt-param-groups"><thead><tr>{cells}</tr></thead><tbody>{lines}</tbody></table>'


class ParamGroups(list[dict[str, Any]]):
    """What ``param_groups`` returns: a plain list of dicts for ``torch.optim`` (a ``list`` in
    every respect), which a notebook shows as the ``format_param_groups`` table."""

    def _repr_html_(self) -> str:
        return format_param_groups(self)._repr_html_()


def add_param_group(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    lr: float,
    head_lr: float | None = None,
    decay: float | None = None,
    weight_decay: float | None = None,
    no_decay_norm_bias: bool = True,
    *,
    name: str | None = None,
    stages: StageMap | None = None,
) -> list[dict[str, Any]]:
    """Add the model's trainable parameters the optimizer does not hold yet, grouped as ``param_groups`` would.

    For gradual unfreezing with an optimizer built without ``include_frozen``:
    ``zooadapt.unfreeze(model, "layer3")`` then ``add_param_group(opt, model, lr=1e-3, decay=0.7,
    weight_decay=0.05)``. The arguments mean what they mean for ``param_groups`` (pass the same
    ones), so the new groups are exactly those ``param_groups`` would make of the same
    parameters: the same layer-decayed rates and the same weight-decay split (no decay on
    biases and norm weights). ``weight_decay=None`` means the decay the optimizer already
    applies, read from its groups (what ``param_groups(weight_decay=...)`` gave it, or the
    optimizer's default: AdamW's 0.01), split the same way: an added group never decays biases
    and norm weights behind your back because the optimizer's default filled it in. Groups with
    several different non-zero decays leave it ambiguous: then pass ``weight_decay``.
    ``name`` renames every added group (default: each stage's name). Returns the added groups
    as the optimizer holds them (empty if nothing was new). Schedulers built earlier do not know
    groups added later: prefer ``param_groups(..., include_frozen=True)``, which needs no call here.
    """
    if not callable(getattr(optimizer, "add_param_group", None)) or not hasattr(optimizer, "param_groups"):
        raise InvalidArgumentError(
            f"optimizer={type(optimizer).__name__}: pass a torch.optim.Optimizer (arguments are optimizer, model, lr)")
    if name is not None and not isinstance(name, str):
        raise InvalidArgumentError(f"name={name!r}: a group name must be a string")
    _check_settings(lr, head_lr, decay, weight_decay, no_decay_norm_bias)
    if weight_decay is None:
        weight_decay = _optimizer_weight_decay(optimizer)
    wanted = param_groups(model, lr, head_lr, decay, weight_decay, no_decay_norm_bias, stages=stages)
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    added = []
    for group in wanted:
        fresh = [p for p in group["params"] if id(p) not in held]
        if not fresh:
            continue
        optimizer.add_param_group({**group, "params": fresh, **({"name": name} if name is not None else {})})
        added.append(optimizer.param_groups[-1])
    return added


def _optimizer_weight_decay(optimizer: torch.optim.Optimizer) -> float | None:
    """The weight decay ``optimizer`` applies, for groups added without one; None when it applies none.

    A group added without ``weight_decay`` takes the optimizer's default, biases included; the
    decay its groups carry is what the user chose (a ``param_groups`` split holds it and 0)."""
    default = optimizer.defaults.get("weight_decay") if isinstance(getattr(optimizer, "defaults", None), dict) else None
    values = {g.get("weight_decay", default) for g in optimizer.param_groups}
    nonzero = sorted({v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v})
    if len(nonzero) > 1:
        raise InvalidArgumentError(
            f"the optimizer's groups decay weights at different rates ({', '.join(f'{v:g}' for v in nonzero)}), so "
            "the new groups' weight decay is not clear: pass weight_decay= (e.g. weight_decay="
            f"{nonzero[-1]:g}) to add_param_group (or to StageFinetuning)")
    if nonzero:
        return float(nonzero[0])
    if isinstance(default, (int, float)) and default:
        return 0.0  # every group was set to 0 on purpose; the default would decay the new ones
    return None
