"""Every hook a zooadapt plugin can implement.

A plugin is any module or object with functions named like these, decorated with
``zooadapt.hookimpl``. Built-in families in ``plugins/`` use exactly this API.
Registration hooks receive a ``register`` callback: the host, not the plugin, decides what
happens when two plugins claim the same name (an error naming both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import torch.nn as nn

    from .family import DataConfig, Family, HubCard, Layout, ModelEntry

hookspec = pluggy.HookspecMarker("zooadapt")
hookimpl = pluggy.HookimplMarker("zooadapt")


@hookspec
def zooadapt_register_families(register: Callable[[Family], None]) -> None:
    """Call ``register(Family(...))`` once per backbone family this plugin provides.

    Called once per process when plugins load. Every plugin's implementation runs; a family
    name registered twice raises ``PluginConflictError`` naming both plugins.
    """


@hookspec
def zooadapt_register_models(register: Callable[[ModelEntry], None]) -> None:
    """Call ``register(ModelEntry(...))`` for each named model (family, arch, weight source).

    Every plugin's implementation runs, after all families are registered; entries join
    those of ``registry.toml``. A model name registered twice raises ``PluginConflictError``.
    """


@hookspec
def zooadapt_resolve_model(name: str) -> ModelEntry | None:
    """Return a ``ModelEntry`` for a name no registered entry has, or None.

    For families with open-ended names (any timm model, ``timm/…`` Hub ids). Consulted only
    after the registry misses. Every plugin's implementation runs: one answer is the entry, two
    or more raise ``PluginConflictError`` naming the plugins that claimed the name. A
    ``ZooadaptError`` a resolver raises (a bad timm tag, with the valid ones) is the answer.
    """


@hookspec
def zooadapt_list_models(pattern: str) -> Iterable[str]:
    """Return extra model names matching the fnmatch ``pattern`` that ``zooadapt_resolve_model``
    can resolve (e.g. timm's pretrained names). Results of all plugins are merged and sorted.
    Keep it cheap: ``zooadapt list`` calls it and must not import torch.
    """
    raise NotImplementedError  # a specification: pluggy calls the plugins' implementations, never this body


@hookspec
def zooadapt_register_layouts(register: Callable[[Layout], None]) -> None:
    """Call ``register(Layout(...))`` for each foreign checkpoint layout this plugin knows:
    another codebase's key names for an architecture a family builds (e.g. Hugging Face
    transformers' ResNet into the ``resnet`` family).

    Every plugin's implementation runs. The planner tries a layout when its ``detect`` pattern
    matches a checkpoint key and the family's own rules leave the checkpoint unmatched; a
    layout name registered twice raises ``PluginConflictError`` naming both plugins.
    """


@hookspec(firstresult=True)
def zooadapt_claims_name(name: str) -> bool | None:
    """Return True when ``name`` is a model name this plugin resolves although it reads like a
    relative path (the timm plugin: ``timm/convnext_atto.d2_in1k``), else None.

    ``weights=``, ``inspect`` and ``load_weights`` take model names and file paths alike; a
    string with a ``/`` is a path unless a plugin claims it. Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def zooadapt_data_config(model: nn.Module) -> DataConfig | None:
    """Return the preprocessing (``DataConfig``) of a model zooadapt did not load, or None.

    ``zooadapt.data_config(model)`` asks when the model carries no zooadapt record (e.g. a model
    built by ``timm.create_model``: the timm plugin reads its ``pretrained_cfg``). Stops at the
    first non-None result.
    """


@hookspec
def zooadapt_hub_card(model: nn.Module, config: Mapping[str, Any], folder: Path) -> HubCard | None:
    """Add to a model ``push_to_hub`` is about to upload: return a ``HubCard``, or None.

    ``folder`` holds what ``zooadapt.save`` wrote (``config`` is its ``zooadapt.json``: ``family``,
    ``arch``, ``num_classes``, ``labels``, ``base_weights``…); ``model`` is the saved model. A plugin
    may write its library's own files there, so that library loads the upload too (the timm plugin:
    timm's ``config.json`` for a timm classifier), and say so with ``HubCard.library``; its tags join
    the card's (timm's: ``timm`` for weights from timm's Hub repositories). Every plugin's
    implementation runs; tags are merged in plugin order, and two plugins naming a library raise
    ``PluginConflictError`` naming both.
    """
