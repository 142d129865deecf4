"""Find the zooadapt model inside the wrappers training code puts around it.

``torch.compile`` (``_orig_mod``), ``DataParallel``/``DistributedDataParallel`` (``module``)
and Fabric's ``_FabricModule`` (``_forward_module``) each prefix every parameter name, so a stage map
written for the model matches nothing on the wrapper: freezing "layer1-3" of a compiled model
used to freeze nothing, silently. FSDP2's ``fully_shard`` keeps the module itself (it swaps
its class in place), and a LightningModule holds the model as an attribute. Every zooadapt
function that reads stage names goes through :func:`unwrap` first, so they all see the model
the stage map was written for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..contract.errors import InvalidArgumentError

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["unwrap", "wrapper_chain"]

# wrapper class name -> the attribute holding the wrapped module. Matched by name (over the
# class's MRO) so that looking does not import torch._dynamo or lightning.
_WRAPPERS = {
    "OptimizedModule": "_orig_mod",  # torch.compile
    "DataParallel": "module",
    "DistributedDataParallel": "module",
    # lightning.fabric: the module its strategy runs (a DDP wrapper under DDP), then the model
    "_FabricModule": "_forward_module",
}


def _inner(model: object) -> object | None:
    for cls in type(model).__mro__:
        attr = _WRAPPERS.get(cls.__name__)
        if attr is not None:
            return getattr(model, attr, None)
    return None


def wrapper_chain(model: nn.Module) -> list[nn.Module]:
    """``model`` and every wrapper inside it, outermost first, ending with the wrapped model.

    ``torch.compile(DistributedDataParallel(model))`` gives ``[compiled, ddp, model]``.
    """
    chain = [model]
    while True:
        inner = _inner(chain[-1])
        if inner is None or any(inner is m for m in chain):
            return chain
        chain.append(inner)  # type: ignore[arg-type]


STAGES_ATTR = "_zooadapt_stages"
"""Attribute of a user's model: the stage map given for it once (``zooadapt.tuning.attached``)."""


def _has_info(module: object) -> bool:
    """A model zooadapt loaded (``model.zooadapt``) or one whose stage map it remembers."""
    # vars(), not getattr: OptimizedModule forwards unknown attributes to the model it wraps
    own = getattr(module, "__dict__", {})
    return "zooadapt" in own or STAGES_ATTR in own


def unwrap(model: nn.Module, *, search: bool = True) -> nn.Module:
    """The model zooadapt built, inside compile/DataParallel/DDP/Fabric wrappers.

    With ``search`` (default), a module that is not itself a zooadapt model but holds exactly
    one (a LightningModule with ``self.model = zooadapt.load(...)``, or a user's network whose
    stage map was given once: ``zooadapt.attach``) yields that one. A module
    that holds several is ambiguous: pass the one you mean. Any other module (or object) comes
    back as it is (after the wrappers are peeled), so foreign models with ``stages=`` keep working.
    """
    inner = wrapper_chain(model)[-1]
    if not search or _has_info(inner):
        return inner
    import torch.nn as nn

    if not isinstance(inner, nn.Module):
        return inner  # not a model at all: the caller says what it expected
    found = [(name, m) for name, m in inner.named_modules() if name and _has_info(m)]
    if not found:
        return inner
    if len(found) > 1:
        names = ", ".join(f"'{n}'" for n, _ in found)
        raise InvalidArgumentError(
            f"this {type(inner).__name__} holds several zooadapt models ({names}); pass the one you mean, "
            f"e.g. zooadapt.freeze(module.{found[0][0]}, ...)")
    return found[0][1]
