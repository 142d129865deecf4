"""FSDP2 (``torch.distributed.fsdp.fully_shard``) by stage, from a meta-device build.

The recipe (README, "Sharding with FSDP2"; tests/test_fsdp.py runs it on two CPU processes):

1. every rank builds the planned model on ``meta`` with its frozen stages (no tensor read);
2. :func:`fully_shard_stages` shards each stage of the family's stage map as one unit (one
   all-gather per stage in forward, as the stages run), then the root (head and the rest);
3. :func:`load_full_state_dict` allocates the shards and fills them from rank 0's full state
   dict (``set_model_state_dict(..., full_state_dict=True, broadcast_from_rank0=True)``), so only
   rank 0 reads the weights;
4. after training, :func:`save_sharded` gathers the shards on rank 0 and writes what
   ``zooadapt.save`` writes.

Frozen stages stay frozen: their parameters keep ``requires_grad=False`` through sharding, so
FSDP2 computes and reduce-scatters no gradient for them, and their BatchNorm layers stay in
eval mode. The stage map is the same one freezing and learning-rate groups read, so a unit
never straddles a frozen and a trainable stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..contract import errors
from ..contract.errors import InvalidArgumentError, ZooadaptError
from ..tuning.freezing import _stage_map
from ..tuning.wrappers import unwrap, wrapper_chain

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from ..contract.stages import StageMap

__all__ = ["fully_shard_stages", "load_full_state_dict", "save_sharded"]


def _stage_modules(model: nn.Module, smap: StageMap) -> list[tuple[str, list[nn.Module]]]:
    """Each stage with the modules its prefixes name (a prefix naming a bare parameter, such as a
    ViT's ``pos_embed``, is left to the root unit)."""
    import torch.nn as nn

    units = []
    for stage in smap.stages:
        modules = []
        for prefix in stage.prefixes:
            try:
                found = model.get_submodule(prefix)
            except AttributeError:
                continue
            if isinstance(found, nn.Module) and found is not model and any(True for _ in found.parameters()):
                modules.append(found)
        if modules:
            units.append((stage.name, modules))
    return units


def _require_process_group(call: str) -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise InvalidArgumentError(
            f"{call} is collective and needs torch.distributed initialised first: "
            "torch.distributed.init_process_group('nccl') on GPUs ('gloo' on CPUs), under torchrun or your launcher")


def fully_shard_stages(model: nn.Module, *, stages: StageMap | None = None, **fsdp_kwargs: Any) -> nn.Module:
    """Shard ``model`` with FSDP2: one ``fully_shard`` unit per stage, then the root.

    ``fsdp_kwargs`` go to every ``torch.distributed.fsdp.fully_shard`` call (``mesh``,
    ``reshard_after_forward``, ``mp_policy``, ``offload_policy``...). Works on a model built on
    ``meta`` (then call :func:`load_full_state_dict`) or on real tensors. Freeze before sharding:
    which parameters need gradients is part of what FSDP2 sets up. Given a module holding one
    zooadapt model (a LightningModule's ``configure_model``), that model is sharded and returned;
    the holder's own parameters are yours to shard. Returns the sharded model (FSDP2 shards in
    place; it becomes an ``FSDPModule`` of its own class).
    """
    from torch.distributed.fsdp import fully_shard

    _require_process_group("fully_shard_stages")
    if len(wrapper_chain(model)) > 1:
        raise InvalidArgumentError(
            f"fully_shard_stages needs the model itself, not a {type(model).__name__} around it; shard first, "
            "then compile or hand it to your trainer")
    inner = unwrap(model, search=stages is None)  # a LightningModule's zooadapt model; shard the rest yourself
    smap = _stage_map(inner, stages)
    for _name, modules in _stage_modules(inner, smap):
        fully_shard(modules[0] if len(modules) == 1 else modules, **fsdp_kwargs)
    fully_shard(inner, **fsdp_kwargs)
    return inner


def _device_of_mesh(model: nn.Module) -> torch.device:
    import torch

    for param in model.parameters():
        mesh = getattr(param, "device_mesh", None)
        if mesh is not None:
            kind = mesh.device_type
            if kind == "cpu":
                return torch.device("cpu")
            return torch.device(kind, torch.get_device_module(kind).current_device())
    return torch.device("cpu")


def load_full_state_dict(model: nn.Module, state_dict: Mapping[str, Any] | None, *, strict: bool = True,
                         device: str | torch.device | None = None) -> None:
    """Fill a sharded model from a full state dict that only rank 0 holds.

    Rank 0 passes the full state dict (``zooadapt.load(...).state_dict()``); the other ranks
    pass ``None`` (or ``{}``). A model still on ``meta`` is first allocated on ``device``
    (default: the device type of its FSDP mesh, the current accelerator for CUDA) with
    ``to_empty``; then torch's ``set_model_state_dict`` broadcasts each tensor from rank 0 and
    keeps every rank's shard. Collective: every rank must call it.
    """
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if state_dict is not None and not isinstance(state_dict, Mapping):
        raise InvalidArgumentError(
            f"state_dict={type(state_dict).__name__}: pass a mapping of tensors on rank 0 and None on the others")
    if not isinstance(strict, bool):
        raise InvalidArgumentError(f"strict={strict!r}: use True or False")
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise InvalidArgumentError(f"device={device!r}: not a torch device ({exc}); e.g. 'cuda', 'cpu'") from None
    inner = unwrap(model)
    if not isinstance(inner, torch.nn.Module):
        raise InvalidArgumentError(
            f"load_full_state_dict needs the sharded model (a torch.nn.Module), got {type(model).__name__}")
    on_meta = any(t.is_meta for t in (*inner.parameters(), *inner.buffers()))
    if on_meta:
        persistent = set(inner.state_dict(keep_vars=True))
        lost = [n for n, _ in inner.named_buffers() if n not in persistent]
        if lost:
            raise InvalidArgumentError(
                f"this model has buffers outside its state dict ({', '.join(lost[:3])}{'…' if len(lost) > 3 else ''}) "
                "that a meta build cannot fill and no checkpoint holds; build it on the CPU instead (pretrained=False),"
                " then fully_shard_stages and load_full_state_dict as usual")
    _require_process_group("load_full_state_dict")
    if on_meta:
        inner.to_empty(device=device if device is not None else _device_of_mesh(inner))
    set_model_state_dict(
        inner, dict(state_dict or {}),
        options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=strict))


