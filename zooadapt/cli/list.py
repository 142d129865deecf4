"""``zooadapt list``: the registry's named models first (with descriptions), then names plugins list.

Names are never cut: piped, nothing is (``zooadapt list | grep NAME`` finds every name); in a
terminal only the other columns give way. Patterns work as in torchvision's ``list_models``:
positional patterns include, ``--exclude`` removes (fnmatch wildcards). ``--source`` keeps
one origin: ``registry`` or a plugin (``timm``). Imports neither torch nor timm; the first run
after installing or upgrading timm builds the cache of timm's names in a child process, and
says so on stderr when that takes more than a second.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ..contract.errors import InvalidArgumentError
from . import _common as ui

if TYPE_CHECKING:
    from ..contract.family import WeightSource
    from ..host.registry import Registry

HELP = "list loadable models: the registry's first, then those plugins list (fast: no torch)"
REGISTRY = "registry"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", nargs="*", metavar="PATTERN",
                   help="fnmatch patterns to include, e.g. 'resnet*' (default: every name)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="leave out names matching this pattern; repeatable")
    p.add_argument("--source", metavar="SOURCE",
                   help="only names from this source: 'registry' or a plugin (e.g. 'timm'; see `zooadapt plugins`)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def short_source(source: WeightSource | None) -> str:
    """The weights as ``weights=`` reads them, defaults left out (``hf://timm/resnet34.tv_in1k``)."""
    if source is None:
        return "none: weights=PATH"
    if not source.repo_id:
        return source.describe()
    from ..contract.hub_address import format_hub_address

    return format_hub_address(source.repo_id, None if source.revision == "main" else source.revision,
                              None if source.filename == "model.safetensors" else source.filename)


def plugin_label(registry: Registry, plugin: str) -> str:
    """How ``list`` names a plugin: its family when it provides exactly one (``timm``), else its name."""
    families = [f.name for f in registry.families.values() if f.provider == plugin]
    return families[0] if len(families) == 1 else plugin


def listed_by_plugins(registry: Registry, pattern: str) -> dict[str, str]:
    """Names the plugins list for ``pattern``, each with the plugin that listed it (``zooadapt.host.hooks``)."""
    from ..host.hooks import PluginHooks

    return PluginHooks(registry.pm).listed_models(pattern) if registry.pm is not None else {}


def rows_for(registry: Registry, patterns: list[str], exclude: list[str], source: str | None) -> list[dict[str, Any]]:
    """Registry entries, then plugin-listed names, filtered as asked; each row says where it came from."""
    from ..host.registry import filter_names

    pattern = patterns[0] if len(patterns) == 1 else "*"
    include = patterns if len(patterns) > 1 else None
    rows: list[dict[str, Any]] = []
    for name in filter_names(registry.models, pattern, include=include, exclude=exclude):
        entry = registry.models[name]
        rows.append({"name": name, "family": entry.family, "source": REGISTRY, "registry": True,
                     "weights": entry.source.describe() if entry.source else None, "short": short_source(entry.source),
                     "description": registry.why_unavailable(name) or entry.description,
                     "provider": entry.provider})
    if source is not None:
        _check_source(registry, source)
    if source != REGISTRY:
        with ui.SlowNotice("building the list of installed plugins' model names (first run after installing or "
                           "upgrading timm; later runs take ~0.1 s)"):
            listed = listed_by_plugins(registry, pattern)
        for name in filter_names(listed, pattern, include=include, exclude=exclude):
            if name in registry.models:
                continue
            label = plugin_label(registry, listed[name])
            rows.append({"name": name, "family": label, "source": label, "registry": False, "weights": None,
                         "short": "", "description": "", "provider": listed[name]})
    if source is not None:
        rows = [r for r in rows if source in (r["source"], r["provider"], plugin_label(registry, r["provider"]))]
    return rows


def _without(row: tuple[str, ...], index: int) -> tuple[str, ...]:
    return row[:index] + row[index + 1:]


def _check_source(registry: Registry, source: str) -> None:
    plugins = [name for name, _ in registry.pm.list_name_plugin()] if registry.pm is not None else []
    known = {REGISTRY, *plugins, *(plugin_label(registry, p) for p in plugins)}
    if source not in known:
        raise InvalidArgumentError(f"--source {source!r}: no such source; use one of {', '.join(sorted(known))} "
                                   "(`zooadapt plugins` lists the plugins)")


def run(args: argparse.Namespace) -> int:
    from ..host.registry import get_registry

    rows = rows_for(get_registry(), args.patterns, args.exclude, args.source)
    if args.json:
        ui.print_json([{k: v for k, v in r.items() if k != "short"} for r in rows])
        return 0
    if not rows:
        asked = " ".join(repr(p) for p in args.patterns) or "the filters"
        print(f"no models match {asked}; `zooadapt list` shows every name", file=sys.stderr)
        return 0
    limit = ui.table_width()
    named = [r for r in rows if r["registry"]]
    listed = [r for r in rows if not r["registry"]]
    sections = []
    if named:
        header: tuple[str, ...] = ("name", "source", "family", "weights", "description")
        cells: list[tuple[str, ...]] = [(r["name"], r["source"], r["family"], r["short"], r["description"])
                                        for r in named]
        if not ui.fits([header, *cells], limit):  # a narrow terminal: `info NAME` and --json show the weights
            header, cells = _without(header, 3), [_without(c, 3) for c in cells]
        sections.append(ui.table([header, *cells], limit, keep=(0,), prose=(len(header) - 1,)))
    if listed:
        sections.append(ui.table([("name", "source", "family"), *[(r["name"], r["source"], r["family"])
                                                                  for r in listed]], limit, keep=(0,)))
    print("\n\n".join(sections))
    return 0
