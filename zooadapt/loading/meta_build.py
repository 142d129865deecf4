"""Building an architecture without initialising its parameters, seen only by the building thread.

Every parameter of a pretrained backbone is about to be replaced by a checkpoint tensor (or, for a
new head, initialised afterwards), so random initialisation is wasted work: for ResNet-50 it is
most of ``timm.create_model``'s time. ``build_on_meta`` returns the family's architecture with
its parameters on the ``meta`` device (no storage, no values) and its buffers real and computed as
usual: some buffers are computed in ``__init__`` and never saved (timm's relative-position indices,
RoPE tables), so they must come from the constructor, not from the checkpoint.

How, without touching anything another thread can see: the build runs under a
``torch.overrides.TorchFunctionMode`` (torch keeps the mode stack per thread, like
``with torch.device("meta")``). While it is active, in this thread only, an initialiser applied to
an ``nn.Parameter`` returns at once: ``torch.nn.init``'s functions (which hand themselves to the
mode), the in-place tensor methods initialisers call (``normal_``, ``uniform_``, ``erfinv_``,
``mul_``…) and ``param.data`` (handed out as a meta stand-in, so ``weight.data.normal_()`` costs
nothing either). Buffers are plain tensors, so their initialisation runs unchanged. When the
constructor returns, each parameter is swapped for a meta parameter of the same shape, dtype and
``requires_grad`` (a parameter shared by two modules stays shared).

The module tree itself is the rest of the cost, and for small models most of it (EfficientNet-B0:
~300 modules). So the first build of an (architecture, options) pair is kept as a skeleton, and
later builds copy it (``_Skeleton.copy``): new module objects with the same attributes, fresh meta
parameters and copies of the buffers, which is several times cheaper than running the
constructor again (and than ``copy.deepcopy``, which remains the way for a tree with hooks or
attributes pointing into it). ``Family(copy_skeleton=False)``, or options that cannot be a
dictionary key, build every time.

A load goes further (``build_indexed_on_meta``): the copy comes with a ``ModelIndex`` (its modules
by name, its state dict's shapes and dtypes, known from the skeleton, so the pipeline does not walk
the tree again). Every copy has its own parameters and buffers from the start, so no two models
ever share a tensor whatever the pipeline does next. (Copies used to hold the skeleton's tensors
until placement and take their own after it; measured alternated, that saved 1-15% of a warm load,
``benchmarks/bench_sharing.py``, and a step that forgot to take them left two models sharing
tensors without an error: issue 21.)

Skeletons are kept in a ``ProcessCache`` (``zooadapt.clear_caches()`` empties it).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..contract.caches import ProcessCache

if TYPE_CHECKING:
    import torch.nn as nn

    from ..contract.family import Family
    from ..contract.stages import StageMap

__all__ = ["build_on_meta", "build_indexed_on_meta", "ModelIndex", "skip_parameter_init", "clear_skeletons",
           "stage_map_of", "keeping_torch_state", "build_family"]

log = logging.getLogger("zooadapt")

# torch.nn.init's functions and the in-place tensor methods initialisers call directly (timm's
# trunc_normal_: uniform_, erfinv_, mul_, add_, clamp_; dirac_: zero_ then __setitem__).
_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                   "sparse_")
_INPLACE_METHODS = ("normal_", "uniform_", "fill_", "zero_", "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_",
                    "copy_", "exponential_", "log_normal_", "cauchy_", "geometric_", "random_", "bernoulli_",
                    "__setitem__")


def _mode_class() -> type:
    """The mode class, defined on first use so that importing this module does not import torch."""
    import torch
    import torch.nn as nn
    from torch.overrides import TorchFunctionMode

    init_functions = frozenset(getattr(nn.init, n) for n in _INIT_FUNCTIONS if hasattr(nn.init, n))
    methods = frozenset(getattr(torch.Tensor, n) for n in _INPLACE_METHODS)
    # the getter is what `param.data` hands the mode; the setter, `param.data = ...` and `param.data *= x`.
    # torch's stubs type TensorBase.data as a tensor attribute; on the class it is the property's descriptor
    data_getter = torch._C.TensorBase.data.__get__  # type: ignore[attr-defined]  # noqa: SLF001
    data_setter = torch._C.TensorBase.data.__set__  # type: ignore[attr-defined]  # noqa: SLF001
    parameter = nn.Parameter

    def is_skipped(tensor: Any) -> bool:
        return isinstance(tensor, parameter) or (isinstance(tensor, torch.Tensor) and tensor.is_meta)

    class SkipParameterInit(TorchFunctionMode):
        """Initialisers applied to parameters (or meta tensors) return at once; all else runs."""

        def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                               kwargs: dict[str, Any] | None = None) -> Any:
            kwargs = kwargs or {}
            if func in methods:
                if args and is_skipped(args[0]):
                    return args[0]
            elif func in init_functions:
                target = args[0] if args else kwargs.get("tensor")
                if is_skipped(target):
                    return target
            elif func == data_getter:
                if args and isinstance(args[0], parameter):
                    return torch.empty_like(args[0], device="meta")
            elif func == data_setter:  # the meta stand-in handed out above, written back (ConViT's local_init)
                if len(args) == 2 and isinstance(args[0], parameter) and is_skipped(args[1]):
                    return None
            elif "out" in kwargs and is_skipped(kwargs["out"]):  # eye_: torch.eye(..., out=tensor)
                return kwargs["out"]
            return func(*args, **kwargs)

    return SkipParameterInit


_mode_cls: type | None = None


def skip_parameter_init() -> Any:
    """A context manager: in this thread, initialisers applied to parameters do nothing.

    A ``TorchFunctionMode``; other threads, and this one after the ``with`` block, see torch as it is.
    """
    global _mode_cls
    if _mode_cls is None:
        _mode_cls = _mode_class()
    return _mode_cls()


def _parameters_to_meta(model: nn.Module) -> None:
    import torch.nn as nn
    from torch.nn.parameter import UninitializedParameter

    done: dict[int, nn.Parameter] = {}
    for module in model.modules():
        own = module._parameters
        for name, param in own.items():
            if param is None or isinstance(param, UninitializedParameter):
                continue
            meta = done.get(id(param))
            if meta is None:
                meta = param if param.is_meta else nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
                done[id(param)] = meta
            own[name] = meta


# -- a build leaves torch as it found it -------------------------------------------------------


def _default_device_context() -> object:
    """What ``torch.set_default_device`` set in this thread (None: nothing), or, where torch keeps
    it elsewhere, the default device itself."""
    import torch

    holder = getattr(torch, "_GLOBAL_DEVICE_CONTEXT", None)
    if holder is None:
        return torch.get_default_device()
    return getattr(holder, "device_context", None)


def _restore_default_device(before: object) -> None:
    import torch

    if before is None:
        torch.set_default_device(None)
    elif isinstance(before, torch.device):
        torch.set_default_device(before)
    else:
        torch.set_default_device(before.device)  # type: ignore[attr-defined]


@contextlib.contextmanager
def keeping_torch_state(family: Family, arch: str, changes: list[str] | None = None) -> Iterator[None]:
    """Run a plugin's ``build`` and put back what it changed of torch's global settings: the
    default dtype (``torch.set_default_dtype``), grad mode (``torch.set_grad_enabled``) and the
    default device (``torch.set_default_device``), with a warning naming the plugin.

    A builder that sets float64 to build and forgets to set it back would otherwise make every
    tensor the user creates afterwards float64, far from the line that did it. Three reads before
    and after each build (a few microseconds); a change made and undone inside the build is none.
    ``changes``: where the changes found are listed too (a build that saw one is not kept).
    """
    import torch

    dtype, grad, device = torch.get_default_dtype(), torch.is_grad_enabled(), _default_device_context()
    try:
        yield
    finally:
        changed = []
        if torch.get_default_dtype() != dtype:
            changed.append(f"the default dtype (torch.set_default_dtype({torch.get_default_dtype()}), "
                           f"restored to {dtype})")
            torch.set_default_dtype(dtype)
        if torch.is_grad_enabled() != grad:
            changed.append(f"grad mode (torch.set_grad_enabled({torch.is_grad_enabled()}), restored to {grad})")
            torch.set_grad_enabled(grad)
        if _default_device_context() is not device:
            changed.append(f"the default device (torch.set_default_device({torch.get_default_device()}), restored)")
            _restore_default_device(device)
        if changes is not None:
            changes.extend(changed)
        if changed:
            log.warning("family %r (plugin %s) changed torch's global state while building %r: %s. zooadapt put it "
                        "back; a builder must leave global settings as it found them (use `with torch.device(...)`, "
                        "`with torch.no_grad()`, or pass dtype= to the layers instead). (If another thread of yours "
                        "set them meanwhile, that thread's setting was undone: torch's default dtype is one for the "
                        "whole process.)", family.name,
                        family.provider or "unknown", arch, "; ".join(changed))


def build_family(family: Family, arch: str, num_classes: int, kwargs: dict[str, Any],
                 changes: list[str] | None = None) -> nn.Module:
    """``family.build(arch, num_classes=..., **kwargs)``, leaving torch's global settings as they were
    (what was found changed is added to ``changes``). Options spelled ``"Class.attribute"`` are not
    the builder's: they are set on the model it returns (``module_settings``)."""
    from .module_settings import apply_module_settings, split_module_settings

    options, settings = split_module_settings(kwargs)
    with keeping_torch_state(family, arch, changes):
        model = family.build(arch, num_classes=num_classes, **options)
    if settings:
        apply_module_settings(model, settings, arch)
    return model


