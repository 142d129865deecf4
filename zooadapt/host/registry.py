"""The model registry: ``registry.toml`` plus what plugins register, with conflicts refused by name.

Reading it needs no torch, so ``zooadapt list`` stays fast. Extra registry files can be
named in ``ZOOADAPT_REGISTRY`` (paths separated by ``os.pathsep``) for a team's own models.
They are read only when they are regular files of at most ``MAX_TEXT_BYTES`` (``read_text_file``):
a variable naming a FIFO, ``/dev/zero`` or a directory is an error, not a hang.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pluggy

from ..contract.caches import ProcessCache
from ..contract.errors import (
    CheckpointFormatError,
    PluginConflictError,
    PluginError,
    RegistryError,
    UnknownModelError,
    ZooadaptError,
    suggest,
)
from ..contract.family import DataConfig, Family, ModelEntry, WeightSource
from .hooks import PluginHooks
from .plugin_manager import disabled_plugins, load_plugins

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Registry", "get_registry", "read_registry_file", "build_registry", "reset_registry", "list_models",
           "filter_names", "read_text_file", "MAX_TEXT_BYTES"]

MAX_TEXT_BYTES = 16 << 20
"""The largest registry or lock file read (16 MiB): the shipped registry is ~10 kB, a lock file
of a thousand models ~0.5 MB."""


def read_text_file(path: str | os.PathLike[str], error: type[ZooadaptError] = RegistryError,
                   fix: str = "check the path") -> str:
    """The UTF-8 text of a small regular file, read without blocking on a FIFO or reading a device
    forever: anything but a regular file of at most ``MAX_TEXT_BYTES`` raises ``error`` naming the
    file and ``fix``. A missing file raises ``FileNotFoundError`` (callers say what it should be)."""
    where = os.fspath(path)
    try:
        fd = os.open(where, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO without a writer: no wait
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"{where} cannot be read ({exc.strerror or exc}); {fix}") from None
    try:
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            raise error(f"{where} is a directory, not a file; {fix}")
        if not stat.S_ISREG(status.st_mode):
            raise error(f"{where} is not a regular file (a FIFO, a device or a socket), so it is not read; {fix}")
        if status.st_size > MAX_TEXT_BYTES:
            raise error(f"{where} is {status.st_size:,} bytes, more than the {MAX_TEXT_BYTES >> 20} MiB such a file "
                        f"may hold; {fix}")
        chunks, total = [], 0
        while total <= MAX_TEXT_BYTES:  # it may grow while read: never past the cap
            chunk = os.read(fd, min(1 << 20, MAX_TEXT_BYTES + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > MAX_TEXT_BYTES:
            raise error(f"{where} grew past {MAX_TEXT_BYTES >> 20} MiB while it was read; {fix}")
    except OSError as exc:
        raise error(f"{where} cannot be read ({exc.strerror or exc}); {fix}") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{where} is not UTF-8 text (byte {exc.start:,} cannot be decoded); {fix}") from None

_ENTRY_KEYS = {"family", "arch", "hub", "file", "revision", "url", "path", "sha256", "num_classes",
               "description", "data", "build_kwargs", "headless"}


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
    data_fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()} if data else {}
    return ModelEntry(
        name=name,
        family=table["family"],
        arch=table["arch"],
        source=source,
        num_classes=int(table.get("num_classes", 1000)),
        description=table.get("description", ""),
        data=DataConfig(**data_fields) if data else None,
        build_kwargs=dict(table.get("build_kwargs", {})),
        provider=provider,
        headless=_flag(table.get("headless", False), f"{provider}: model {name!r}: headless"),
    )


def _flag(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise RegistryError(f"{where} = {value!r}: write true or false")
    return value


def _shipped_registry_text() -> str:
    """The top-level ``registry.toml``: in a source checkout (an editable install) the file itself;
    a wheel ships none (the file holds no entries, only the format in comments), so it reads as empty."""
    checkout = Path(__file__).resolve().parent.parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "registry.toml").is_file():
        return (checkout / "registry.toml").read_text(encoding="utf-8")
    shipped = resources.files("zooadapt").joinpath("registry.toml")
    return shipped.read_text(encoding="utf-8") if shipped.is_file() else ""


def read_registry_file(path: str | os.PathLike[str] | None = None) -> list[ModelEntry]:
    """Parse a registry file (default: the one shipped with zooadapt) into model entries."""
    if path is None:
        text = _shipped_registry_text()
        provider = "registry.toml"
    else:
        fix = "ZOOADAPT_REGISTRY names registry files (TOML, [models.NAME] tables), separated by " + repr(os.pathsep)
        try:
            text = read_text_file(path, RegistryError, fix)
        except FileNotFoundError:
            raise RegistryError(f"registry file {os.fspath(path)} does not exist; {fix}") from None
        provider = str(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{provider} is not valid TOML: {exc}") from exc
    except RecursionError:  # nested arrays thousands deep
        raise RegistryError(f"{provider} nests its values too deeply to be a registry file") from None
    models = doc.get("models", {})
    if not isinstance(models, dict) or not all(isinstance(t, dict) for t in models.values()):
        raise RegistryError(f"{provider}: 'models' must hold one table per model ([models.NAME] with family = …, "
                            "arch = …)")
    return [_entry_from_table(name, table, provider) for name, table in models.items()]


@dataclass
class Registry:
    """Families and model entries, each with the provider that registered it.

    ``unavailable`` holds the entries of registry files whose family no loaded plugin provides,
    with the reason (shown by ``zooadapt list``; loading one raises with that reason).
    ``disabled`` maps the families and models of switched-off built-in plugins to the reason, so
    asking for one says so instead of "unknown".
    ``family_conflicts`` and ``model_conflicts`` map a name two providers registered to the
    ``PluginConflictError`` message naming them: neither is used (zooadapt never picks one), asking
    for that name raises it, and every other name still loads.
    """

    families: dict[str, Family] = field(default_factory=dict)
    models: dict[str, ModelEntry] = field(default_factory=dict)
    pm: pluggy.PluginManager | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    disabled: dict[str, str] = field(default_factory=dict)
    family_conflicts: dict[str, str] = field(default_factory=dict)
    model_conflicts: dict[str, str] = field(default_factory=dict)
    _claimants: dict[tuple[str, str], list[str]] = field(default_factory=dict, repr=False)

    def add_family(self, family: Family, provider: str) -> None:
        if not isinstance(family, Family):
            raise PluginError(f"plugin {provider!r} registered {family!r}, which is not a zooadapt.plugin_api.Family")
        existing = self.families.get(family.name)
        if existing is not None or family.name in self.family_conflicts:
            first = [existing.provider] if existing is not None else []
            self.family_conflicts[family.name] = self._conflict(
                "family", family.name, first, provider, "Uninstall or disable all but one of them "
                "(ZOOADAPT_DISABLE_PLUGINS=name); its models load again then.")
            self.families.pop(family.name, None)
            return
        self.families[family.name] = family if family.provider else replace(family, provider=provider)

    def _conflict(self, kind: str, name: str, first: list[str], provider: str, fix: str) -> str:
        """The message for ``name`` claimed once more by ``provider``, naming every claimant so far."""
        claimants = self._claimants.setdefault((kind, name), first)
        claimants.append(provider)
        listed = " and ".join(", ".join(repr(c) for c in claimants).rsplit(", ", 1))
        return (f"{kind} {name!r} is registered by {len(claimants)} providers: {listed}. zooadapt uses none of "
                f"them rather than pick one, so {name!r} cannot load; every other name can. {fix}")

    def add_model(self, entry: ModelEntry, provider: str | None = None) -> None:
        if not isinstance(entry, ModelEntry):
            raise PluginError(f"plugin {provider!r} registered {entry!r}, which is not a "
                              "zooadapt.plugin_api.ModelEntry")
        if provider and entry.provider == "registry.toml":
            entry = replace(entry, provider=provider)
        existing = self.models.get(entry.name)
        if existing is not None:
            first = [] if entry.name in self.model_conflicts else [existing.provider]
            self.model_conflicts[entry.name] = self._conflict(
                "model", entry.name, first, entry.provider,
                "Rename one, or disable a plugin with ZOOADAPT_DISABLE_PLUGINS=name.")
            return
        self.models[entry.name] = entry

    def family(self, name: str) -> Family:
        try:
            return self.families[name]
        except KeyError:
            pass
        if name in self.family_conflicts:
            raise PluginConflictError(self.family_conflicts[name])
        if name in self.disabled:
            raise PluginError(f"family {name!r}: {self.disabled[name]}")
        raise UnknownModelError(
            f"no plugin provides family {name!r}.{suggest(name, self.families)} Installed families: "
            f"{', '.join(sorted(self.families)) or 'none'}. Install the plugin that provides it, or "
            "check `zooadapt plugins` for plugins that failed to load."
        ) from None

    def entry(self, name: str) -> ModelEntry:
        """The entry for ``name``: registered names first, then plugins' resolvers."""
        if name in self.model_conflicts:  # never the first claimant's entry, nor a resolver's guess
            raise PluginConflictError(self.model_conflicts[name])
        entry = self.models.get(name)
        if entry is not None:
            return entry
        if name in self.disabled:
            raise PluginError(f"model {name!r}: {self.disabled[name]}")
        if self.pm is not None:
            resolved = PluginHooks(self.pm).resolve_model(name)
            if resolved is not None:
                return resolved
        _check_save_leftovers(name)
        raise UnknownModelError(  # the names plugins list too (timm's architectures): the ones a typo misses most
            f"unknown model {name!r}.{suggest(name, [*self.models, *self.names()])} "
            "List the available names with `zooadapt list` (or zooadapt.list_models('pattern*'))."
        )

    def why_unavailable(self, name: str) -> str | None:
        """Why a registered model cannot load here (its family is missing), or None."""
        return self.unavailable.get(name)

    def names(self, pattern: str = "*") -> list[str]:
        """Loadable names matching ``pattern``: registered entries, then names plugins list."""
        names = {n for n in self.models if fnmatch.fnmatchcase(n, pattern) and n not in self.unavailable}
        if self.pm is not None:
            names.update(PluginHooks(self.pm).listed_models(pattern))
        return sorted(names)


