"""zooadapt: pretrained vision backbones ready to fine-tune, in one call.

    model = zooadapt.load("resnet34", num_classes=5, freeze="layer1-3")
    optimizer = torch.optim.SGD(zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2), momentum=0.9)

Importing zooadapt is cheap: torch, the Hub client and the plugins load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .contract.errors import *  # noqa: F403  (every error class; listed in errors.__all__)
from .contract.errors import __all__ as _error_names
from .contract.family import DataConfig, Family, ModelEntry, WeightSource
from .contract.hookspecs import hookimpl
from .contract.stages import Stage, StageMap

__version__ = "0.1.0"

# Public names that need torch (or the Hub client) live in submodules imported on first use.
_LAZY: dict[str, str] = {
    "load": "loading.loader",
    "load_weights": "loading.loader",
    "list_models": "host.registry",
    "get_registry": "host.registry",
    "param_groups": "tuning.optim",
    "format_param_groups": "tuning.optim",
    "add_param_group": "tuning.optim",
    "freeze": "tuning.freezing",
    "unfreeze": "tuning.freezing",
    "frozen_stages": "tuning.freezing",
    "check_batchnorm_policy": "tuning.freezing", "BatchNormPolicyWarning": "tuning.freezing",
    "UnsyncedGradientsWarning": "tuning.freezing",
    "unwrap": "tuning.wrappers", "wrapper_chain": "tuning.wrappers",
    "convert_sync_batchnorm": "tuning.parallel", "rewrap_ddp": "tuning.parallel",
    "fully_shard_stages": "integrations.fsdp", "load_full_state_dict": "integrations.fsdp",
    "save_sharded": "integrations.fsdp",
    "save": "loading.saving",
    "push_to_hub": "loading.saving",
    "data_config": "loading.data",
    "transforms": "loading.data",
    "StageFeatures": "loading.features",
    "read_checkpoint": "weights.checkpoint",
    "make_plan": "loading.plan",
    "plan_for": "loading.inspection", "inspect_checkpoint": "loading.inspection",
    "LoadPlan": "loading.plan",
    "LoadReport": "loading.report",
    "ModelInfo": "loading.report",
    "fetch": "weights.sources",
    "lock": "weights.lockfile",
    "get_plugin_manager": "host.plugin_manager",
    "load_plugins": "host.plugin_manager",
    "plugin_failures": "host.plugin_manager",
    "rules": "contract.rules",
    "Layout": "contract.family",
}

__all__ = [
    "__version__",
    "hookimpl",
    "Family",
    "ModelEntry",
    "WeightSource",
    "DataConfig",
    "Stage",
    "StageMap",
    *_LAZY,
    *_error_names,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zooadapt' has no attribute {name!r}")
    mod = importlib.import_module(f".{module}", __name__)
    value = mod if name == module.rpartition(".")[2] else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:
    from .contract import rules
    from .contract.family import Layout
    from .host.plugin_manager import get_plugin_manager, load_plugins, plugin_failures
    from .host.registry import get_registry, list_models
    from .integrations.fsdp import fully_shard_stages, load_full_state_dict, save_sharded
    from .loading.data import data_config, transforms
    from .loading.features import StageFeatures
    from .loading.inspection import inspect_checkpoint, plan_for
    from .loading.loader import load, load_weights
    from .loading.plan import LoadPlan, make_plan
    from .loading.report import LoadReport, ModelInfo
    from .loading.saving import push_to_hub, save
    from .tuning.freezing import (
        BatchNormPolicyWarning,
        UnsyncedGradientsWarning,
        check_batchnorm_policy,
        freeze,
        frozen_stages,
        unfreeze,
    )
    from .tuning.optim import add_param_group, format_param_groups, param_groups
    from .tuning.parallel import convert_sync_batchnorm, rewrap_ddp
    from .tuning.wrappers import unwrap, wrapper_chain
    from .weights.checkpoint import read_checkpoint
    from .weights.lockfile import lock
    from .weights.sources import fetch