def _build(family: Family, arch: str, num_classes: int, kwargs: dict[str, Any],
           changes: list[str] | None = None) -> nn.Module:
    import torch.nn as nn

    with skip_parameter_init():
        model = build_family(family, arch, num_classes, kwargs, changes)
    if isinstance(model, nn.Module):  # anything else is returned as it is, for the caller to name
        _parameters_to_meta(model)
    return model


# -- skeletons: the first build of each (family, arch, num_classes, options), copied after --------

_SKELETONS_KEPT = 16
_CONTAINERS = (list, dict, OrderedDict, set)
_OWN = ("_parameters", "_buffers", "_modules")


def _nested(container: Any) -> bool:
    """Whether a container attribute holds containers (timm's ``feature_info``, a list of dicts):
    copied whole, else two models would share, and one's change reach, the inner ones."""
    items = container.values() if isinstance(container, dict) else container
    return any(type(item) in _CONTAINERS for item in items)


class _Skeleton:
    """A built model and a recipe for copying it: its modules in a flat list (a module reached
    twice is one entry), and per module which attributes are containers to copy (one level deep,
    or whole when they hold containers), where its parameters, buffers and children are."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.stages: StageMap | None = None
        """The family's stage map, asked once: every copy has the same architecture, so the same map."""
        self.deep = not all(_plain(m) for m in model.modules())
        self.modules: list[nn.Module] = []
        self._state: _StateLayout | None | bool = False  # False: not worked out yet
        self.params: list[nn.Parameter] = []
        self.recipe: list[tuple[type[nn.Module], tuple[tuple[str, bool], ...], tuple[tuple[str, int], ...],
                                tuple[str, ...], tuple[tuple[str, int], ...]]] = []
        if self.deep:
            return
        index: dict[int, int] = {}
        for module in model.modules():  # unique modules, root first (named_modules' order)
            index[id(module)] = len(self.modules)
            self.modules.append(module)
        params: dict[int, int] = {}
        for module in self.modules:
            own_params = []
            for name, p in module._parameters.items():
                if p is None:
                    own_params.append((name, -1))
                    continue
                if id(p) not in params:
                    params[id(p)] = len(self.params)
                    self.params.append(p)
                own_params.append((name, params[id(p)]))
            containers = tuple((n, _nested(v)) for n, v in module.__dict__.items()
                               if n not in _OWN and type(v) in _CONTAINERS)
            children = tuple((n, -1 if c is None else index[id(c)]) for n, c in module._modules.items())
            self.recipe.append((type(module), containers, tuple(own_params), tuple(module._buffers), children))

    def copy(self) -> nn.Module:
        """A new, independent module tree: new module objects with the same attributes (containers
        copied one level deep), new meta parameters (shared ones stay shared), copied buffers."""
        return self.copy_indexed()[0]

    def copy_indexed(self) -> tuple[nn.Module, ModelIndex | None]:
        """``copy()``, and the copy's ``ModelIndex`` (None for a tree copied by ``deepcopy``, or
        one whose modules save or load their state their own way)."""
        import torch
        import torch.nn as nn

        if self.deep:  # hooks or attributes that point into the tree: let deepcopy rewire them
            return copy.deepcopy(self.model), None
        layout = self.state_layout()
        make = torch.Tensor._make_subclass
        params = [make(nn.Parameter, p, p.requires_grad) for p in self.params]
        news = [cls.__new__(cls) for cls, *_ in self.recipe]
        set_dict = object.__setattr__
        for module, new, (_, containers, own_params, buffers, children) in zip(self.modules, news, self.recipe):
            # this loop runs for every module of every load: empty tables are not built by comprehensions
            state = module.__dict__.copy()
            for name, nested in containers:  # list, dict, OrderedDict or set (exactly): .copy() keeps the type
                state[name] = copy.deepcopy(state[name]) if nested else state[name].copy()
            state["_parameters"] = {n: None if i < 0 else params[i] for n, i in own_params} if own_params else {}
            if not buffers:
                state["_buffers"] = {}
            else:
                old = module._buffers
                state["_buffers"] = {n: None if (b := old[n]) is None else b.clone() for n in buffers}
            state["_modules"] = {n: None if i < 0 else news[i] for n, i in children} if children else {}
            set_dict(new, "__dict__", state)
        _copied_from[news[0]] = self
        if layout is None:
            return news[0], None
        return news[0], ModelIndex(news, layout)

    def state_layout(self) -> _StateLayout | None:
        """What every copy's state dict holds, worked out once from the skeleton (None when a
        module saves or loads its state its own way: then torch's walks are the truth)."""
        if self._state is False:
            self._state = _StateLayout.of(self.model)
        return self._state  # type: ignore[return-value]


