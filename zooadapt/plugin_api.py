"""Everything a family plugin may use, in one import: ``from zooadapt.plugin_api import ...``.

The built-in plugins in ``plugins/`` import only from here (and from ``zooadapt.rules``, the key
rules' own public module), so the API a third party writes against is the one zooadapt's own
families are proven with. Importing this module imports neither torch nor timm: ``zooadapt list``
loads every plugin and must stay fast. Names that need torch import it when called.

Contract (see ``zooadapt.hookspecs`` for the hooks and ``docs/plugins.md`` for a walk-through):

* ``hookimpl``: the decorator for hook implementations.
* ``Family``, ``ModelEntry``, ``WeightSource``, ``DataConfig``: what a plugin registers.
* ``Stage``, ``StageMap``: a family's ordered stages and head.
* ``Layout``: another codebase's key names for an architecture a family builds; ``Conversion``: what
  a layout's ``convert`` returns (a converter run on stand-ins, and the function that runs it for real).
* ``KeyRule`` and the rules (``StripPrefix``, ``Rename``, ``Renumber``, ``Reshape``, ``Positional``…).
* ``sequential_steps``: the forward order of a model's stages, for a family's ``features``.
* ``cache_dir``: the directory for a plugin's small derived files (safe to delete).
* ``PluginError``, ``InvalidArgumentError``, ``UnknownModelError``: the errors a plugin raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .contract.errors import InvalidArgumentError, PluginError, UnknownModelError
from .contract.family import Conversion, DataConfig, Family, Layout, ModelEntry, WeightSource
from .contract.hookspecs import hookimpl
from .contract.rules import AddPrefix, Drop, KeyRule, Positional, Rename, Renumber, Reshape, StripPrefix
from .contract.stages import Stage, StageMap
from .weights.paths import cache_dir

if TYPE_CHECKING:
    import torch.nn as nn

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
    "KeyRule",
    "StripPrefix",
    "AddPrefix",
    "Rename",
    "Renumber",
    "Drop",
    "Reshape",
    "Positional",
    "sequential_steps",
    "cache_dir",
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
