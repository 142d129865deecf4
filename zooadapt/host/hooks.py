"""The host's one door to its plugins: a typed call per hook, through pluggy.

Every call goes through ``pm.hook.<name>`` (all plugins, wrappers included) or, where one
plugin's answer is meant (a registration, to know who registered what), through
``pm.subset_hook_caller``, so pluggy's semantics hold: ``wrapper=True`` and ``hookwrapper=True``
implementations, ``firstresult``, call order, ``pm.trace``. Nothing here calls a hook
implementation's function by hand.

What the host adds is failure isolation, because one broken third-party plugin must not take
zooadapt down: when an implementation raises anything but a ``ZooadaptError`` (a plugin's own
verdict, passed on as it is) or ``KeyboardInterrupt`` (the user's), ``SystemExit`` included (a
plugin calling ``sys.exit`` must not end the user's process), the plugin is found from the traceback, reported
(``plugin_manager.report_failure``: a warning, or ``PluginError`` under
``ZOOADAPT_STRICT_PLUGINS=1``) and the call is made again without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from ..contract.errors import PluginConflictError, PluginError, ZooadaptError
from .plugin_manager import PluginFailure, plugin_distribution, report_failure

if TYPE_CHECKING:
    from pathlib import Path

    import torch.nn as nn

    from ..contract.family import DataConfig, Family, HubCard, Layout, ModelEntry

__all__ = ["PluginHooks"]

T = TypeVar("T")
Register = Callable[[T], None]


class PluginHooks:
    """Typed calls into the plugins of one plugin manager (as tox's ``tox.plugin.manager``)."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._drop_unhashable()
        self._drop_unknown_hooks()

    def _drop_unknown_hooks(self) -> None:
        """Unregister (and report) a plugin registered in the process whose hook name matches no
        hook (a misspelling): entry points are checked as they load, but ``pm.register`` in a
        notebook or a test skipped the check, and the misspelt hook was silently never called."""
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.pm.get_name(exc.plugin) or "?"
                self.pm.unregister(exc.plugin)
                self._failed(name, "registration", exc)

    def _drop_unhashable(self) -> None:
        """Unregister (and report) a plugin object that has no hash: pluggy keeps plugins in sets
        (``get_plugins``, ``subset_hook_caller``), so one such object (a ``SimpleNamespace``, a
        dataclass with ``eq``) made every plugin's every call fail, the built-ins' too."""
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            try:
                hash(plugin)
            except TypeError:
                self.pm.unregister(name=name)
                self._failed(name, "registration", TypeError(
                    f"the plugin object ({type(plugin).__name__}) has no hash, and pluggy keeps plugins in sets; "
                    "register a module, or an instance of a class that keeps object's __eq__ and __hash__"))

    # -- registration: one plugin at a time, so each registration is attributed to its plugin ----

    def register_families(self, register_for: Callable[[str], Register[Family]]) -> None:
        """``zooadapt_register_families``: ``register_for(plugin)`` is the callback that plugin gets."""
        self._register_each("zooadapt_register_families", register_for)

    def register_models(self, register_for: Callable[[str], Register[ModelEntry]]) -> None:
        """``zooadapt_register_models``: ``register_for(plugin)`` is the callback that plugin gets."""
        self._register_each("zooadapt_register_models", register_for)

    def register_layouts(self, register_for: Callable[[str], Register[Layout]]) -> None:
        """``zooadapt_register_layouts``: ``register_for(plugin)`` is the callback that plugin gets."""
        self._register_each("zooadapt_register_layouts", register_for)

    # -- questions -----------------------------------------------------------------------------

    def resolve_model(self, name: str) -> ModelEntry | None:
        """The entry the plugins' resolvers give ``name``, or None when none claims it.

        Two plugins claiming one name is a ``PluginConflictError`` naming both. A resolver's
        ``ZooadaptError`` (timm: "no such tag, its tags are …") is the answer only when no other
        plugin resolves the name.
        """
        from ..contract.family import ModelEntry

        try:
            answers = [a for a in self._call("zooadapt_resolve_model", name=name) if a is not None]
        except PluginError:
            raise
        except ZooadaptError as verdict:  # ask each plugin on its own: another may know the name
            verdicts: list[ZooadaptError] = []
            answers = [a for _, got in self._each("zooadapt_resolve_model", verdicts, name=name) for a in got
                       if a is not None]
            if not answers:
                raise verdict from None
        odd = [a for a in answers if not isinstance(a, ModelEntry)]
        if odd:
            culprits = [plugin for plugin, got in self._each("zooadapt_resolve_model", [], name=name)
                        if any(a is not None and not isinstance(a, ModelEntry) for a in got)]
            raise PluginError(
                f"plugin {', '.join(repr(c) for c in culprits) or '?'} answered zooadapt_resolve_model({name!r}) with "
                f"a {type(odd[0]).__name__} ({odd[0]!r:.80}), not a zooadapt.plugin_api.ModelEntry (or None for a name "
                "it does not know). Fix the plugin, or disable it with ZOOADAPT_DISABLE_PLUGINS=name.")
        if len(answers) <= 1:
            return answers[0] if answers else None
        claimants = [plugin for plugin, got in self._each("zooadapt_resolve_model", [], name=name)
                     if any(a is not None for a in got)]
        if len(claimants) < 2:  # a wrapper added the extra answer: name what we can
            claimants = sorted({getattr(a, "provider", "?") for a in answers})
        raise PluginConflictError(
            f"model name {name!r} is claimed by {len(answers)} plugins' resolvers: "
            f"{', '.join(repr(c) for c in claimants)}. Disable one with ZOOADAPT_DISABLE_PLUGINS=name, "
            "or register the model under a name of its own.")

    def listed_models(self, pattern: str) -> dict[str, str]:
        """Names the plugins list for an fnmatch ``pattern`` (``zooadapt_list_models``), each
        with the first plugin (in registration order) that listed it."""
        found: dict[str, str] = {}
        for plugin, result in self._each("zooadapt_list_models", pattern=pattern):
            for names in result:
                if isinstance(names, (str, bytes)) or not all(isinstance(n, str) for n in names or ()):
                    # a bare string would list its letters as names
                    self._failed(plugin, "zooadapt_list_models", TypeError(
                        f"returned {names!r:.80}, not a list of model names"))
                    continue
                for listed in names or ():
                    found.setdefault(listed, plugin)
        return found

    def claims_name(self, name: str) -> bool:
        """True when a plugin says ``name`` is a model name although it reads like a path."""
        return bool(self._call("zooadapt_claims_name", name=name))

    def data_config(self, model: nn.Module) -> DataConfig | None:
        """The preprocessing a plugin knows for a model zooadapt did not load, or None."""
        return self._call("zooadapt_data_config", model=model)

    def hub_card(self, model: nn.Module, config: Mapping[str, Any], folder: Path) -> HubCard | None:
        """What the plugins add to an upload (``zooadapt_hub_card``), merged: every plugin's tags in
        plugin order, and the one library whose files were written; None when no plugin adds anything.
        Two plugins naming a library is a ``PluginConflictError`` naming both: the card has one."""
        from ..contract.family import HubCard

        tags: list[str] = []
        library: tuple[str, HubCard] | None = None
        answers = [(plugin, card) for plugin, got in self._each("zooadapt_hub_card", model=model, config=config,
                                                                folder=folder) for card in got if card is not None]
        for plugin, card in answers:
            if not isinstance(card, HubCard):
                self._failed(plugin, "zooadapt_hub_card", TypeError(f"returned a {type(card).__name__}, not a HubCard"))
                continue
            tags += [t for t in card.tags if t not in tags]
            if card.library:
                if library is not None:
                    raise PluginConflictError(
                        f"plugins {library[0]!r} and {plugin!r} both wrote a library's files for this upload "
                        f"({library[1].library!r}, {card.library!r}), and a model card names one library. Disable "
                        "one with ZOOADAPT_DISABLE_PLUGINS=name, or push the model without it.")
                library = (plugin, card)
        if not tags and library is None:
            return None
        chosen = library[1] if library else HubCard()
        return HubCard(tags=tuple(tags), library=chosen.library, snippet=chosen.snippet)

    # -- machinery -------------------------------------------------------------------------------

    def _implementers(self, hook: str) -> list[tuple[str, object]]:
        """(name, plugin) of the plugins with a non-wrapper implementation, in registration order."""
        seen: list[tuple[str, object]] = []
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            if impl.wrapper or impl.hookwrapper or any(p is impl.plugin for _, p in seen):
                continue
            seen.append((impl.plugin_name, impl.plugin))
        return seen

    def _only(self, hook: str, plugin: object) -> Any:
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)

    def _each(self, hook: str, verdicts: list[ZooadaptError] | None = None, **kwargs: Any) -> list[tuple[str, Any]]:
        """(plugin name, its result) for every implementing plugin, a broken one reported and left
        out. A plugin's ``ZooadaptError`` is raised, or collected in ``verdicts`` when given."""
        out = []
        for name, plugin in self._implementers(hook):
            try:
                out.append((name, self._only(hook, plugin)(**kwargs)))
            except ZooadaptError as exc:
                if verdicts is None:
                    raise
                verdicts.append(exc)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit too: a plugin must not end the user's process
                self._failed(name, hook, exc)
        return out

    def _register_each(self, hook: str, register_for: Callable[[str], Callable[[Any], None]]) -> None:
        """Each plugin's registrations are kept only when its implementation returns: a plugin
        that raises halfway (even a ``ZooadaptError``, e.g. a malformed entry) is reported and
        leaves nothing behind. A name two plugins register is the registering side's to refuse
        (by name: ``Registry.add_family``, ``host.layouts``); a conflict it raises is passed on."""
        for name, plugin in self._implementers(hook):
            pending: list[Any] = []
            try:
                self._only(hook, plugin)(register=pending.append)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit too: a plugin must not end the user's process
                self._failed(name, hook, exc)
                continue
            register = register_for(name)
            try:
                for item in pending:
                    register(item)
            except PluginConflictError:
                raise
            except PluginError as exc:  # it registered something that is not a Family / ModelEntry
                self._failed(name, hook, exc)

    def _call(self, hook: str, **kwargs: Any) -> Any:
        """``pm.hook.<hook>(**kwargs)``; a plugin that raises is reported and the call repeated without it."""
        removed: list[object] = []
        while True:
            caller = (getattr(self.pm.hook, hook) if not removed
                      else self.pm.subset_hook_caller(hook, remove_plugins=removed))
            try:
                return caller(**kwargs)
            except (ZooadaptError, KeyboardInterrupt):
                raise
            except BaseException as exc:  # SystemExit too: a plugin must not end the user's process
                culprit = self._culprit(hook, exc.__traceback__)
                if culprit is None or any(culprit[1] is r for r in removed):
                    raise PluginError(f"calling the {hook} hook failed: {type(exc).__name__}: {exc}") from exc
                self._failed(culprit[0], hook, exc)
                removed.append(culprit[1])

    def _culprit(self, hook: str, tb: TracebackType | None) -> tuple[str, object] | None:
        """The plugin whose implementation is the innermost one on the traceback."""
        codes = {impl.function.__code__: (impl.plugin_name, impl.plugin)
                 for impl in getattr(self.pm.hook, hook).get_hookimpls()}
        found = None
        while tb is not None:
            found = codes.get(tb.tb_frame.f_code, found)
            tb = tb.tb_next
        return found

    def _failed(self, plugin: str, hook: str, exc: BaseException) -> None:
        report_failure(PluginFailure(plugin, plugin_distribution(plugin), hook, f"{type(exc).__name__}: {exc}"), exc)
