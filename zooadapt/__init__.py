"""zooadapt: pretrained vision backbones ready to fine-tune, in one call.

    model = zooadapt.load("resnet34", num_classes=5, freeze="layer1-3")
    optimizer = torch.optim.SGD(zooadapt.param_groups(model, lr=1e-3, head_lr=1e-2), momentum=0.9)

Importing zooadapt is cheap: torch, the Hub client and the plugins load on first use.

The package's folders are its layers, top to bottom: ``cli`` and ``testing``, ``integrations``
(FSDP, Lightning), ``plugin_api``, ``loading`` (the load pipeline, saving), ``tuning`` (freezing,
learning-rate groups) beside ``weights`` (fetching and reading checkpoints), ``host`` (plugins,
registry) and ``contract`` (what a plugin registers, the errors); ``.importlinter`` checks that
imports only go down.

Old module paths stay valid: the modules that lived directly in ``zooadapt/`` before the layers had
folders and that users, plugins or pickles name (``zooadapt.rules``, ``zooadapt.errors``,
``zooadapt.freezing``… listed in ``_MOVED``) import as the very module in its new folder
(``zooadapt.rules is zooadapt.contract.rules``), so ``isinstance`` checks hold and models pickled
before (which name ``zooadapt.report.ModelInfo``, ``zooadapt.freezing._new_frozen``…) load. One
import hook does it, ``_MovedModules``: it answers only for those names, imports nothing until one
is used, and leaves no file at the old paths (a file there would be a second copy of the module).
"""

from __future__ import annotations

import importlib
import sys
from importlib.machinery import ModuleSpec
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
    "attach": "tuning.attached",
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
    "identify": "loading.identification",
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


# Old module paths -> their folders (see the module docstring). Public modules, and those whose
# classes pickled models name (report, plan, stages, features, freezing).
_MOVED: dict[str, str] = {
    "errors": "contract.errors", "family": "contract.family", "rules": "contract.rules",
    "stages": "contract.stages", "hookspecs": "contract.hookspecs",
    "plugin_manager": "host.plugin_manager", "hooks": "host.hooks", "registry": "host.registry",
    "freezing": "tuning.freezing",
    "report": "loading.report", "plan": "loading.plan", "features": "loading.features",
    "fsdp": "integrations.fsdp", "lightning": "integrations.lightning",
}


class _MovedModules:
    """The import hook for ``_MOVED``: ``import zooadapt.rules`` imports ``zooadapt.contract.rules``
    and binds that same module object to the old name (in ``sys.modules`` and on the package)."""

    @staticmethod
    def find_spec(fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        return ModuleSpec(fullname, _MovedModules) if package == __name__ and name in _MOVED else None

    @staticmethod
    def create_module(spec: ModuleSpec) -> None:
        return None  # a placeholder, replaced by the real module below

    @staticmethod
    def exec_module(module: Any) -> None:
        # the import system returns what sys.modules holds after this: the module itself
        new = importlib.import_module(f"{__name__}.{_MOVED[module.__name__.rpartition('.')[2]]}")
        sys.modules[module.__name__] = new


# first, so that nothing else (a stray old file) can answer for an old path with a second copy
sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, "__qualname__", None) != _MovedModules.__qualname__
                    or getattr(f, "__module__", None) != __name__]  # importlib.reload(zooadapt): one hook
sys.meta_path.insert(0, _MovedModules)


def _moved_if_imported(name: str) -> Any:
    """An old module path as an attribute of the package (``zooadapt.errors``): as before the move,
    there once the module is imported (``zooadapt.lightning`` is not until something imports it)."""
    target = _MOVED.get(name)
    return None if target is None else sys.modules.get(f"{__name__}.{target}")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        moved = _moved_if_imported(name)
        if moved is None:
            raise AttributeError(f"module 'zooadapt' has no attribute {name!r}")
        globals()[name] = moved
        return moved
    mod = importlib.import_module(f".{module}", __name__)
    value = mod if name == module.rpartition(".")[2] else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {name for name in _MOVED if _moved_if_imported(name) is not None})


if TYPE_CHECKING:
    from .contract import rules
    from .contract.family import Layout
    from .host.plugin_manager import get_plugin_manager, load_plugins, plugin_failures
    from .host.registry import get_registry, list_models
    from .integrations.fsdp import fully_shard_stages, load_full_state_dict, save_sharded
    from .loading.data import data_config, transforms
    from .loading.features import StageFeatures
    from .loading.identification import identify
    from .loading.inspection import inspect_checkpoint, plan_for
    from .loading.loader import load, load_weights
    from .loading.plan import LoadPlan, make_plan
    from .loading.report import LoadReport, ModelInfo
    from .loading.saving import push_to_hub, save
    from .tuning.attached import attach
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