class _StateLayout:
    """The state dict of an architecture whose modules all save and load theirs as ``nn.Module``
    does: key -> shape and dtype, and the keys that are parameters, in state-dict order."""

    def __init__(self, names: list[str], shapes: dict[str, tuple[int, ...]], dtypes: dict[str, Any],
                 parameters: tuple[str, ...], slots: dict[str, tuple[int, str, bool]],
                 batchnorms: tuple[int, ...]) -> None:
        self.names = names
        """The modules' names in ``named_modules()`` order: what the numbers below count."""
        self.slots = slots
        """State-dict key -> (module number, name in the module, is a parameter)."""
        self.parameter_keys = frozenset(k for k, (_, _, is_parameter) in slots.items() if is_parameter)
        """The state dict's keys that are parameters (a shared parameter under each of its names)."""
        self.batchnorms = batchnorms
        """Numbers of the BatchNorm modules (what freezing's BatchNorm policy looks at)."""
        self.shapes = types.MappingProxyType(shapes)
        self.dtypes = types.MappingProxyType(dtypes)
        self.parameters = parameters
        """``named_parameters()``'s names (a shared parameter once)."""

    @classmethod
    def of(cls, model: nn.Module) -> _StateLayout | None:
        import torch.nn as nn
        from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

        loading = (nn.Module._load_from_state_dict, _NormBase._load_from_state_dict)
        if (type(model).state_dict is not nn.Module.state_dict
                or type(model).load_state_dict is not nn.Module.load_state_dict):
            return None
        for module in model.modules():
            kind = type(module)
            if (kind._save_to_state_dict is not nn.Module._save_to_state_dict
                    or kind.get_extra_state is not nn.Module.get_extra_state
                    or kind._load_from_state_dict not in loading):
                return None
        state = model.state_dict(keep_vars=True)
        modules = list(model.named_modules())
        number = {name: i for i, (name, _) in enumerate(modules)}
        if any(k.rpartition(".")[0] not in number for k in state):  # a module reached under two names
            return None
        slots = {}
        for key, value in state.items():
            mname, _, leaf = key.rpartition(".")
            slots[key] = (number[mname], leaf, isinstance(value, nn.Parameter))
        return cls([name for name, _ in modules], {k: tuple(v.shape) for k, v in state.items()},
                   {k: v.dtype for k, v in state.items()}, tuple(n for n, _ in model.named_parameters()), slots,
                   tuple(i for i, (_, m) in enumerate(modules) if isinstance(m, _BatchNorm)))