_STAGING_PREFIX = ".zooadapt-save-"
"""``loading.saving.STAGING_PREFIX``: a save's staging folder, named here (the host layer is below
``loading``) to say what a folder holding only one is."""


def _check_save_leftovers(name: str) -> None:
    """A name that is a folder holding only what an interrupted ``zooadapt.save`` left (its
    staging folder, no ``zooadapt.json``) is ``CheckpointFormatError``, not an unknown model."""
    from ..contract.saved_format import CONFIG_NAME

    try:
        folder = os.path.expanduser(name)
        if not os.path.isdir(folder) or os.path.exists(os.path.join(folder, CONFIG_NAME)):
            return
        left = sorted(e for e in os.listdir(folder) if e.startswith(_STAGING_PREFIX))
    except (OSError, ValueError):  # a name too long or odd for the file system is just a name
        return
    if left:
        raise CheckpointFormatError(
            f"{name} holds no saved model, only what a zooadapt.save into it left ({', '.join(left[:3])}): that save "
            f"was killed before it wrote {CONFIG_NAME} (or is still running). Wait for a running save to finish, or "
            "save the model again; the next save removes these leftovers.")


def _missing_family(entry: ModelEntry, reg: Registry) -> str:
    if entry.family in reg.family_conflicts:
        return f"unavailable: {reg.family_conflicts[entry.family]}"
    if entry.family in reg.disabled:
        return f"unavailable: {reg.disabled[entry.family]}"
    return (f"unavailable: no installed plugin provides its family {entry.family!r}; install the plugin "
            "that provides it (`zooadapt plugins` lists those installed and any that failed)")


