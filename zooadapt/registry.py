"""The model registry: ``registry.toml`` plus what plugins register, with conflicts refused.

Reading it needs no torch, so ``zooadapt list`` stays fast. Extra registry files can be
named in ``ZOOADAPT_REGISTRY`` (paths separated by ``os.pathsep``) for a team's own models.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import pluggy

from .errors import (
    PluginConflictError,
    RegistryError,
    UnknownFamilyError,
    UnknownModelError,
    ZooadaptError,
    suggest,
)
from .family import DataConfig, Family, ModelEntry, WeightSource
from .plugin_manager import PluginFailure, load_plugins, report_failure

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Registry", "get_registry", "read_registry_file", "build_registry", "reset_registry", "list_models"]

_ENTRY_KEYS = {"family", "arch", "hub", "file", "revision", "url", "path", "sha256", "num_classes",
               "description", "data", "build_kwargs"}


def _entry_from_table(name: str, table: dict[str, Any], provider: str) -> ModelEntry:
    unknown = set(table) - _ENTRY_KEYS
    if unknown:
        raise RegistryError(f"{provider}: model {name!r} has unknown keys {sorted(unknown)}; allowed: "
                            f"{sorted(_ENTRY_KEYS)}")
    for required in ("family", "arch"):
        if required not in table:
            raise RegistryError(f"{provider}: model {name!r} lacks {required!r}")
    source = None
    if any(k in table for k in ("hub", "url", "path")):
        source = WeightSource(
            repo_id=table.get("hub"),
            filename=table.get("file", "model.safetensors"),
            revision=table.get("revision", "main"),
            url=table.get("url"),
            path=table.get("path"),
            sha256=table.get("sha256"),
        )
    data = table.get("data")
    return ModelEntry(
        name=name,
        family=table["family"],
        arch=table["arch"],
        source=source,
        num_classes=int(table.get("num_classes", 1000)),
        description=table.get("description", ""),
        data=DataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}) if data else None,
        build_kwargs=dict(table.get("build_kwargs", {})),
        provider=provider,
    )


def read_registry_file(path: str | os.PathLike[str] | None = None) -> list[ModelEntry]:
    """Parse a registry file (default: the one shipped with zooadapt) into model entries."""
    if path is None:
        text = resources.files("zooadapt").joinpath("registry.toml").read_text(encoding="utf-8")
        provider = "registry.toml"
    else:
        text = Path(path).read_text(encoding="utf-8")
        provider = str(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{provider} is not valid TOML: {exc}") from exc
    models = doc.get("models", {})
    return [_entry_from_table(name, table, provider) for name, table in models.items()]


@dataclass
class Registry:
    """Families and model entries, each with the provider that registered it."""

    families: dict[str, Family] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    pm: pluggy.PluginManager | None = None

    def add_family(self, family: Family, provider: str) -> None:
        if not isinstance(family, Family):
            raise TypeError(f"plugin {provider!r} registered {family!r}, which is not a zooadapt.Family")
        existing = self.families.get(family.name)
        if existing is not None:
            raise PluginConflictError(
                f"family {family.name!r} is registered twice: by {existing.provider!r} and by {provider!r}. "
                "Uninstall or disable one of them (ZOOADAPT_DISABLE_PLUGINS=name)."
            )
        self.families[family.name] = family if family.provider else replace(family, provider=provider)

    def add_model(self, entry: ModelEntry, provider: str | None = None) -> None:
        if not isinstance(entry, ModelEntry):
            raise TypeError(f"plugin {provider!r} registered {entry!r}, which is not a zooadapt.ModelEntry")
        if provider and entry.provider == "registry.toml":
            entry = replace(entry, provider=provider)
        existing = self.models.get(entry.name)
        if existing is not None:
            raise PluginConflictError(
                f"model {entry.name!r} is registered twice: by {existing.provider!r} and by {entry.provider!r}. "
                "Rename one, or disable a plugin with ZOOADAPT_DISABLE_PLUGINS=name."
            )
        self.models[entry.name] = entry

    def family(self, name: str) -> Family:
        try:
            return self.families[name]
        except KeyError:
            raise UnknownFamilyError(
                f"no plugin provides family {name!r}.{suggest(name, self.families)} Installed families: "
                f"{', '.join(sorted(self.families)) or 'none'}. Install the plugin that provides it, or "
                "check `zooadapt plugins` for plugins that failed to load."
            ) from None

    def entry(self, name: str) -> ModelEntry:
        """The entry for ``name``: registered names first, then plugins' resolvers."""
        entry = self.models.get(name)
        if entry is not None:
            return entry
        if self.pm is not None:
            # firstresult semantics (last registered first), one plugin at a time so a broken
            # resolver is reported with its name and the others still get their turn
            for impl in reversed(self.pm.hook.zooadapt_resolve_model.get_hookimpls()):
                try:
                    resolved = impl.function(name=name)
                except ZooadaptError:
                    raise  # a resolver's own verdict (e.g. a bad timm tag, with the valid ones)
                except Exception as exc:
                    report_failure(_failure(impl, "zooadapt_resolve_model", exc), exc)
                    continue
                if resolved is not None:
                    return resolved
        raise UnknownModelError(
            f"unknown model {name!r}.{suggest(name, self.models)} "
            "List the available names with `zooadapt list` (or zooadapt.list_models('pattern*'))."
        )

    def names(self, pattern: str = "*") -> list[str]:
        names = {n for n in self.models if fnmatch.fnmatchcase(n, pattern)}
        if self.pm is not None:
            for impl in self.pm.hook.zooadapt_list_models.get_hookimpls():
                try:
                    names.update(impl.function(pattern=pattern) or ())
                except Exception as exc:
                    report_failure(_failure(impl, "zooadapt_list_models", exc), exc)
        return sorted(names)


