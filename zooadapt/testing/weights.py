"""Reproducible stand-ins for pretrained weights, in the real key layouts.

Real checkpoints cannot be downloaded in tests; seeded random tensors with the same keys,
shapes and dtypes exercise every code path, and bit-exact comparisons stay meaningful.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

__all__ = ["seeded_state_dict", "torchvision_state_dict", "safetensors_bytes"]


def seeded_state_dict(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors for every state-dict entry of ``model`` (which may live on ``meta``).

    Running variances are positive, integer buffers (``num_batches_tracked``) are zero. A tensor
    the model holds under several names (a tied weight) gets one value, shared by its names, as
    ``state_dict()`` gives it.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    made: dict[int, torch.Tensor] = {}
    for key, ref in model.state_dict(keep_vars=True).items():
        if id(ref) in made:
            out[key] = made[id(ref)]
            continue
        if not ref.dtype.is_floating_point:
            out[key] = torch.zeros(ref.shape, dtype=ref.dtype)
        elif key.endswith("running_var"):
            out[key] = torch.rand(ref.shape, generator=gen, dtype=ref.dtype) + 0.5
        else:
            out[key] = torch.randn(ref.shape, generator=gen, dtype=ref.dtype) * 0.05
        made[id(ref)] = out[key]
    return out


def torchvision_state_dict(arch: str, seed: int = 0, **kwargs: object) -> dict[str, torch.Tensor]:
    """Seeded weights in the layout of ``torchvision.models.<arch>()`` (e.g. ``"resnet34"``)."""
    import torch
    import torchvision.models as tvm

    with torch.device("meta"):
        model = getattr(tvm, arch)(weights=None, **kwargs)
    return seeded_state_dict(model, seed)


def safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})