class ModelIndex:
    """A model just copied from a skeleton, with what is known of it without walking it: its
    modules in order, and its state dict's shapes, dtypes, slots and parameter names (the
    skeleton's tables, shared and read-only).

    Loading walks a model's modules several times (the state dict for planning, placing the
    tensors, finding what is still on ``meta``); for a small model those walks are a good part of
    a load, and every copy of a skeleton has the same answers. Valid only until the tree is
    changed (a module replaced): the pipeline drops it when a build option changes the tree.
    """

    def __init__(self, modules: list[nn.Module], layout: _StateLayout) -> None:
        self.module_list = modules
        """The modules in ``named_modules()`` order (what ``slots`` number)."""
        self.names = layout.names
        self.slots = layout.slots
        self.shapes = layout.shapes
        self.dtypes = layout.dtypes
        self.parameters = layout.parameters
        self.parameter_keys = layout.parameter_keys
        self.batchnorms = layout.batchnorms

    def tensor(self, key: str) -> Any:
        """The parameter or buffer the state dict names ``key``."""
        number, leaf, is_parameter = self.slots[key]
        module = self.module_list[number]
        return module._parameters[leaf] if is_parameter else module._buffers[leaf]

    def named(self, numbers: Iterable[int]) -> list[tuple[str, nn.Module]]:
        """(name, module) of the modules with these numbers, as ``named_modules()`` gives them."""
        return [(self.names[i], self.module_list[i]) for i in numbers]