def _dist_of(impl: pluggy.HookImpl) -> str:
    from .plugin_manager import plugin_infos

    for info in plugin_infos():
        if info.name == impl.plugin_name:
            return info.distribution
    return "?"


def _failure(impl: pluggy.HookImpl, hook: str, exc: BaseException) -> PluginFailure:
    return PluginFailure(impl.plugin_name, _dist_of(impl), hook, f"{type(exc).__name__}: {exc}")


def _call_each(pm: pluggy.PluginManager, hook: str, register_for: Callable[[str], Callable[[Any], None]]) -> None:
    """Call a registration hook plugin by plugin so one broken plugin is skipped, not fatal."""
    for impl in getattr(pm.hook, hook).get_hookimpls():  # registration order: built-ins first
        try:
            impl.function(register=register_for(impl.plugin_name))
        except PluginConflictError:
            raise
        except Exception as exc:
            report_failure(_failure(impl, hook, exc), exc)


def build_registry(pm: pluggy.PluginManager, extra_files: Iterable[str | os.PathLike[str]] = ()) -> Registry:
    """Assemble a registry from registry files and a plugin manager's registrations."""
    reg = Registry(pm=pm)
    _call_each(pm, "zooadapt_register_families", lambda who: lambda fam: reg.add_family(fam, who))
    for entry in read_registry_file():
        reg.add_model(entry)
    for path in extra_files:
        for entry in read_registry_file(path):
            reg.add_model(entry)
    _call_each(pm, "zooadapt_register_models", lambda who: lambda entry: reg.add_model(entry, who))
    return reg


_lock = threading.Lock()
_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (built on first use)."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                extra = [p for p in os.environ.get("ZOOADAPT_REGISTRY", "").split(os.pathsep) if p]
                _registry = build_registry(load_plugins(), extra)
    return _registry


def reset_registry() -> None:
    global _registry
    with _lock:
        _registry = None


def list_models(pattern: str = "*") -> list[str]:
    """Model names matching an fnmatch pattern (``"resnet*"``), registry and plugins together."""
    return get_registry().names(pattern)
