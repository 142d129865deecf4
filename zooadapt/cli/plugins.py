"""``zooadapt plugins``: installed plugins (distribution, version, families, models) and those that failed.

Exit status 1 with ``--check`` when a plugin failed to load. Imports neither torch nor timm.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import _common as ui

HELP = "installed plugins, their distributions and versions, and failures"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", action="store_true", help="exit 1 when a plugin failed to load")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def collect(count_listed: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(loaded plugins with what each provides, failures): ``plugins`` and ``env`` show both.

    ``count_listed`` also counts the names each plugin lists (timm's: a cache built on first use).
    """
    from ..contract.errors import PluginConflictError
    from ..host.plugin_manager import plugin_failures, plugin_infos
    from ..host.registry import get_registry
    from .list import listed_by_plugins

    conflict = None
    try:
        registry = get_registry()  # runs the registration hooks, so hook failures are known too
    except PluginConflictError as exc:
        registry, conflict = None, str(exc).splitlines()[0]
    listed = listed_by_plugins(registry, "*") if registry and count_listed else {}
    plugins = []
    for info in plugin_infos():
        families = sorted(f.name for f in registry.families.values() if f.provider == info.name) if registry else []
        models = sorted(e.name for e in registry.models.values() if e.family in families) if registry else []
        plugins.append({"name": info.name, "distribution": info.distribution, "version": info.version,
                        "builtin": info.builtin, "families": families, "models": models,
                        "listed": sum(1 for n, who in listed.items() if who == info.name and n not in models)})
    failed = [{"name": f.name, "distribution": f.distribution, "phase": f.phase, "error": f.error}
              for f in plugin_failures()]
    if conflict:
        failed.append({"name": "?", "distribution": "?", "phase": "registration", "error": conflict})
    claimed = {"family": registry.family_conflicts, "model": registry.model_conflicts} if registry else {}
    for kind, conflicts in claimed.items():  # each name claimed twice: only that name is refused
        failed.extend({"name": name, "distribution": "?", "phase": f"registration ({kind} name claimed twice)",
                       "error": message} for name, message in conflicts.items())
    return plugins, failed


def run(args: argparse.Namespace) -> int:
    from ..host.plugin_manager import ENTRY_POINT_GROUP

    plugins, failed = collect()
    if args.json:
        ui.print_json({"plugins": plugins, "failed": failed, "entry_point_group": ENTRY_POINT_GROUP})
        return 1 if args.check and failed else 0
    width = ui.width()
    rows = [("plugin", "distribution", "families", "models")]
    for p in plugins:
        rows.append((p["name"], f"{p['distribution']} {p['version']}" + (" (built-in)" if p["builtin"] else ""),
                     ", ".join(p["families"]) or "-",
                     f"{len(p['models'])}" + (f" + {p['listed']} listed" if p["listed"] else "")))
    print(ui.table(rows, ui.table_width(), keep=(0,)))
    print(ui.wrap(f"discovery: built-ins first, then entry points of group {ENTRY_POINT_GROUP!r}; "
                  "ZOOADAPT_PLUGINS allows, ZOOADAPT_DISABLE_PLUGINS blocks (comma-separated names)", width))
    if failed:
        print(f"\nfailed to load ({len(failed)}):")
        for f in failed:
            print("  " + ui.wrap(f"{f['name']} ({f['distribution']}), {f['phase']}: {f['error']}", width - 2))
        print(ui.wrap("  disable one with ZOOADAPT_DISABLE_PLUGINS=name; ZOOADAPT_STRICT_PLUGINS=1 raises with the "
                      "traceback", width))
    return 1 if args.check and failed else 0
