"""zooadapt: pretrained vision backbones ready to fine-tune, in one call.

    model = zooadapt.load("resnet34", num_classes=5, freeze="layer1-3")
    optimizer = torch.optim.SGD(zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2), momentum=0.9)

Importing zooadapt is cheap: torch, the Hub client and the plugins load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import *  # noqa: F403  (every error class; listed in errors.__all__)
from .errors import __all__ as _error_names
from .family import DataConfig, Family, ModelEntry, WeightSource
from .hookspecs import hookimpl
from .stages import Stage, StageMap

__version__ = "0.1.0"

# Public names that need torch (or the Hub client) live in submodules imported on first use.
_LAZY: dict[str, str] = {
    "load": "loader",
    "load_weights": "loader",
    "list_models": "registry",
    "get_registry": "registry",
    "param_groups": "optim",
    "format_param_groups": "optim",
    "add_param_group": "optim",
    "freeze": "freezing",
    "unfreeze": "freezing",
    "frozen_stages": "freezing",
    "check_batchnorm_policy": "freezing", "BatchNormPolicyWarning": "freezing", "UnsyncedGradientsWarning": "freezing",
    "unwrap": "wrappers", "wrapper_chain": "wrappers",
    "convert_sync_batchnorm": "parallel", "rewrap_ddp": "parallel",
    "fully_shard_stages": "fsdp", "load_full_state_dict": "fsdp", "save_sharded": "fsdp",
    "save": "saving",
    "push_to_hub": "saving",
    "data_config": "data",
    "transforms": "data",
    "StageFeatures": "features",
    "read_checkpoint": "checkpoint",
    "make_plan": "plan",
    "plan_for": "inspection", "inspect_checkpoint": "inspection",
    "LoadPlan": "plan",
    "LoadReport": "report",
    "ModelInfo": "report",
    "fetch": "sources",
    "lock": "lockfile",
    "get_plugin_manager": "plugin_manager",
    "load_plugins": "plugin_manager",
    "plugin_failures": "plugin_manager",
    "rules": "rules",
    "Layout": "family",
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
    value = mod if name == module else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:
    from . import rules
    from .checkpoint import read_checkpoint
    from .data import data_config, transforms
    from .family import Layout
    from .features import StageFeatures
    from .freezing import (
        BatchNormPolicyWarning,
        UnsyncedGradientsWarning,
        check_batchnorm_policy,
        freeze,
        frozen_stages,
        unfreeze,
    )
    from .fsdp import fully_shard_stages, load_full_state_dict, save_sharded
    from .inspection import inspect_checkpoint, plan_for
    from .loader import load, load_weights
    from .lockfile import lock
    from .optim import add_param_group, format_param_groups, param_groups
    from .parallel import convert_sync_batchnorm, rewrap_ddp
    from .plan import LoadPlan, make_plan
    from .plugin_manager import get_plugin_manager, load_plugins, plugin_failures
    from .registry import get_registry, list_models
    from .report import LoadReport, ModelInfo
    from .saving import push_to_hub, save
    from .sources import fetch
    from .wrappers import unwrap, wrapper_chain
