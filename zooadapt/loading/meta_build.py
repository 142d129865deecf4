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
"""

from __future__ import annotations

import copy
import functools
import threading
import types
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn

    from ..contract.family import Family

__all__ = ["build_on_meta", "skip_parameter_init", "clear_skeletons"]

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
    data_getter = torch._C.TensorBase.data.__get__  # noqa: SLF001  (what `param.data` hands the mode)
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


def _build(family: Family, arch: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    with skip_parameter_init():
        model = family.build(arch, num_classes=num_classes, **kwargs)
    _parameters_to_meta(model)
    return model


# -- skeletons: the first build of each (family, arch, num_classes, options), copied after --------

_SKELETONS_KEPT = 16
_CONTAINERS = (list, dict, OrderedDict, set)
_OWN = ("_parameters", "_buffers", "_modules")


class _Skeleton:
    """A built model and a recipe for copying it: its modules in a flat list (a module reached
    twice is one entry), and per module which attributes are containers to copy one level deep,
    where its parameters, buffers and children are."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.deep = not all(_plain(m) for m in model.modules())
        self.modules: list[nn.Module] = []
        self.params: list[nn.Parameter] = []
        self.recipe: list[tuple[type, tuple[str, ...], tuple[tuple[str, int], ...], tuple[str, ...],
                                tuple[tuple[str, int], ...]]] = []
        if self.deep:
            return
        index: dict[int, int] = {}
        for module in model.modules():  # unique modules, root first
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
            containers = tuple(n for n, v in module.__dict__.items() if n not in _OWN and type(v) in _CONTAINERS)
            children = tuple((n, -1 if c is None else index[id(c)]) for n, c in module._modules.items())
            self.recipe.append((type(module), containers, tuple(own_params), tuple(module._buffers), children))

    def copy(self) -> nn.Module:
        """A new, independent module tree: new module objects with the same attributes (containers
        copied one level deep), new meta parameters (shared ones stay shared), copied buffers."""
        import torch
        import torch.nn as nn

        if self.deep:  # hooks or attributes that point into the tree: let deepcopy rewire them
            return copy.deepcopy(self.model)
        make = torch.Tensor._make_subclass
        params = [make(nn.Parameter, p, p.requires_grad) for p in self.params]
        news = [cls.__new__(cls) for cls, *_ in self.recipe]
        for module, new, (_, containers, own_params, buffers, children) in zip(self.modules, news, self.recipe):
            state = module.__dict__.copy()
            for name in containers:
                value = state[name]
                state[name] = type(value)(value)
            state["_parameters"] = {n: None if i < 0 else params[i] for n, i in own_params}
            old = module._buffers
            state["_buffers"] = {n: None if old[n] is None else old[n].clone() for n in buffers}
            state["_modules"] = {n: None if i < 0 else news[i] for n, i in children}
            object.__setattr__(new, "__dict__", state)
        return news[0]


def _refers_to_tree(value: Any) -> bool:
    import torch
    import torch.nn as nn

    if isinstance(value, (nn.Module, torch.Tensor)):
        return True
    if isinstance(value, types.MethodType):
        return isinstance(value.__self__, nn.Module)
    if isinstance(value, functools.partial):
        return any(_refers_to_tree(a) for a in (*value.args, *value.keywords.values()))
    return False


def _plain(module: nn.Module) -> bool:
    """True when copying the module's attribute dictionary one level deep makes an independent
    module: no hooks (they may be bound to the module) and no attribute outside ``_parameters``,
    ``_buffers`` and ``_modules`` that holds a module or a tensor, and not compiled by TorchScript.
    Otherwise ``copy.deepcopy``."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return False
    for name, value in module.__dict__.items():
        if name in _OWN:
            continue
        if "hook" in name and value:
            return False
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple, set)) else (
            value,)
        if any(_refers_to_tree(item) for item in items):
            return False
    return True


_skeletons: OrderedDict[Any, _Skeleton] = OrderedDict()
_skeleton_lock = threading.Lock()


def _key(family: Family, arch: str, num_classes: int, kwargs: dict[str, Any]) -> Any:
    key = (family.name, id(family.build), arch, num_classes, tuple(sorted(kwargs.items())))
    try:
        hash(key)
    except TypeError:  # an option that is not hashable (a module, a list): build every time
        return None
    return key


def clear_skeletons() -> None:
    """Forget the kept skeletons (after a plugin's architecture changed in a running process)."""
    with _skeleton_lock:
        _skeletons.clear()


def build_on_meta(family: Family, arch: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """The architecture with parameters on ``meta`` (no allocation, no initialisation) and real
    buffers, built from a kept skeleton when this family, architecture, class count and options
    were built before in this process."""
    key = _key(family, arch, num_classes, kwargs) if family.copy_skeleton else None
    if key is None:
        return _build(family, arch, num_classes, kwargs)
    with _skeleton_lock:
        skeleton = _skeletons.get(key)
        if skeleton is not None:
            _skeletons.move_to_end(key)
    if skeleton is None:
        skeleton = _Skeleton(_build(family, arch, num_classes, kwargs))
        with _skeleton_lock:
            _skeletons[key] = skeleton
            while len(_skeletons) > _SKELETONS_KEPT:
                _skeletons.popitem(last=False)
    return skeleton.copy()
