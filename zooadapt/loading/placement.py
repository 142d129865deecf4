"""Putting planned tensors into a model: assigned into a fresh build, copied into a user's model.

A fresh build (``load``) has its parameters on ``meta``; the checkpoint's tensors become the
parameters without a copy (cast or moved only when a dtype or device is asked for). A model the
user built (``load_weights``) may already sit on a GPU, so its tensors are copied in place.
Parameters the checkpoint does not fill (a new head) are then given storage and initialised.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from .meta_build import ModelIndex
    from .plan import LoadPlan

__all__ = ["assign_planned", "check_tied", "copy_planned", "materialise", "retie", "tied_groups"]


def materialise(model: nn.Module, device: torch.device | str = "cpu",
                modules: Iterable[tuple[str, nn.Module]] | None = None) -> list[str]:
    """Give every parameter still on ``meta`` real storage (on ``device``) and a fresh initialisation.

    Modules whose parameters are all missing (the new head) are reset with their own
    ``reset_parameters``; a stray missing tensor in a partly loaded module (only under
    ``partial=True``) gets zeros for vectors and Kaiming-uniform for matrices. ``modules``
    (name, module) limits the search to those the caller knows may hold one (default: all).
    """
    import torch
    import torch.nn as nn

    fresh: list[str] = []
    make = torch.Tensor._make_subclass
    for mname, module in model.named_modules() if modules is None else modules:
        own = module._parameters  # direct: this walk runs on every load
        meta = [n for n, p in own.items() if p is not None and p.is_meta]
        if not meta:
            continue
        if len(meta) == sum(p is not None for p in own.values()) and hasattr(module, "reset_parameters"):
            if any(b is not None and b.is_meta for b in module._buffers.values()):
                module.to_empty(device=device, recurse=False)
            else:  # what to_empty does for the parameters, without its generic per-tensor machinery
                for n in meta:
                    old = own[n]
                    assert old is not None
                    own[n] = make(nn.Parameter, torch.empty(old.shape, dtype=old.dtype, device=device),
                                  old.requires_grad)
            module.reset_parameters()
        else:
            for n in meta:
                old = module._parameters[n]
                assert old is not None
                data = torch.empty(old.shape, dtype=old.dtype, device=device)
                if data.ndim >= 2:
                    nn.init.kaiming_uniform_(data, a=5**0.5)
                else:
                    nn.init.zeros_(data)
                module._parameters[n] = nn.Parameter(data, requires_grad=old.requires_grad)
        fresh += [f"{mname}.{n}" if mname else n for n in meta]
    return fresh


def _planned_tensors(plan: LoadPlan, tensors: Mapping[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """(model key, checkpoint tensor in the model's layout) for everything the plan loads."""
    import torch

    if not plan.fused and not plan.converters:  # the usual plan: every tensor as it is in the file
        for mapping in plan.loaded:
            assert mapping.model_key is not None
            yield mapping.model_key, tensors[mapping.checkpoint_key]
        return
    for mapping in plan.loaded:
        assert mapping.model_key is not None
        if mapping.checkpoint_key in plan.fused:
            parts, dim = plan.fused[mapping.checkpoint_key]
            tensor = torch.cat([tensors[k] for k in parts], dim=dim)
        else:
            tensor = tensors[mapping.checkpoint_key]
        rule = plan.converters.get(mapping.checkpoint_key)
        if rule is not None:
            tensor = rule.convert(tensor, mapping.model_shape)
        yield mapping.model_key, tensor


def assign_planned(model: nn.Module, plan: LoadPlan, tensors: Mapping[str, torch.Tensor],
                   device: torch.device | None = None, state: Mapping[str, torch.Tensor] | None = None,
                   index: ModelIndex | None = None) -> None:
    """Assign the planned tensors into the model: no copy unless a dtype, layout or device
    changes. Each tensor moves to ``device`` on its own, so no full copy of the checkpoint is
    ever held on the CPU on the way to a GPU. ``state`` is the model's ``state_dict(keep_vars=True)``
    when the caller already has it; ``index`` the model's index from its skeleton (no walk at all)."""
    if index is not None:
        _assign_indexed(plan, tensors, device, index)
        return
    target = state if state is not None else model.state_dict(keep_vars=True)
    assigned: dict[str, torch.Tensor] = {}
    for key, tensor in _planned_tensors(plan, tensors):
        want = target[key]
        dtype = want.dtype if tensor.dtype != want.dtype and want.dtype.is_floating_point else None
        if dtype is not None or (device is not None and tensor.device != device):
            tensor = tensor.to(device=device, dtype=dtype)
        assigned[key] = tensor
    for key in plan.defaulted:
        zeros = target[key].new_zeros(()) if not target[key].is_meta else _zeros_like_meta(target[key])
        assigned[key] = zeros.to(device) if device is not None else zeros
    _assign(model, assigned)


def _assign_indexed(plan: LoadPlan, tensors: Mapping[str, torch.Tensor], device: torch.device | None,
                    index: ModelIndex) -> None:
    """``assign_planned`` for a model copied from a skeleton: each key's module and slot come from
    the skeleton's table (checked there to load as ``nn.Module`` does), so each tensor goes
    straight into its place, with no walk, no intermediate dictionary and no name parsing."""
    import torch
    import torch.nn as nn

    make, modules, slots, dtypes = torch.Tensor._make_subclass, index.module_list, index.slots, index.dtypes
    for key, tensor in _planned_tensors(plan, tensors):
        want = dtypes[key]
        dtype = want if tensor.dtype != want and want.is_floating_point else None
        if dtype is not None or (device is not None and tensor.device != device):
            tensor = tensor.to(device=device, dtype=dtype)
        number, leaf, is_parameter = slots[key]
        module = modules[number]
        if is_parameter:
            module._parameters[leaf] = make(nn.Parameter, tensor, module._parameters[leaf].requires_grad)
        else:
            module._buffers[leaf] = tensor
    for key in plan.defaulted:
        old = index.tensor(key)
        zeros = old.new_zeros(()) if not old.is_meta else _zeros_like_meta(old)
        number, leaf, _ = slots[key]
        modules[number]._buffers[leaf] = zeros.to(device) if device is not None else zeros


def _assign(model: nn.Module, assigned: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict(assigned, strict=False, assign=True)``, without its per-module
    Python walk when no module customises loading (ResNet-50: 4.5 -> 0.8 ms).

    The plan has already checked every key and shape. Any load hook or any
    ``_load_from_state_dict`` other than ``nn.Module``'s and BatchNorm's (which only supplies
    a missing ``num_batches_tracked``, and the plan fills those) takes the general path.
    """
    import torch
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
    make = torch.Tensor._make_subclass
    for key, tensor in assigned.items():
        mname, _, leaf = key.rpartition(".")
        module = modules[mname]
        old = module._parameters.get(leaf)
        if old is not None:
            module._parameters[leaf] = make(nn.Parameter, tensor, old.requires_grad)  # nn.Parameter(...), directly
        else:
            module._buffers[leaf] = tensor


def _zeros_like_meta(t: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.zeros(t.shape, dtype=t.dtype)


def copy_planned(model: nn.Module, plan: LoadPlan, tensors: Mapping[str, torch.Tensor]) -> None:
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


def tied_groups(state: Mapping[str, torch.Tensor]) -> tuple[tuple[str, ...], ...]:
    """The keys of ``state`` (a ``state_dict(keep_vars=True)``) that name one parameter, grouped
    in state-dict order: weights shared inside the model, which a file may hold under one name."""
    import torch.nn as nn

    by_tensor: dict[int, list[str]] = {}
    for key, value in state.items():
        if isinstance(value, nn.Parameter):
            by_tensor.setdefault(id(value), []).append(key)
    return tuple(tuple(keys) for keys in by_tensor.values() if len(keys) > 1)


def check_tied(plan: LoadPlan, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse a file that gives two keys of one tied tensor different values: loading both would
    let the later one win, loading one would drop the other without a word."""
    import torch

    from ..contract.errors import IncompatibleCheckpointError

    if not plan.tied:
        return
    source_of = {m.model_key: m.checkpoint_key for m in plan.loaded if m.model_key is not None}
    for member, source in plan.tied.items():
        if member in source_of and not torch.equal(tensors[source_of[member]], tensors[source_of[source]]):
            raise IncompatibleCheckpointError(
                f"{member} and {source} are one tensor in the model (a shared weight), but the checkpoint's "
                f"{source_of[member]!r} and {source_of[source]!r} hold different values: it was not saved from "
                "this architecture. Drop one of them with rules=[\"drop:KEY\"] if you know which is right.")


def retie(model: nn.Module, plan: LoadPlan) -> None:
    """Make every tied key name its source's tensor again after assignment (assigning a tensor
    to one name of a shared parameter replaces it under that name only)."""
    for member, source in plan.tied.items():
        owner, _, leaf = source.rpartition(".")
        tensor = model.get_submodule(owner)._parameters[leaf]
        holder, _, name = member.rpartition(".")
        model.get_submodule(holder)._parameters[name] = tensor
