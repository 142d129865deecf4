"""One download per node under ``torch.distributed``, the other processes wait and read the cache.

When a process group is initialised, ``load`` becomes a collective: every rank must call
it. The process with local rank 0 on each node (``LOCAL_RANK`` as set by torchrun, else
the group rank) fetches; every rank then exchanges the outcome with
``all_gather_object``, which doubles as the barrier. The others then fetch the exact
commit their node's leader got (a pure cache read, no request to the Hub, and no chance
of seeing a newer commit pushed in between), or raise the leader's error instead of
hanging or each hammering the Hub. With NCCL, set the CUDA device before loading, as
``all_gather_object`` requires.

``load(..., distributed=False)`` or ``ZOOADAPT_DISTRIBUTED=0`` turns this off (e.g. when only
rank 0 loads).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable

from ..contract import errors
from ..contract.errors import WeightSourceError, ZooadaptError
from .fetched import FetchedWeights

__all__ = ["is_active", "local_rank", "fetch_once"]

Fetch = Callable[[str | None], FetchedWeights]
"""A fetch that takes an optional commit to pin (followers pass their leader's)."""


def is_active(enabled: bool | None = None) -> bool:
    """True when ranks should coordinate: a process group of more than one process is initialised."""
    if enabled is False or os.environ.get("ZOOADAPT_DISTRIBUTED", "").lower() in ("0", "off", "false", "no"):
        return False
    if "torch.distributed" not in sys.modules:  # nobody can have initialised a group without importing it
        return False
    import torch.distributed as dist

    return bool(dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def local_rank() -> int:
    """This process's rank on its node: ``LOCAL_RANK`` (torchrun, SLURM wrappers), else the group rank."""
    value = os.environ.get("LOCAL_RANK")
    if value is not None and value.strip().lstrip("-").isdigit():
        return int(value)
    import torch.distributed as dist

    return dist.get_rank()


def _as_error(kind: str, message: str) -> ZooadaptError:
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, ZooadaptError)):
        cls = WeightSourceError
    return cls(f"the process downloading for this node (local rank 0) failed: {message}")


def fetch_once(fetch: Fetch, *, enabled: bool | None = None) -> FetchedWeights:
    """Run ``fetch`` on one process per node first; the others wait, then read what it cached."""
    if not is_active(enabled):
        return fetch(None)
    import torch.distributed as dist

    leader = local_rank() == 0
    result: FetchedWeights | None = None
    failure: Exception | None = None
    outcome: tuple[str, str | None, str | None] | None = None  # ("ok", commit, None) or ("error", kind, message)
    if leader:
        try:
            result = fetch(None)
            outcome = ("ok", result.commit, None)
        except Exception as exc:  # must reach the gather below, or every other rank hangs
            failure = exc
            outcome = ("error", type(exc).__name__, str(exc))
    host = socket.gethostname()
    gathered: list[tuple[str, bool, tuple[str, str | None, str | None] | None] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (host, leader, outcome))
    if leader:
        if failure is not None:
            raise failure
        assert result is not None
        return result
    mine = next((g[2] for g in gathered if g and g[0] == host and g[1]), None)
    if mine is None:  # no local rank 0 on this host (LOCAL_RANK unset on a multi-node job): fetch directly
        return fetch(None)
    status, first, second = mine
    if status == "error":
        raise _as_error(first or "WeightSourceError", second or "")
    return fetch(first)