def save_sharded(model: nn.Module, directory: Any, *, labels: Any = None) -> Any:
    """``zooadapt.save`` for a model sharded with FSDP2; collective: every rank calls it.

    The shards are gathered into one full state dict on rank 0 (on the CPU, torch's
    ``get_model_state_dict(..., full_state_dict=True, cpu_offload=True)``), and rank 0 writes
    the folder ``zooadapt.save`` writes, so ``zooadapt.load(directory)`` rebuilds an unsharded
    model with the same frozen stages. Returns the directory on rank 0 and None elsewhere; a
    failure on rank 0 is raised on every rank (no rank is left waiting).
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from ..loading.saving import save

    _require_process_group("save_sharded")
    inner = unwrap(model)
    full = get_model_state_dict(inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    written, failure = None, None
    outcome: list[Any] = [None]  # rank 0's (error class name, message), sent to every rank
    if dist.get_rank() == 0:
        # save() reads model.state_dict(); served from the gathered tensors for this one call
        inner.__dict__["state_dict"] = lambda *args, **kwargs: full
        try:
            written = save(inner, directory, labels=labels)
        except Exception as exc:  # must reach the broadcast below, or every other rank hangs
            failure = exc
            outcome = [(type(exc).__name__, str(exc))]
        finally:
            del inner.__dict__["state_dict"]
    dist.broadcast_object_list(outcome, src=0)
    if failure is not None:
        raise failure
    if outcome[0] is not None:
        kind, message = outcome[0]
        cls = getattr(errors, kind, None)
        if not (isinstance(cls, type) and issubclass(cls, ZooadaptError)):
            cls = ZooadaptError
        raise cls(f"rank 0 could not save the model: {message}")
    return written