def build_registry(pm: pluggy.PluginManager, extra_files: Iterable[str | os.PathLike[str]] = (),
                   disabled: Mapping[str, object] = MappingProxyType({})) -> Registry:
    """Assemble a registry: the plugins' families and models, then registry files' entries.

    ``disabled``: switched-off plugins (name -> reason, or their module), whose families and
    models are remembered only to say so when asked for.
    """
    reg = Registry(pm=pm)
    hooks = PluginHooks(pm)
    hooks.register_families(lambda who: lambda fam: reg.add_family(fam, who))
    hooks.register_models(lambda who: lambda entry: reg.add_model(entry, who))
    for path in (None, *extra_files):
        for entry in read_registry_file(path):
            reg.add_model(entry)
    for name, reason in disabled.items():
        _remember_disabled(reg, name, str(reason))
    for entry in reg.models.values():
        if entry.name in reg.model_conflicts:
            reg.unavailable[entry.name] = f"unavailable: {reg.model_conflicts[entry.name]}"
        elif entry.family not in reg.families:
            reg.unavailable[entry.name] = _missing_family(entry, reg)
    _report_conflicts(reg)
    return reg


def _report_conflicts(reg: Registry) -> None:
    """Say each conflict once per registry build (a warning; ``ZOOADAPT_STRICT_PLUGINS=1`` raises the first)."""
    from .plugin_manager import log, strict_mode

    messages = [*reg.family_conflicts.values(), *reg.model_conflicts.values()]
    if messages and strict_mode():
        raise PluginConflictError(messages[0])
    for message in messages:
        log.warning("%s", message)