def _refers_to_tree(value: Any, tree: tuple[type, ...]) -> bool:
    """Whether ``value`` is or holds a module or a tensor (``tree``), or is a method bound to a module."""
    if isinstance(value, tree):
        return True
    if isinstance(value, types.MethodType):
        return isinstance(value.__self__, tree[0])
    if isinstance(value, functools.partial):
        return any(_refers_to_tree(a, tree) for a in (*value.args, *value.keywords.values()))
    return False


_ATOMS = frozenset({bool, int, float, str, type(None)})
"""Attribute types that never refer to anything (most of a module's attributes: ``training``,
``in_channels``, ``eps``...): looked at no further."""


def _plain(module: nn.Module) -> bool:
    """True when copying the module's attribute dictionary one level deep makes an independent
    module: no hooks (they may be bound to the module) and no attribute outside ``_parameters``,
    ``_buffers`` and ``_modules`` that holds a module or a tensor, and not compiled by TorchScript.
    Otherwise ``copy.deepcopy``."""
    import torch
    import torch.nn as nn

    if isinstance(module, torch.jit.ScriptModule):
        return False
    tree = (nn.Module, torch.Tensor)
    for name, value in module.__dict__.items():
        if name in _OWN:
            continue
        if "hook" in name and value:
            return False
        if type(value) in _ATOMS:
            continue
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple, set)) else (
            value,)
        if any(type(item) not in _ATOMS and _refers_to_tree(item, tree) for item in items):
            return False
    return True


_skeletons: ProcessCache[Any, _Skeleton] = ProcessCache(
    "skeletons", _SKELETONS_KEPT, "the family (name, build function, stages, its own build settings), architecture, "
    "class count, build options with their types, and torch's default dtype, default device and inference mode")
"""The first build of each (family, architecture, options), copied by later builds."""
_copied_from: weakref.WeakKeyDictionary[nn.Module, _Skeleton] = weakref.WeakKeyDictionary()
"""A model ``build_on_meta`` copied -> its skeleton (while the model lives)."""


def stage_map_of(family: Family, model: nn.Module, check: Callable[[StageMap], None] | None = None) -> StageMap:
    """``family.stage_map(model)``, asked once per kept skeleton: a stage map describes an
    architecture, and every copy of a skeleton is the same one. The shared map is immutable,
    and its lookups (``stage_of``, memoised inside it) stay warm from one load to the next.
    ``check(map)`` runs when the map is asked for: once per skeleton (it may raise)."""
    skeleton = _copied_from.get(model)
    if skeleton is None:
        smap = family.stage_map(model)
        if check is not None:
            check(smap)
        return smap
    if skeleton.stages is None:
        smap = family.stage_map(model)
        if check is not None:
            check(smap)
        skeleton.stages = smap
    return skeleton.stages


