"""What a family's build must have given, checked where a plugin's mistake would otherwise surface
as the user's: a head that ignores ``num_classes``, a stage map naming modules the model lacks,
lazy parameters, a model left on ``meta``.

``zooadapt.testing.check_family`` checks all of this and more for a plugin's author; ``load``
checks these few, once per architecture a process keeps (``meta_build.stage_map_of``), because
each one otherwise gives a wrong model without a word (a 1000-way head for ``num_classes=3``, a
``freeze=`` that freezes nothing) or a raw torch error blamed on nobody.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch.nn as nn

    from ..contract.stages import StageMap

__all__ = ["build_problem"]


def build_problem(model: nn.Module, smap: StageMap, num_classes: int | None, *, on_meta: bool) -> str | None:
    """What is wrong with a freshly built ``model`` and its stage map (None: nothing), in words
    that finish "the family's plugin ... while building"."""
    from torch.nn.parameter import UninitializedParameter

    names = {name for name, _ in model.named_modules()}
    state = model.state_dict(keep_vars=True)
    lazy = next((k for k, v in state.items() if isinstance(v, UninitializedParameter)), None)
    if lazy is not None:
        return (f"built a lazy module ({lazy!r} has no shape until a first forward), which zooadapt cannot plan a "
                "checkpoint into; build the eager layer (nn.Linear, not nn.LazyLinear), or run one forward in build")
    if not on_meta:
        on = next((k for k, v in state.items() if v.is_meta), None)
        if on is not None:
            return (f"returned a model with tensors on 'meta' ({on!r}) when real weights were asked for; build on "
                    "the default device (zooadapt builds on meta itself where it needs to)")
    if smap.head:
        if smap.head not in names:
            return f"declared the head {smap.head!r}, which names no module of the built {type(model).__name__}"
        head = model.get_submodule(smap.head)
        weights = [p for p in head.parameters() if p.ndim >= 2]
        if num_classes and weights and not any(p.shape[0] == num_classes for p in weights):
            shapes = ", ".join(str(list(p.shape)) for p in weights[:3])
            return (f"ignored num_classes={num_classes}: its head {smap.head!r} ({type(head).__name__}, weights "
                    f"{shapes}) has no layer of {num_classes} outputs")
    keys = list(state)
    for stage in smap.stages:
        for prefix in stage.prefixes:
            if prefix and prefix not in names and not any(k == prefix or k.startswith(prefix + ".") for k in keys):
                return (f"declared stage {stage.name!r} over {prefix!r}, which names no module or tensor of the built "
                        f"{type(model).__name__}")
    return None
