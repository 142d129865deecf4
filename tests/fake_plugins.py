"""Pretend-installed third-party plugins: entry points in the ``zooadapt`` group without a
real distribution, so tests can exercise discovery, failures and allow/block lists."""

from __future__ import annotations

import importlib.metadata as md
import types
from collections.abc import Iterable

import pytest


def install_entry_points(monkeypatch: pytest.MonkeyPatch, plugins: Iterable[tuple[str, str, str]]) -> None:
    """Add entry points ``(name, distribution, module)`` before the real ones of the group."""
    eps = []
    for name, dist, module in plugins:
        ep = md.EntryPoint(name=name, value=module, group="zooadapt")
        eps.append(types.SimpleNamespace(name=name, dist=types.SimpleNamespace(name=dist, version="9.9"),
                                         load=ep.load))
    real = md.entry_points
    monkeypatch.setattr(md, "entry_points",
                        lambda **kw: [*eps, *real(**kw)] if kw.get("group") == "zooadapt" else real(**kw))


def one_family_plugin(family: object, entry: object) -> object:
    """A plugin object registering one family and one model entry, as a test or a notebook writes one."""
    from zooadapt.plugin_api import hookimpl

    class Plugin:
        @hookimpl
        def zooadapt_register_families(self, register):  # type: ignore[no-untyped-def]
            register(family)

        @hookimpl
        def zooadapt_register_models(self, register):  # type: ignore[no-untyped-def]
            register(entry)

    return Plugin()