def _key(family: Family, arch: str, num_classes: int, kwargs: dict[str, Any]) -> Any:
    """Everything a build's result depends on beyond the family's code: the family (its build
    function itself, not its id, which a new function could reuse; its stages, which the
    skeleton's stage map is asked from), the architecture, class count and options (each with
    its type: ``img_size=160.0`` is refused where ``160`` builds, ``True`` is not ``1``), and
    the process-wide settings a build reads: torch's default dtype and device (the parameters
    and the buffers a build computes take them), inference mode (tensors made under it are
    inference tensors, which no later load may make trainable), and the family's own
    (``Family.build_settings``: timm's fused attention, exportable and scriptable flags)."""
    import torch

    settings = family.build_settings() if family.build_settings is not None else None
    options = tuple(sorted((k, _typed(v)) for k, v in kwargs.items()))
    key = (family.name, family.build, _Same(family.stages), arch, num_classes, options, settings,
           torch.get_default_dtype(), str(torch.get_default_device()), torch.is_inference_mode_enabled())
    try:
        hash(key)
    except TypeError:  # an option that is not hashable (a module, a list): build every time
        return None
    return key


class _Same:
    """A key part equal only to the very same object (a ``StageMap`` holds a dict, so it has no
    hash of its own); held, so its id cannot pass to another object while the key lives."""

    __slots__ = ("held",)

    def __init__(self, held: object) -> None:
        self.held = held

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.held is self.held

    def __hash__(self) -> int:
        return id(self.held)


def _typed(value: Any) -> Any:
    """``value`` with the type of each part beside it, so that equal values of other types
    (``160`` and ``160.0``, ``1`` and ``True``) are other keys. A mutable value stays as it is,
    so the key has no hash (a model may keep the caller's list, which may change later: such
    builds are never kept)."""
    if isinstance(value, tuple):
        return (type(value), tuple(_typed(v) for v in value))
    if isinstance(value, frozenset):
        return (frozenset, frozenset(_typed(v) for v in value))
    if isinstance(value, (list, dict, set)):
        return value
    return (type(value), value)


def clear_skeletons() -> None:
    """Forget the kept skeletons (after a plugin's architecture changed in a running process);
    ``zooadapt.clear_caches()`` does this and empties every other cache."""
    _skeletons.clear()


def build_on_meta(family: Family, arch: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """The architecture with parameters on ``meta`` (no allocation, no initialisation) and real
    buffers, built from a kept skeleton when this family, architecture, class count and options
    were built before in this process."""
    return _build_on_meta(family, arch, num_classes, kwargs)[0]


def build_indexed_on_meta(family: Family, arch: str, num_classes: int, **kwargs: Any
                          ) -> tuple[nn.Module, ModelIndex | None]:
    """``build_on_meta``, and the model's ``ModelIndex`` when it was copied from a skeleton (the
    model owns all its parameters and buffers either way)."""
    return _build_on_meta(family, arch, num_classes, kwargs)


def _build_on_meta(family: Family, arch: str, num_classes: int, kwargs: dict[str, Any]
                   ) -> tuple[nn.Module, ModelIndex | None]:
    import torch.nn as nn

    key = _key(family, arch, num_classes, kwargs) if family.copy_skeleton else None
    if key is None:
        return _build(family, arch, num_classes, kwargs), None
    skeleton = _skeletons.get(key)
    if skeleton is None:
        changes: list[str] = []
        model = _build(family, arch, num_classes, kwargs, changes)
        if changes or not isinstance(model, nn.Module) or _key(family, arch, num_classes, kwargs) != key:
            # a setting changed while it was built (by the builder, or another thread setting the
            # default dtype): the model may mix both, so it is not kept as the skeleton of either
            return model, None
        skeleton = _skeletons.put(key, _Skeleton(model))
    return skeleton.copy_indexed()
