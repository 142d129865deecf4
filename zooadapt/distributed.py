"""Training on several devices with a zooadapt model: DDP, SyncBatchNorm, FSDP2, wrappers.

Freezing changes what DDP must synchronise and which BatchNorm layers may update, so the usual
conversions need zooadapt's versions: ``convert_sync_batchnorm`` keeps frozen BatchNorm frozen,
``rewrap_ddp`` re-wraps after stages are unfrozen, ``fully_shard_stages`` shards by stage and
``save_sharded``/``load_full_state_dict`` write and read FSDP2's sharded state. ``unwrap`` and
``wrapper_chain`` see through DDP, FSDP, DataParallel and ``torch.compile``.
"""

from __future__ import annotations

from .integrations.fsdp import fully_shard_stages, load_full_state_dict, save_sharded
from .tuning.freezing import BatchNormPolicyWarning, UnsyncedGradientsWarning, check_batchnorm_policy
from .tuning.parallel import convert_sync_batchnorm, rewrap_ddp
from .tuning.wrappers import unwrap, wrapper_chain

__all__ = ["convert_sync_batchnorm", "rewrap_ddp", "fully_shard_stages", "load_full_state_dict", "save_sharded",
           "unwrap", "wrapper_chain", "check_batchnorm_policy", "BatchNormPolicyWarning", "UnsyncedGradientsWarning"]
