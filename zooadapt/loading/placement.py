"""Putting planned tensors into a model: assigned into a fresh build, copied into a user's model.

A fresh build (``load``) has its parameters on ``meta``; the checkpoint's tensors become the
parameters without a copy (cast or moved only when a dtype or device is asked for). A model the
user built (``load_weights``) may already sit on a GPU, so its tensors are copied in place.
Parameters the checkpoint does not fill (a new head) are then given storage and initialised.

Two things a tensor can hold are said, never passed over: NaN or Inf values load as they are
(a checkpoint may mean them), but placement returns their keys, warns once per load and the
report lists them; an integer tensor (a quantized ``int8`` weight) for a floating parameter is
refused (``IncompatibleCheckpointError``): cast, its values are the quantized integers, not the weights.
A key rule that converts the tensor (a converter returning floats) makes that choice for it,
and a converter with ``casts_integers = True`` says the integers are the values.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from ..contract.caches import ProcessCache

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from ..contract.rules import KeyRule
    from .meta_build import ModelIndex
    from .plan import LoadPlan

__all__ = ["assign_planned", "check_tied", "copy_planned", "materialise", "retie", "tied_groups", "warn_nonfinite"]


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
            # checked by hasattr above; torch's stubs type every module attribute as Tensor | Module
            module.reset_parameters()  # type: ignore[operator]
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


def _planned_tensors(plan: LoadPlan, tensors: Mapping[str, torch.Tensor]
                     ) -> Iterator[tuple[str, torch.Tensor, str, KeyRule | None]]:
    """(model key, checkpoint tensor in the model's layout, checkpoint key, the rule that converted
    it or None) for everything the plan loads."""
    import torch

    tensors = _converted(plan, tensors)
    if not plan.fused and not plan.converters:  # the usual plan: every tensor as it is in the file
        for mapping in plan.loaded:
            assert mapping.model_key is not None
            yield mapping.model_key, tensors[mapping.checkpoint_key], mapping.checkpoint_key, None
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
            assert mapping.model_shape is not None  # the planner gives a converter only to a key it matched by shape
            tensor = rule.convert(tensor, mapping.model_shape)
        yield mapping.model_key, tensor, mapping.checkpoint_key, rule


def _converted(plan: LoadPlan, tensors: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """``tensors`` with the planned keys that come out of a whole-state-dict conversion (a
    converting layout: timm's ``checkpoint_filter_fn``) read from its result: each conversion
    runs once, on the file's tensors, as the other codebase runs it."""
    if not plan.converters:
        return tensors
    from ..contract.family import Conversion

    results: dict[int, Mapping[str, torch.Tensor]] = {}
    view: dict[str, torch.Tensor] | None = None
    for key, rule in plan.converters.items():
        conversion = getattr(rule, "conversion", None)
        if not isinstance(conversion, Conversion):
            continue
        if id(conversion) not in results:
            results[id(conversion)] = conversion.apply(tensors)
        output: str = rule.output  # type: ignore[attr-defined]
        tensor = results[id(conversion)].get(output)
        if tensor is None or tuple(tensor.shape) != tuple(conversion.shapes[output]):
            from ..contract.errors import IncompatibleCheckpointError

            raise IncompatibleCheckpointError(
                f"{conversion.name} gave {output!r} " + ("no value" if tensor is None else f"the shape "
                f"{list(tensor.shape)}") + f" from the file's tensors, where its run on the file's shapes gave "
                f"{list(conversion.shapes[output])}: its result depends on the values, so the plan does not hold. "
                "Convert the file with it yourself and load the result.")
        view = dict(tensors) if view is None else view
        view[key] = tensor
    return tensors if view is None else view


def assign_planned(model: nn.Module, plan: LoadPlan, tensors: Mapping[str, torch.Tensor],
                   device: torch.device | None = None, state: Mapping[str, torch.Tensor] | None = None,
                   index: ModelIndex | None = None, known: Hashable | None = None) -> tuple[str, ...]:
    """Assign the planned tensors into the model: no copy unless a dtype, layout or device
    changes. Each tensor moves to ``device`` on its own, so no full copy of the checkpoint is
    ever held on the CPU on the way to a GPU. ``state`` is the model's ``state_dict(keep_vars=True)``
    when the caller already has it; ``index`` the model's index from its skeleton (no walk at all).
    Returns the model keys whose tensor holds NaN or Inf; raises ``IncompatibleCheckpointError`` for an
    integer tensor bound for a floating parameter."""
    if index is not None:
        return _assign_indexed(plan, tensors, device, index, known)
    target = state if state is not None else model.state_dict(keep_vars=True)
    assigned: dict[str, torch.Tensor] = {}
    values = _Values(known)
    for key, tensor, source, rule in _planned_tensors(plan, tensors):
        want = target[key]
        values.check(key, tensor, want.dtype, source, rule)
        dtype = want.dtype if tensor.dtype != want.dtype else None  # as load_state_dict's copy_: int64 counters too
        if dtype is not None or (device is not None and tensor.device != device):
            tensor = tensor.to(device=device, dtype=dtype)
        assigned[key] = tensor
    for key in plan.defaulted:
        zeros = target[key].new_zeros(()) if not target[key].is_meta else _zeros_like_meta(target[key])
        assigned[key] = zeros.to(device) if device is not None else zeros
    _assign(model, assigned)
    return values.nonfinite()


def _assign_indexed(plan: LoadPlan, tensors: Mapping[str, torch.Tensor], device: torch.device | None,
                    index: ModelIndex, known: Hashable | None = None) -> tuple[str, ...]:
    """``assign_planned`` for a model copied from a skeleton: each key's module and slot come from
    the skeleton's table (checked there to load as ``nn.Module`` does), so each tensor goes
    straight into its place, with no walk, no intermediate dictionary and no name parsing."""
    import torch
    import torch.nn as nn

    make, modules, slots, dtypes = torch.Tensor._make_subclass, index.module_list, index.slots, index.dtypes
    values = _Values(known)
    for key, tensor, source, rule in _planned_tensors(plan, tensors):
        want = dtypes[key]
        values.check(key, tensor, want, source, rule)
        dtype = want if tensor.dtype != want else None  # as load_state_dict's copy_: int64 counters too
        if dtype is not None or (device is not None and tensor.device != device):
            tensor = tensor.to(device=device, dtype=dtype)
        number, leaf, is_parameter = slots[key]
        module = modules[number]
        if is_parameter:
            old = module._parameters[leaf]
            assert old is not None  # planned keys come from the state dict, which holds no None parameter
            module._parameters[leaf] = make(nn.Parameter, tensor, old.requires_grad)
        else:
            module._buffers[leaf] = tensor
    for key in plan.defaulted:
        old = index.tensor(key)
        zeros = old.new_zeros(()) if not old.is_meta else _zeros_like_meta(old)
        number, leaf, _ = slots[key]
        modules[number]._buffers[leaf] = zeros.to(device) if device is not None else zeros
    return values.nonfinite()


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


def copy_planned(model: nn.Module, plan: LoadPlan, tensors: Mapping[str, torch.Tensor],
                 known: Hashable | None = None) -> tuple[str, ...]:
    """Copy planned tensors into an existing model in place (it may already be on a device);
    tensors still on ``meta`` (a model built without storage) take the checkpoint's tensor.
    Returns and refuses what ``assign_planned`` does (NaN/Inf keys; integers into floats)."""
    target = model.state_dict(keep_vars=True)
    on_meta: dict[str, torch.Tensor] = {}
    values = _Values(known)
    planned = list(_planned_tensors(plan, tensors))
    for key, tensor, source, rule in planned:  # every tensor checked before the user's model is touched
        values.check(key, tensor, target[key].dtype, source, rule)
    for key, tensor, _, _ in planned:
        want = target[key]
        if want.is_meta:
            on_meta[key] = tensor.to(want.dtype)
        else:
            want.copy_(tensor)
    for key in plan.defaulted:
        if target[key].is_meta:
            on_meta[key] = _zeros_like_meta(target[key])
        else:
            target[key].zero_()
    if on_meta:
        model.load_state_dict(on_meta, strict=False, assign=True)
    return values.nonfinite()


class _Values:
    """What placement sees in the values it places: floating tensors with NaN or Inf, and
    integer tensors bound for a floating parameter.

    Each floating tensor is summed (on its own device; the sums are read back together at the
    end: one wait for a GPU, not one per tensor). A tensor holding NaN or Inf always has a sum
    that is NaN or Inf; a finite tensor's sum is finite unless it overflows. So a finite sum
    clears a tensor exactly, and only a tensor whose sum is not finite is tested element by
    element (``isfinite().all()``, which costs about ten times a sum: 250 against 25 ms for a
    ResNet-50 here).

    ``known`` identifies the file the tensors were read from as it was read (``Checkpoint.identity``):
    its non-finite keys are remembered under it, so a repeated load of an unchanged file sums
    nothing (a tensor a rule converted is summed every time)."""

    def __init__(self, known: Hashable | None = None) -> None:
        self.keys: list[str] = []
        self.flags: list[torch.Tensor] = []
        self.tensors: list[torch.Tensor] = []
        self.sources: list[str | None] = []
        self.known = known
        self.checked, self.bad = _nonfinite_by_file.get(known, (frozenset(), frozenset()))
        self.found: list[str] = []

    def check(self, key: str, tensor: torch.Tensor, want: torch.dtype, source: str, rule: KeyRule | None) -> None:
        if tensor.dtype.is_floating_point:
            if tensor.is_meta:
                return
            if rule is None and source in self.checked:
                if source in self.bad:
                    self.found.append(key)
                return
            self.keys.append(key)
            self.tensors.append(tensor)
            self.sources.append(source if rule is None else None)
            self.flags.append(tensor.sum())
        elif want.is_floating_point and not getattr(rule, "casts_integers", False):
            from ..contract.errors import IncompatibleCheckpointError
            from ..contract.escape import printable

            if tensor.dtype.is_complex:  # a cast would drop the imaginary part: nothing like these weights
                raise IncompatibleCheckpointError(
                    f"checkpoint tensor {printable(source)} is {str(tensor.dtype).removeprefix('torch.')}, but model "
                    f"{printable(key)} is {str(want).removeprefix('torch.')}: a cast would drop the imaginary part, "
                    "so it was not loaded. The file is not this model's weights (a complex-valued network, or a "
                    "spectrum saved in their place); take the part you mean yourself (tensor.real) and load that "
                    "state dict.")
            raise IncompatibleCheckpointError(
                f"checkpoint tensor {printable(source)} is {str(tensor.dtype).removeprefix('torch.')}, but model "
                f"{printable(key)} is {str(want).removeprefix('torch.')}: cast, its values would be the stored "
                "integers (a quantized checkpoint's int8 codes, not the weights), so it was not loaded. Dequantize "
                "the checkpoint first (scale and zero point, with the tool that quantized it) and load that; if the "
                "integers are the values, cast them yourself (state[key] = state[key].float()) and load that state "
                "dict.")

    def nonfinite(self) -> tuple[str, ...]:
        """The keys whose tensor holds NaN or Inf."""
        import torch

        if not self.flags:
            return tuple(self.found)
        try:
            fine = torch.isfinite(torch.stack(self.flags)).tolist()
        except RuntimeError:  # sums on several devices, or of several dtypes
            fine = [bool(torch.isfinite(f)) for f in self.flags]
        bad = [i for i, ok in enumerate(fine) if not ok and not bool(torch.isfinite(self.tensors[i]).all())]
        if self.known is not None:
            checked = self.checked | {s for s in self.sources if s is not None}
            found = self.bad | {s for i in bad if (s := self.sources[i]) is not None}
            _nonfinite_by_file.put(self.known, (checked, found))
        return (*self.found, *(self.keys[i] for i in bad))


_nonfinite_by_file: ProcessCache[Hashable, tuple[frozenset[str], frozenset[str]]] = ProcessCache(
    "non-finite keys by file", 64,
    "the file's identity as it was read (Checkpoint.identity: path, device, inode, size, mtime_ns, ctime_ns, "
    "use_ema, trusted)")
"""File identity -> (its checkpoint keys checked, those holding NaN or Inf) (``_Values``)."""


def warn_nonfinite(keys: tuple[str, ...], what: str, stacklevel: int = 2) -> None:
    """A ``UserWarning`` that ``what`` loaded NaN or Inf values: how many tensors, the first keys."""
    if not keys:
        return
    import warnings

    from ..contract.escape import printable

    shown = ", ".join(printable(k) for k in keys[:5]) + (f", … (+{len(keys) - 5})" if len(keys) > 5 else "")
    warnings.warn(
        f"{printable(what)}: {len(keys)} loaded tensor{'s' if len(keys) != 1 else ''} hold NaN or Inf values "
        f"({shown}). They were loaded as they are: a model with them computes NaN. If that is not meant, the "
        "checkpoint is damaged (a diverged training run, a bad conversion): use another one, or overwrite those "
        "tensors after loading.", UserWarning, stacklevel=stacklevel + 1)


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
