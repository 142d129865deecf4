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

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet

from ..contract.caches import ProcessCache
from ..contract.family import Conversion, Layout

__all__ = ["Layout", "Conversion", "registered_layouts", "layouts_matching"]


_cache: ProcessCache[tuple[object, tuple[str, ...]], tuple[tuple[object, ...], tuple[Layout, ...]]] = ProcessCache(
    "registered layouts", 4, "the plugin manager and the names of its plugins (the plugin objects themselves are "
    "compared on each hit: one registered in another's place registers its own layouts)")
"""(plugin manager, its plugins' names) -> (the plugin objects, the layouts they registered)."""


def registered_layouts() -> tuple[Layout, ...]:
    """Every layout the loaded plugins register (``zooadapt_register_layouts``), in plugin order;
    a layout name registered twice raises ``PluginConflictError`` naming both plugins."""
    from ..contract.errors import PluginConflictError
    from .hooks import PluginHooks
    from .plugin_manager import load_plugins

    pm = load_plugins()
    named = sorted(((str(pm.get_name(p)), p) for p in pm.get_plugins()), key=lambda item: item[0])
    key, objects = (pm, tuple(n for n, _ in named)), tuple(p for _, p in named)
    cached = _cache.get(key)
    if cached is not None and len(cached[0]) == len(objects) and all(a is b for a, b in zip(cached[0], objects)):
        return cached[1]
    found: dict[str, Layout] = {}

    def register_for(who: str) -> Callable[[Layout], None]:
        def register(layout: Layout) -> None:
            if not isinstance(layout, Layout):
                raise PluginConflictError(f"plugin {who!r} registered {layout!r}, which is not a zooadapt Layout")
            _check_patterns(layout, who)
            if layout.name in found:
                raise PluginConflictError(
                    f"layout {layout.name!r} is registered by both {found[layout.name].provider!r} and {who!r}; "
                    "disable one with ZOOADAPT_DISABLE_PLUGINS")
            found[layout.name] = dataclasses.replace(layout, rules=tuple(layout.rules), provider=who)

        return register

    PluginHooks(pm).register_layouts(register_for)
    return _cache.put(key, (objects, tuple(found.values())))[1]


def _check_patterns(layout: Layout, who: str) -> None:
    """Refuse a layout whose ``detect`` or ``unless`` is no regular expression, when it registers,
    not in the middle of a load that asks whether it matches."""
    import re

    from ..contract.errors import PluginError

    for field in ("detect", "unless"):
        pattern = getattr(layout, field)
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise PluginError(f"plugin {who!r}: layout {layout.name!r} has {field}={pattern!r}, which is not a regular "
                              f"expression ({exc}); fix the pattern in the plugin, or disable it with "
                              "ZOOADAPT_DISABLE_PLUGINS") from None


def layouts_matching(keys: Iterable[str], family: str | None = None) -> list[Layout]:
    """The registered layouts that recognise these checkpoint keys (of ``family`` when given).

    A layout that converts (``Layout.convert``) recognises a file only by converting it into a
    model of its family, so it is listed only when ``family`` is given and is its own."""
    if not isinstance(keys, (Mapping, AbstractSet)):
        keys = list(keys)  # read by every layout; a mapping or set stays one, for layouts that look up a literal key
    return [lay for lay in registered_layouts()
            if (lay.family == family if family is not None else lay.convert is None) and lay.matches(keys)]
