"""``zooadapt env``: what a bug report needs: versions, plugins, cache locations, settings.

Versions come from the installed distributions' metadata (``importlib.metadata``), so this
imports neither torch nor timm: it answers even when importing torch is what is broken.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from ..contract.errors import ZooadaptError
from . import _common as ui

HELP = "versions, plugins and cache locations, for bug reports (no torch import)"

DISTRIBUTIONS = ("zooadapt", "torch", "torchvision", "timm", "huggingface_hub", "safetensors", "pluggy")
SETTINGS = ("HF_ENDPOINT", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TORCH_HOME", "ZOOADAPT_CACHE",
            "ZOOADAPT_LOCK", "ZOOADAPT_REGISTRY", "ZOOADAPT_PLUGINS", "ZOOADAPT_DISABLE_PLUGINS",
            "ZOOADAPT_STRICT_PLUGINS", "ZOOADAPT_DISTRIBUTED")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _torch_hub_dir() -> str:
    """torch.hub's directory as torch computes it (``TORCH_HOME``, else ``XDG_CACHE_HOME/torch``), plus
    ``/hub``; torch itself is asked only when something already imported it (it may have been moved)."""
    if "torch" in sys.modules:
        import torch.hub

        return torch.hub.get_dir()
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return str(Path(os.path.expanduser(home)) / "hub")


def _lock_file() -> str | None:
    from ..weights.lockfile import find_lock

    try:
        found = find_lock()
    except ZooadaptError as exc:  # a broken lock file is worth reporting, not a reason to fail
        return f"unreadable: {str(exc).splitlines()[0]}"
    return str(found.path) if found else None


def collect() -> dict[str, Any]:
    """Everything ``env`` prints, as data (the ``--json`` output)."""
    from huggingface_hub import constants

    from ..weights.paths import cache_dir
    from .plugins import collect as collect_plugins

    plugins, failed = collect_plugins(count_listed=False)
    return {
        "versions": {dist: _version(dist) for dist in DISTRIBUTIONS},
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "plugins": [{k: p[k] for k in ("name", "distribution", "version", "builtin", "families")} for p in plugins],
        "failed_plugins": failed,
        "paths": {
            "hf_home": constants.HF_HOME,
            "hf_hub_cache": constants.HF_HUB_CACHE,
            "torch_hub": _torch_hub_dir(),
            "zooadapt_cache": str(cache_dir()),
            "lock_file": _lock_file(),
        },
        "hub": {"endpoint": constants.ENDPOINT, "offline": bool(constants.is_offline_mode())},
        "settings": {name: os.environ[name] for name in SETTINGS if name in os.environ},
    }


def run(args: argparse.Namespace) -> int:
    report = collect()
    if args.json:
        ui.print_json(report)
        return 0
    width, limit = ui.width(), ui.table_width()
    print("versions:")
    rows = [(dist, version or "not installed") for dist, version in report["versions"].items()]
    rows += [("python", f"{report['python']} ({report['python_executable']})"), ("platform", report["platform"])]
    print(ui.table([("package", "version"), *rows], limit, indent="  ", keep=(0,)))
    print("plugins:")
    plugin_rows = [(p["name"], f"{p['distribution']} {p['version']}" + (" (built-in)" if p["builtin"] else ""),
                    ", ".join(p["families"]) or "-") for p in report["plugins"]]
    print(ui.table([("plugin", "distribution", "families"), *plugin_rows], limit, indent="  ", keep=(0,)))
    for f in report["failed_plugins"]:
        print(ui.wrap(f"  FAILED {f['name']} ({f['distribution']}), {f['phase']}: {f['error']}", width))
    hub = report["hub"]
    print(ui.wrap(f"hub: {hub['endpoint']}" + (" (offline: HF_HUB_OFFLINE=1)" if hub["offline"] else ""), width))
    print("paths:")
    labels = {"hf_home": "HF home", "hf_hub_cache": "Hub cache", "torch_hub": "torch.hub (URL weights)",
              "zooadapt_cache": "zooadapt cache", "lock_file": "lock file in use"}
    print(ui.table([("what", "where"), *[(labels[k], v or "none") for k, v in report["paths"].items()]], limit,
                   indent="  ", keep=(0,)))
    if report["settings"]:
        print("settings:")
        for name, value in report["settings"].items():
            print(ui.clip(f"  {name}={value}", limit))
    return 0
