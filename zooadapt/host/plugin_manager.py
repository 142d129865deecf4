"""Building the plugin manager and loading plugins: built-ins, then entry points.

Nothing loads at import time. ``load_plugins()`` is lazy and idempotent: the first call
registers the built-in family plugins (ordinary plugins, by module name) and every
``zooadapt`` entry point, one at a time, so a broken third-party plugin is reported with its
distribution name and skipped instead of taking the host down: an import that raises (or
calls ``sys.exit``), or hooks pluggy rejects (a misspelled hook name, checked plugin by
plugin with ``check_pending``, and once more for the whole manager). Hooks that raise later are
reported by the hook facade (``zooadapt.host.hooks``). This module knows nothing of the registry:
the registry rebuilds itself when the plugin manager it was built from is replaced.

Environment:
  ``ZOOADAPT_PLUGINS``           comma-separated allow-list of entry-point or distribution names
                                 (third-party only; others are not even imported)
  ``ZOOADAPT_DISABLE_PLUGINS``   comma-separated block-list (built-ins may be named too)
  ``ZOOADAPT_STRICT_PLUGINS=1``  raise ``PluginError`` instead of skipping a broken plugin
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from dataclasses import dataclass
from importlib import metadata

import pluggy

from ..contract import hookspecs
from ..contract.errors import PluginError

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "PluginFailure",
    "PluginInfo",
    "disabled_plugins",
    "get_plugin_manager",
    "load_plugins",
    "plugin_failures",
    "plugin_distribution",
    "plugin_infos",
    "reset_plugins",
    "report_failure",
]

log = logging.getLogger("zooadapt")

ENTRY_POINT_GROUP = "zooadapt"
BUILTIN_PLUGINS: tuple[str, ...] = (
    "zooadapt.plugins.resnet",
    "zooadapt.plugins.mobilenet",
    "zooadapt.plugins.alexnet",
    "zooadapt.plugins.torchvision_zoo",
    "zooadapt.plugins.timm_family",
    "zooadapt.plugins.hf_layouts",
    "zooadapt.plugins.hf_vit_layouts",
    "zooadapt.plugins.hf_clip_layouts",
    "zooadapt.plugins.hf_hier_layouts",
    "zooadapt.plugins.hf_more_layouts",
)


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    builtin: bool


@dataclass(frozen=True)
class PluginFailure:
    name: str
    distribution: str
    phase: str  # "import" or the hook name
    error: str

    def __str__(self) -> str:
        return f'plugin "{self.name}" from distribution "{self.distribution}" failed in {self.phase}: {self.error}'


def _env_list(var: str) -> set[str]:
    return {x.strip() for x in os.environ.get(var, "").split(",") if x.strip()}


def strict_mode() -> bool:
    return os.environ.get("ZOOADAPT_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with zooadapt's hookspecs and no plugins (tests build their own)."""
    pm = pluggy.PluginManager("zooadapt")
    pm.add_hookspecs(hookspecs)
    return pm


class _Host:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pm: pluggy.PluginManager | None = None
        self.failures: list[PluginFailure] = []
        self.infos: list[PluginInfo] = []
        self.disabled: dict[str, str] = {}  # plugin name -> why it was not loaded


_host = _Host()


def report_failure(failure: PluginFailure, cause: BaseException | None = None) -> None:
    """Record a plugin failure; in strict mode raise it instead."""
    if strict_mode():
        raise PluginError(f"Error importing or running {failure}") from cause
    log.warning("%s; skipped it. Set ZOOADAPT_DISABLE_PLUGINS=%s to silence this.", failure, failure.name)
    with _host.lock:
        _host.failures.append(failure)


def _zooadapt_version() -> str:
    from .. import __version__  # written once: pyproject.toml reads it too

    return __version__


