"""Data-parallel training of a model with frozen stages: SyncBatchNorm and DDP after unfreezing.

Two torch behaviours undo a freeze without a word, and this module is where zooadapt meets them:

* ``SyncBatchNorm.convert_sync_batchnorm`` rebuilds every BatchNorm layer as a plain
  ``SyncBatchNorm``, so the frozen ones (which stay in eval mode) become training ones again.
  :func:`convert_sync_batchnorm` converts and then restores the frozen policy.
* ``DistributedDataParallel`` registers its gradient hooks on the parameters that require grad
  *when it is built*. A stage unfrozen later trains on each rank's own gradients and the ranks
  drift apart (measured: tests/test_parallel_ddp.py). :func:`rewrap_ddp` builds a new wrapper
  with the same settings after ``unfreeze``; the parameters, and so the optimizer, are the same.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from ..contract.errors import InvalidArgumentError
from .freezing import _BN_RECORD, _refreeze_bn
from .wrappers import unwrap, wrapper_chain

if TYPE_CHECKING:
    import torch.nn as nn
    from torch.nn.parallel import DistributedDataParallel

__all__ = ["convert_sync_batchnorm", "rewrap_ddp"]


def convert_sync_batchnorm(model: nn.Module, process_group: Any = None) -> nn.Module:
    """``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` that keeps frozen stages frozen.

    Trainable stages get ``SyncBatchNorm`` (statistics synchronised across ranks); BatchNorm
    layers zooadapt froze become ``FrozenSyncBatchNorm``: eval mode whatever ``train()`` says,
    statistics fixed, parameters still ``requires_grad=False`` (the same tensors are kept).
    Call it before wrapping in ``DistributedDataParallel``; it returns the model (a new object
    only if ``model`` itself is a BatchNorm layer, as torch's does).
    """
    import torch

    chain = wrapper_chain(model)
    if any(type(m).__name__ == "DistributedDataParallel" for m in chain):
        raise InvalidArgumentError(
            "convert_sync_batchnorm on a DistributedDataParallel wrapper: DDP has already hooked the old layers. "
            "Convert first, then wrap: "
            "ddp = DistributedDataParallel(zooadapt.distributed.convert_sync_batchnorm(model))")
    if not isinstance(model, torch.nn.Module):
        raise InvalidArgumentError(f"convert_sync_batchnorm needs a torch.nn.Module, not {type(model).__name__}")
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group)
    inner = unwrap(converted)
    _refreeze_bn(inner)
    if converted is not model and _BN_RECORD in vars(model):  # the root itself was a BatchNorm layer
        converted.__dict__[_BN_RECORD] = vars(model)[_BN_RECORD]
    return converted


# settings DistributedDataParallel keeps under the name of its constructor argument
_DDP_SETTINGS = ("device_ids", "output_device", "dim", "process_group", "find_unused_parameters",
                 "gradient_as_bucket_view", "static_graph", "mixed_precision", "skip_all_reduce_unused_params",
                 "batched_grad_copy")


def _ddp_settings(ddp: DistributedDataParallel) -> dict[str, Any]:
    """The constructor arguments ``ddp`` was built with, as far as it records them.

    Only arguments this torch's ``DistributedDataParallel`` accepts are returned, so the copy
    follows torch's renames (``broadcast_buffers`` became ``forward_sync_buffers`` in 2.14)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    accepted = inspect.signature(DDP.__init__).parameters
    settings = {k: getattr(ddp, k) for k in _DDP_SETTINGS if k in accepted and hasattr(ddp, k)}
    if "forward_sync_buffers" in accepted and hasattr(ddp, "forward_sync_buffers"):
        settings["forward_sync_buffers"] = ddp.forward_sync_buffers
    elif hasattr(ddp, "broadcast_buffers"):
        settings["broadcast_buffers"] = ddp.broadcast_buffers
    if "bucket_cap_mb" in accepted and hasattr(ddp, "bucket_bytes_cap"):
        settings["bucket_cap_mb"] = ddp.bucket_bytes_cap / (1024 * 1024)
    return settings


def rewrap_ddp(ddp: DistributedDataParallel, **overrides: Any) -> DistributedDataParallel:
    """A new ``DistributedDataParallel`` around ``ddp.module``, with the same settings, after ``unfreeze``.

    DDP hooks only the parameters trainable when it is built, so after
    ``zooadapt.unfreeze(ddp, "layer4")`` call ``ddp = zooadapt.distributed.rewrap_ddp(ddp)`` on every rank
    (it is a collective, like building DDP) before the next forward. The parameters are the
    same tensors, so the optimizer (best built with ``param_groups(..., include_frozen=True)``)
    and its schedulers carry on unchanged. ``overrides`` replace settings (any DDP argument).
    Communication hooks registered on the old wrapper must be registered again. The old
    wrapper's gradient hooks are removed; do not use it any more.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    if not isinstance(ddp, DDP):
        raise InvalidArgumentError(
            f"rewrap_ddp needs the DistributedDataParallel wrapper, not {type(ddp).__name__}; to wrap a model the "
            "first time use DistributedDataParallel(model)")
    accepted = inspect.signature(DDP.__init__).parameters
    unknown = sorted(k for k in overrides if k not in accepted or k == "module")
    if unknown:
        raise InvalidArgumentError(
            f"rewrap_ddp: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a DistributedDataParallel "
            "argument")
    settings = {**_ddp_settings(ddp), **overrides}
    remove = getattr(ddp, "_remove_autograd_hooks", None)
    if callable(remove):
        remove()  # its reducer would otherwise keep (idle) hooks on the parameters
    return DDP(ddp.module, **settings)