def _remember_disabled(reg: Registry, plugin: str, reason: str) -> None:
    """Note the families and models of a switched-off built-in plugin (asked through a plugin
    manager of its own, so nothing of it is active)."""
    from .plugin_manager import disabled_builtin, get_plugin_manager

    module = disabled_builtin(plugin)
    if module is None:
        return
    scratch = get_plugin_manager()
    scratch.register(module, name=plugin)
    why = f"its plugin {plugin!r} is disabled ({reason}); remove it from that list to use it"
    hooks = PluginHooks(scratch)

    def note_as_disabled(who: str) -> Callable[[object], None]:
        def note(item: object) -> None:
            reg.disabled.setdefault(getattr(item, "name", "?"), why)
        return note

    hooks.register_families(note_as_disabled)
    hooks.register_models(note_as_disabled)


_lock = threading.Lock()
_registries: ProcessCache[Any, Registry] = ProcessCache(
    "registry", 4, "the plugin manager, ZOOADAPT_REGISTRY's value, and the size, mtime and inode of each file it "
    "names")
"""The process-wide registry: built on first use, and again when the plugins are reloaded, the
variable names other files, or one of them is edited (``zooadapt.clear_caches()`` rebuilds it too)."""


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None  # read_registry_file names the problem
    return status.st_size, status.st_mtime_ns, status.st_ino


def get_registry() -> Registry:
    """The process-wide registry (see ``_registries`` for when it is built again)."""
    pm = load_plugins()
    extra = [p for p in os.environ.get("ZOOADAPT_REGISTRY", "").split(os.pathsep) if p]
    key = (pm, tuple((p, _stamp(p)) for p in extra))
    reg = _registries.get(key)
    if reg is None:
        with _lock:
            reg = _registries.get(key)
            if reg is None:
                reg = _registries.put(key, build_registry(pm, extra, disabled_plugins()))
    return reg


def reset_registry() -> None:
    """Build the registry again on its next use (after a plugin was registered or removed)."""
    _registries.clear()


def filter_names(names: Iterable[str], pattern: str = "*", *, include: str | Iterable[str] | None = None,
                 exclude: str | Iterable[str] | None = None) -> list[str]:
    """Sorted ``names`` that match ``pattern`` and, as torchvision's ``list_models`` reads them,
    any ``include`` pattern (all names when None), and no ``exclude`` pattern (fnmatch wildcards)."""
    def patterns(spec: str | Iterable[str] | None) -> list[str]:
        return [spec] if isinstance(spec, str) else list(spec or ())

    wanted, unwanted = patterns(include), patterns(exclude)
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern)
                  and (not wanted or any(fnmatch.fnmatchcase(n, p) for p in wanted))
                  and not any(fnmatch.fnmatchcase(n, p) for p in unwanted))


def list_models(pattern: str = "*", *, include: str | Iterable[str] | None = None,
                exclude: str | Iterable[str] | None = None) -> list[str]:
    """Model names matching an fnmatch pattern (``"resnet*"``), registry and plugins together.

    ``include``/``exclude`` filter as in torchvision's ``list_models``: a pattern or a list of
    them; a name is kept when it matches any ``include`` and no ``exclude``.
    """
    return filter_names(get_registry().names(pattern), include=include, exclude=exclude)