def _register_builtins(pm: pluggy.PluginManager, blocked: set[str]) -> None:
    version = _zooadapt_version()
    for modname in BUILTIN_PLUGINS:
        short = modname.rsplit(".", 1)[-1]
        if short in blocked or modname in blocked:
            _host.disabled[short] = f"ZOOADAPT_DISABLE_PLUGINS names {short!r}"
            continue
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:  # not shipped in this build
                continue
            report_failure(PluginFailure(short, "zooadapt", "import", repr(exc)), exc)
            continue
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a built-in is still a plugin (sys.exit included): report, don't end the host
            report_failure(PluginFailure(short, "zooadapt", "import", repr(exc)), exc)
            continue
        pm.register(module, name=short)
        _host.infos.append(PluginInfo(short, "zooadapt", version, builtin=True))


def _register_entry_points(pm: pluggy.PluginManager, allowed: set[str], blocked: set[str]) -> None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        if allowed and ep.name not in allowed and dist not in allowed:
            _host.disabled[ep.name] = "ZOOADAPT_PLUGINS does not name it"
            continue
        if ep.name in blocked or dist in blocked:
            _host.disabled[ep.name] = f"ZOOADAPT_DISABLE_PLUGINS names {ep.name if ep.name in blocked else dist!r}"
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a plugin calling sys.exit() on import must not end the host
            report_failure(PluginFailure(ep.name, dist, "import", f"{type(exc).__name__}: {exc}"), exc)
            continue
        try:
            pm.register(plugin, name=ep.name)
            # checked plugin by plugin, so a misspelled hook name skips that plugin, not the host
            pm.check_pending()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a plugin's registration running sys.exit() must not end the host
            if pm.get_plugin(ep.name) is not None:
                pm.unregister(name=ep.name)
            report_failure(PluginFailure(ep.name, dist, "registration", f"{type(exc).__name__}: {exc}"), exc)
            continue
        _host.infos.append(PluginInfo(ep.name, dist, version, builtin=False))


def load_plugins() -> pluggy.PluginManager:
    """The process-wide plugin manager with every plugin loaded (once; later calls are free)."""
    if _host.pm is not None:
        return _host.pm
    with _host.lock:
        if _host.pm is not None:
            return _host.pm
        pm = get_plugin_manager()
        allowed, blocked = _env_list("ZOOADAPT_PLUGINS"), _env_list("ZOOADAPT_DISABLE_PLUGINS")
        _host.failures, _host.infos, _host.disabled = [], [], {}
        _register_builtins(pm, blocked)
        _register_entry_points(pm, allowed, blocked)
        pm.check_pending()
        _host.pm = pm
        return pm


def plugin_failures() -> list[PluginFailure]:
    """Plugins that failed to import or raised in a hook, and why."""
    load_plugins()
    return list(_host.failures)


def plugin_infos() -> list[PluginInfo]:
    """Loaded plugins with their distributions and versions."""
    load_plugins()
    return list(_host.infos)


def plugin_distribution(name: str) -> str:
    """The distribution a loaded plugin came from (``zooadapt`` for built-ins), or ``?``."""
    return next((info.distribution for info in plugin_infos() if info.name == name), "?")


def disabled_plugins() -> dict[str, str]:
    """Plugins found but not loaded, by name, with the reason (the environment variable that did it)."""
    load_plugins()
    return dict(_host.disabled)


def disabled_builtin(name: str) -> object | None:
    """The module of a built-in plugin that ``ZOOADAPT_DISABLE_PLUGINS`` switched off, imported
    but not registered, so the registry can say which families and models went with it; None
    for other names (third-party plugins that are disabled are never imported)."""
    load_plugins()
    if name not in _host.disabled:
        return None
    modname = next((m for m in BUILTIN_PLUGINS if m.rsplit(".", 1)[-1] == name), None)
    if modname is None:
        return None
    try:
        return importlib.import_module(modname)
    except Exception:  # it was off anyway; without its module we just know less
        return None


def reset_plugins() -> None:
    """Forget loaded plugins (tests, or after installing a plugin in a running process); the
    registry notices the new plugin manager and rebuilds itself."""
    with _host.lock:
        _host.pm = None
        _host.failures, _host.infos, _host.disabled = [], [], {}
