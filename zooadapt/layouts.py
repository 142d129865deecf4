"""Foreign checkpoint layouts: another codebase's key names for an architecture a family builds.

A family's own key rules describe the checkpoints published for it. Users also hold the same
architecture saved by other code (Hugging Face transformers' ``ResNetForImageClassification``,
a detector's trunk, a re-implementation). A plugin declares such a layout once, as data: a
pattern that recognises its keys and the rules that turn them into the family's keys. The
planner tries the layouts that recognise a checkpoint when the family's own rules leave it
unmatched, and names a layout of another family when that is why a checkpoint does not fit.
Nothing here imports torch.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

from .rules import KeyRule

__all__ = ["Layout", "registered_layouts", "layouts_matching"]


@dataclass(frozen=True)
class Layout:
    """One foreign naming of a family's architecture.

    ``detect`` is a regular expression; the layout applies to a checkpoint when it fully
    matches at least one key. ``rules`` run after the user's rules and before the family's.
    """

    name: str
    family: str
    detect: str
    rules: tuple[KeyRule, ...]
    description: str = ""
    provider: str = ""

    def matches(self, keys: Iterable[str]) -> bool:
        pattern = re.compile(self.detect)
        return any(pattern.fullmatch(k) for k in keys)


_cache: weakref.WeakKeyDictionary[object, tuple[tuple[str, ...], tuple[Layout, ...]]] = weakref.WeakKeyDictionary()
"""Per plugin manager: the plugins it had and the layouts they registered (redone when plugins change)."""


def registered_layouts() -> tuple[Layout, ...]:
    """Every layout the loaded plugins register (``zooadapt_register_layouts``), in plugin order."""
    from .errors import PluginConflictError
    from .plugin_manager import load_plugins

    pm = load_plugins()
    plugins = tuple(sorted(str(pm.get_name(p)) for p in pm.get_plugins()))
    cached = _cache.get(pm)
    if cached is not None and cached[0] == plugins:
        return cached[1]
    found: dict[str, Layout] = {}

    for impl in pm.hook.zooadapt_register_layouts.get_hookimpls():
        def register(layout: Layout, who: str = impl.plugin_name) -> None:
            if not isinstance(layout, Layout):
                raise PluginConflictError(f"plugin {who!r} registered {layout!r}, which is not a zooadapt Layout")
            if layout.name in found:
                raise PluginConflictError(
                    f"layout {layout.name!r} is registered by both {found[layout.name].provider!r} and {who!r}; "
                    f"disable one with ZOOADAPT_DISABLE_PLUGINS")
            found[layout.name] = Layout(layout.name, layout.family, layout.detect, tuple(layout.rules),
                                        layout.description, who)

        pm.subset_hook_caller("zooadapt_register_layouts", remove_plugins=[
            p for p in pm.get_plugins() if pm.get_name(p) != impl.plugin_name])(register=register)
    _cache[pm] = (plugins, tuple(found.values()))
    return _cache[pm][1]


def layouts_matching(keys: Iterable[str], family: str | None = None) -> list[Layout]:
    """The registered layouts that recognise these checkpoint keys (of ``family`` when given)."""
    keys = list(keys)
    return [lay for lay in registered_layouts() if (family is None or lay.family == family) and lay.matches(keys)]
