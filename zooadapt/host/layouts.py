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


@dataclasses.dataclass(frozen=True)
class _Registered:
    """What the plugins registered: the layouts in use, and the names two plugins claimed."""

    plugins: tuple[object, ...]
    layouts: tuple[Layout, ...]
    contested: tuple[tuple[str, tuple[Layout, ...]], ...]  # (PluginConflictError message, its claimants' layouts)


_cache: ProcessCache[tuple[object, tuple[str, ...]], _Registered] = ProcessCache(
    "registered layouts", 4, "the plugin manager and the names of its plugins (the plugin objects themselves are "
    "compared on each hit: one registered in another's place registers its own layouts)")
"""(plugin manager, its plugins' names) -> what its plugins registered."""


def registered_layouts() -> tuple[Layout, ...]:
    """Every layout the loaded plugins register (``zooadapt_register_layouts``), in plugin order,
    but a name two plugins register: neither of those is used (a warning names both when the
    plugins load; a checkpoint that either recognises raises ``PluginConflictError`` in
    ``layouts_matching``), and every other layout is."""
    return _registered().layouts


def _registered() -> _Registered:
    from ..contract.errors import PluginError
    from .hooks import PluginHooks
    from .plugin_manager import load_plugins

    pm = load_plugins()
    named = sorted(((str(pm.get_name(p)), p) for p in pm.get_plugins()), key=lambda item: item[0])
    key, objects = (pm, tuple(n for n, _ in named)), tuple(p for _, p in named)
    cached = _cache.get(key)
    if cached is not None and len(cached.plugins) == len(objects) and all(
            a is b for a, b in zip(cached.plugins, objects)):
        return cached
    found: dict[str, list[Layout]] = {}

    def register_for(who: str) -> Callable[[Layout], None]:
        def register(layout: Layout) -> None:
            if not isinstance(layout, Layout):
                raise PluginError(f"plugin {who!r} registered {layout!r}, which is not a zooadapt Layout")
            _check_patterns(layout, who)
            found.setdefault(layout.name, []).append(
                dataclasses.replace(layout, rules=tuple(layout.rules), provider=who))

        return register

    PluginHooks(pm).register_layouts(register_for)
    contested = tuple((_conflict(name, claims), tuple(claims)) for name, claims in found.items() if len(claims) > 1)
    _warn(message for message, _ in contested)
    layouts = tuple(claims[0] for claims in found.values() if len(claims) == 1)
    return _cache.put(key, _Registered(objects, layouts, contested))


def _conflict(name: str, claims: list[Layout]) -> str:
    who = " and ".join(", ".join(repr(lay.provider) for lay in claims).rsplit(", ", 1))
    return (f"layout {name!r} is registered by {who}: zooadapt uses none of them rather than pick one, so a "
            "checkpoint in that layout cannot load (every other checkpoint can); disable all but one with "
            "ZOOADAPT_DISABLE_PLUGINS")


def _warn(messages: Iterable[str]) -> None:
    """Say each contested layout when the plugins load (``ZOOADAPT_STRICT_PLUGINS=1``: raise the first)."""
    from ..contract.errors import PluginConflictError
    from .plugin_manager import log, strict_mode

    for message in messages:
        if strict_mode():
            raise PluginConflictError(message)
        log.warning("%s", message)


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

    def recognises(lay: Layout) -> bool:
        return (lay.family == family if family is not None else lay.convert is None) and lay.matches(keys)

    registered = _registered()
    for message, claims in registered.contested:
        if any(map(recognises, claims)):
            from ..contract.errors import PluginConflictError

            raise PluginConflictError(message)
    return [lay for lay in registered.layouts if recognises(lay)]
