"""Every hook a zooadapt plugin can implement.

A plugin is any module or object with functions named like these, decorated with
``zooadapt.hookimpl``. Built-in families in ``plugins/`` use exactly this API.
Registration hooks receive a ``register`` callback: the host, not the plugin, decides what
happens when two plugins claim the same name (an error naming both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .family import Family, ModelEntry

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


@hookspec(firstresult=True)
def zooadapt_resolve_model(name: str) -> ModelEntry | None:
    """Return a ``ModelEntry`` for a name no registered entry has, or None.

    For families with open-ended names (any timm model, ``timm/…`` Hub ids). Consulted only
    after the registry misses; stops at the first non-None result.
    """


@hookspec
def zooadapt_list_models(pattern: str) -> Iterable[str]:
    """Return extra model names matching the fnmatch ``pattern`` that ``zooadapt_resolve_model``
    can resolve (e.g. timm's pretrained names). Results of all plugins are merged and sorted.
    Keep it cheap: ``zooadapt list`` calls it and must not import torch.
    """
