"""Everything a family plugin may use, in one import: ``from zooadapt.plugin_api import ...``.

The built-in plugins in ``plugins/`` import only from here, so the API a third party writes
against is the one zooadapt's own families are proven with (a test checks it). Importing this
module imports neither torch nor timm: ``zooadapt list`` loads every plugin and must stay fast.
Names that need torch import it when called.

Contract (see ``zooadapt.contract.hookspecs`` for the hooks and ``docs/plugins.md`` for a walk-through):

* ``hookimpl``: the decorator for hook implementations.
* ``Family``, ``ModelEntry``, ``WeightSource``, ``DataConfig``: what a plugin registers.
* ``Stage``, ``StageMap``: a family's ordered stages and head.
* ``HubCard``: what a family adds to a model card and the files ``push_to_hub`` uploads
  (``zooadapt_hub_card``: the timm family writes timm's ``config.json``).
* ``Layout``: another codebase's key names for an architecture a family builds; ``Conversion``: what
  a layout's ``convert`` returns (a converter run on stand-ins, and the function that runs it for real).
* ``KeyRule`` and every rule a built-in plugin uses (``StripPrefix``, ``AddPrefix``, ``Rename``,
  ``Renumber``, ``Drop``, ``Reshape``, ``CastIntegers``, ``Fuse``, ``Positional``…; also in
  ``zooadapt.rules``, the path users write ``rules=`` objects with).
* ``get_registry``, ``get_plugin_manager``, ``load_plugins``, ``plugin_failures``: the registry
  and the plugins as zooadapt loaded them (for a plugin's tests, or to see why one failed).
* ``read_checkpoint``, ``make_plan``: a checkpoint's tensors, and the plan that maps them onto a
  model (what a layout's tests compare against); both import torch when called.
* ``sequential_steps``: the forward order of a model's stages, for a family's ``features``;
  ``meta_copy``: a copy of a model with every tensor on ``meta``, to try timm's in-place surgery on
  (imports torch when called); ``skip_parameter_init``: a context manager under which a build
  skips its parameters' initialisers (with ``torch.device("meta")``: a model of shapes alone, at
  a fraction of the cost; imports torch).
* ``cache_dir``: the directory for a plugin's small derived files (safe to delete).
* ``ProcessCache``, ``remembered``: a plugin's in-memory caches, bounded and emptied by
  ``zooadapt.clear_caches()`` with zooadapt's own.
* ``PluginError``, ``InvalidArgumentError``, ``UnknownModelError``: the errors a plugin raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .contract.caches import ProcessCache, remembered
from .contract.errors import InvalidArgumentError, PluginError, UnknownModelError
from .contract.family import Conversion, DataConfig, Family, HubCard, Layout, ModelEntry, WeightSource
from .contract.hookspecs import hookimpl
from .contract.rules import (
    AdaptInputConv,
    AddPrefix,
    CastIntegers,
    Drop,
    Fuse,
    KeyRule,
    Positional,
    Rename,
    Renumber,
    ResamplePosEmbed,
    Reshape,
    StripPrefix,
    fused_parts,
    renamed_as_planned,
)
from .contract.stages import Stage, StageMap
from .host.plugin_manager import get_plugin_manager, load_plugins, plugin_failures
from .host.registry import get_registry
from .weights.paths import cache_dir

if TYPE_CHECKING:
    import torch.nn as nn

    from .loading.features import meta_copy
    from .loading.meta_build import skip_parameter_init
    from .loading.plan import make_plan
    from .weights.checkpoint import read_checkpoint

# names whose modules import torch: imported on first use (``zooadapt list`` imports this module)
_NEED_TORCH = {"read_checkpoint": "weights.checkpoint", "make_plan": "loading.plan", "meta_copy": "loading.features",
               "skip_parameter_init": "loading.meta_build"}

__all__ = [
    "hookimpl",
    "Family",
    "ModelEntry",
    "WeightSource",
    "DataConfig",
    "Stage",
    "StageMap",
    "Layout",
    "Conversion",
    "HubCard",
    "KeyRule",
    "StripPrefix",
    "AddPrefix",
    "Rename",
    "Renumber",
    "Drop",
    "Reshape",
    "Positional",
    "CastIntegers",
    "Fuse",
    "AdaptInputConv",
    "ResamplePosEmbed",
    "renamed_as_planned",
    "fused_parts",
    "sequential_steps",
    "get_registry",
    "get_plugin_manager",
    "load_plugins",
    "plugin_failures",
    "read_checkpoint",
    "make_plan",
    "meta_copy",
    "skip_parameter_init",
    "cache_dir",
    "ProcessCache",
    "remembered",
    "PluginError",
    "InvalidArgumentError",
    "UnknownModelError",
]


def sequential_steps(model: nn.Module, smap: StageMap, family: str = "?", *, upto: str | None = None,
                     after: Mapping[str, Sequence[nn.Module]] | None = None) -> list[Any]:
    """The forward order of ``model``'s stages through ``upto`` (default: all), as the steps a
    ``Family.features`` function returns: ``[(stage, (module path or parameterless module, ...)), ...]``.

    Valid when the forward runs the model's children in registration order (ResNet, MobileNet,
    ConvNeXt, EfficientNet). ``after`` adds parameterless modules after a module path (AlexNet
    and MobileNet v3 flatten between pooling and the classifier: ``{"avgpool": [nn.Flatten(1)]}``).
    Raises ``PluginError`` when the model's children do not run in order.
    """
    from .loading.features import sequential_steps as steps

    return steps(model, smap, family, upto=upto, after=after)


def __getattr__(name: str) -> Any:
    module = _NEED_TORCH.get(name)
    if module is None:
        raise AttributeError(f"module 'zooadapt.plugin_api' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"zooadapt.{module}"), name)
