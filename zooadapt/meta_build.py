"""Building an architecture without allocating or initialising its parameters.

Every parameter of a pretrained backbone is about to be replaced by a checkpoint tensor (or,
for a new head, initialised afterwards), so the build puts parameters on ``meta`` and skips
initialisers. Everything that makes that happen lives here, so it can be replaced in one place.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch.nn as nn

    from .family import Family

__all__ = ["build_on_meta"]


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


_SKIPPED_INITS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                  "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
                  "sparse_")
# In-place tensor methods initialisers call directly (timm's trunc_normal_: uniform_, erfinv_, mul_, add_, clamp_).
_SKIPPED_METHODS = ("normal_", "uniform_", "fill_", "zero_", "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_",
                    "copy_", "exponential_", "log_normal_", "cauchy_", "geometric_", "random_", "bernoulli_")
_init_patch_users = 0
_original_inits: dict[str, Any] = {}
_original_methods: dict[str, Any] = {}


def _meta_noop(original: Any) -> Any:
    def init(tensor: Any, *args: Any, **kwargs: Any) -> Any:
        return tensor if tensor.is_meta else original(tensor, *args, **kwargs)

    init.__wrapped__ = original  # type: ignore[attr-defined]
    return init


@contextlib.contextmanager
def _skip_init_on_meta() -> Iterator[None]:
    """Make initialisers return at once on ``meta`` tensors.

    Meta tensors hold no values, yet their in-place kernels (``normal_``, ``uniform_``,
    ``erfinv_``…) run shape logic in Python and cost more than building the modules
    (ResNet-50: 29 -> 9 ms; timm ConvNeXt/ViT: ~6x less). ``torch.nn.init``'s functions and the
    in-place tensor methods initialisers call are wrapped while a build runs. The wrappers are
    process-wide but return early only for meta tensors, which hold no values, so no result
    anywhere changes (another thread pays a Python call per such method for those
    milliseconds). Real tensors (buffers) are initialised as usual.
    """
    import torch
    import torch.nn as nn

    global _init_patch_users
    with _patch_lock:
        if _init_patch_users == 0:
            for name in _SKIPPED_INITS:
                if hasattr(nn.init, name):
                    _original_inits[name] = getattr(nn.init, name)
                    setattr(nn.init, name, _meta_noop(_original_inits[name]))
            for name in _SKIPPED_METHODS:
                _original_methods[name] = torch.Tensor.__dict__.get(name)  # None: inherited from TensorBase
                setattr(torch.Tensor, name, _meta_noop(getattr(torch.Tensor, name)))
        _init_patch_users += 1
    try:
        yield
    finally:
        with _patch_lock:
            _init_patch_users -= 1
            if _init_patch_users == 0:
                for name, original in _original_inits.items():
                    setattr(nn.init, name, original)
                for name, method in _original_methods.items():
                    if method is None:
                        delattr(torch.Tensor, name)
                    else:
                        setattr(torch.Tensor, name, method)
                _original_inits.clear()
                _original_methods.clear()


def build_on_meta(family: Family, arch: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """The architecture with parameters on ``meta`` (no allocation, no initialisation)."""
    with _parameters_on_meta(), _skip_init_on_meta():
        return family.build(arch, num_classes=num_classes, **kwargs)
