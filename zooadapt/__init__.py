"""zooadapt: pretrained vision backbones ready to fine-tune, in one call.

    model = zooadapt.load("resnet34", num_classes=5, freeze="layer1-3")
    optimizer = torch.optim.SGD(zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2), momentum=0.9)

The top level holds what a user fine-tuning a model calls (``__all__``, about twenty names). The
rest has one home each, a real module: errors in ``zooadapt.errors``, key rules in
``zooadapt.rules``, what plugin authors write against in ``zooadapt.plugin_api``, DDP/FSDP helpers
in ``zooadapt.distributed``, the classes zooadapt returns in ``zooadapt.types``, the Lightning
callback in ``zooadapt.lightning``, test fixtures in ``zooadapt.testing``.

Importing zooadapt is cheap: torch, the Hub client and the plugins load on first use, through the
module ``__getattr__`` below. Names that lived at the top level before (``zooadapt.Family``,
``zooadapt.UnknownModelError``, ``zooadapt.rewrap_ddp``…) still answer, with a
``DeprecationWarning`` naming their home, until zooadapt 0.3.

The package's folders are its layers, top to bottom: ``cli`` and ``testing``, ``integrations``
(FSDP, Lightning), ``loading`` (the load pipeline, saving), ``tuning`` (freezing, learning-rate
groups) beside ``weights`` (fetching and reading checkpoints), ``host`` (plugins, registry) and
``contract`` (what a plugin registers, the errors); ``.importlinter`` checks that imports only go
down. The public modules at the top re-export from those folders and hold no code of their own.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from .contract.errors import ZooadaptError

__version__ = "0.1.0"

# The public functions, each imported from its module on first use (most need torch).
_PUBLIC: dict[str, str] = {
    "load": "loading.loader",
    "load_weights": "loading.loader",
    "identify": "loading.identification",
    "list_models": "host.registry",
    "attach": "tuning.attached",
    "freeze": "tuning.freezing",
    "unfreeze": "tuning.freezing",
    "frozen_stages": "tuning.freezing",
    "param_groups": "tuning.optim",
    "add_param_group": "tuning.optim",
    "format_param_groups": "tuning.optim",
    "save": "loading.saving",
    "push_to_hub": "loading.saving",
    "data_config": "loading.data",
    "transforms": "loading.data",
    "inspect_checkpoint": "loading.inspection",
    "plan_for": "loading.inspection",
    "fetch": "weights.sources",
    "lock": "weights.lockfile",
    "clear_caches": "contract.caches",
}

# The public modules: ``zooadapt.errors`` works without importing it first, as for any package.
_SUBMODULES = frozenset({"errors", "rules", "plugin_api", "distributed", "types", "lightning", "testing"})

__all__ = ["__version__", "ZooadaptError", *_PUBLIC]

_PLUGIN_API = ("hookimpl", "Family", "ModelEntry", "WeightSource", "DataConfig", "Layout", "Stage", "StageMap",
               "get_registry", "get_plugin_manager", "load_plugins", "plugin_failures", "read_checkpoint",
               "make_plan")
_DISTRIBUTED = ("convert_sync_batchnorm", "rewrap_ddp", "fully_shard_stages", "load_full_state_dict", "save_sharded",
                "unwrap", "wrapper_chain", "check_batchnorm_policy", "BatchNormPolicyWarning",
                "UnsyncedGradientsWarning")
_TYPES = ("LoadPlan", "LoadReport", "ModelInfo", "StageFeatures", "ParamGroups")

# Old top-level names -> the module that is their home now (every error class but ZooadaptError
# is added from zooadapt.errors on first use, see _deprecated_home).
_MOVED_NAMES: dict[str, str] = {
    **{name: "zooadapt.plugin_api" for name in _PLUGIN_API},
    **{name: "zooadapt.distributed" for name in _DISTRIBUTED},
    **{name: "zooadapt.types" for name in _TYPES},
}


def _deprecated_home(name: str) -> str | None:
    """The module an old top-level name moved to, or None when ``name`` never was one."""
    if name in _MOVED_NAMES:
        return _MOVED_NAMES[name]
    from .contract import errors

    return "zooadapt.errors" if name in errors.__all__ or name in errors.MERGED else None


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    home = _deprecated_home(name)
    if home is None:
        raise AttributeError(f"module 'zooadapt' has no attribute {name!r}")
    warnings.warn(f"zooadapt.{name} moved: use {home}.{name} (the old spelling works until zooadapt 0.3)",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(home), name)  # not cached: every old use warns


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC) | _SUBMODULES)


if TYPE_CHECKING:
    from . import distributed, errors, lightning, plugin_api, rules, testing, types
    from .contract.caches import clear_caches
    from .host.registry import list_models
    from .loading.data import data_config, transforms
    from .loading.identification import identify
    from .loading.inspection import inspect_checkpoint, plan_for
    from .loading.loader import load, load_weights
    from .loading.saving import push_to_hub, save
    from .tuning.attached import attach
    from .tuning.freezing import freeze, frozen_stages, unfreeze
    from .tuning.optim import add_param_group, format_param_groups, param_groups
    from .weights.lockfile import lock
    from .weights.sources import fetch
