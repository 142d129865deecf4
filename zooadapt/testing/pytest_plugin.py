"""zooadapt's pytest plugin: the local Hub and the conformance check as fixtures for plugin authors.

Installed with zooadapt (entry point ``pytest11``), so a plugin's test suite gets, with no conftest:

* ``zooadapt_hub``: a ``LocalHub`` answering like the Hugging Face Hub on 127.0.0.1, for the
  session. huggingface_hub reads its endpoint when it is imported, so the Hub is switched on before
  any test module is collected, and only when asked: ``--zooadapt-local-hub`` on the command line
  or ``zooadapt_local_hub = true`` in the ini file. Without it the fixture skips the test, saying so.
* ``zooadapt_hub_cache``: an empty Hub cache for one test (the path), offline mode off.
* ``zooadapt_check_family``: ``zooadapt.testing.check_family`` (a ``Family`` or a registered family's
  name, an architecture), which raises ``ConformanceError`` listing every problem.
* ``zooadapt_register_plugin``: ``register(plugin, name)`` puts a plugin object into zooadapt's
  plugin manager for one test (as if installed) and takes it out afterwards.

Importing this module costs next to nothing (no torch, no server) so that every pytest run in an
environment with zooadapt stays as fast as without it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .hub import LocalHub

__all__ = ["zooadapt_hub", "zooadapt_hub_cache", "zooadapt_check_family", "zooadapt_register_plugin"]

_OPTION = "zooadapt_local_hub"
_HUB_KEY = pytest.StashKey["LocalHub"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("zooadapt")
    group.addoption("--zooadapt-local-hub", action="store_true", dest=_OPTION, default=None,
                    help="serve the zooadapt_hub fixture: a local stand-in for the Hugging Face Hub")
    parser.addini(_OPTION, type="bool", default=False,
                  help="serve the zooadapt_hub fixture (as --zooadapt-local-hub)")


def _enabled(config: pytest.Config) -> bool:
    flag = config.getoption(_OPTION)
    return bool(flag) if flag is not None else bool(config.getini(_OPTION))


def pytest_configure(config: pytest.Config) -> None:
    if not _enabled(config) or _HUB_KEY in config.stash:
        return
    if "huggingface_hub" in sys.modules:
        raise pytest.UsageError(
            "--zooadapt-local-hub: huggingface_hub was imported before the local Hub could be set up (it "
            "reads HF_ENDPOINT once, on import). Import it inside tests or fixtures, not at the top of "
            "conftest.py or of another plugin.")
    from .hub import LocalHub, hub_environment

    hub = LocalHub().start()
    home = tempfile.mkdtemp(prefix="zooadapt-pytest-hf-")
    os.environ.update(hub_environment(hub.url, home))
    os.environ.pop("HF_HUB_OFFLINE", None)
    os.environ.pop("HF_TOKEN", None)
    config.stash[_HUB_KEY] = hub


def pytest_unconfigure(config: pytest.Config) -> None:
    hub = config.stash.get(_HUB_KEY, None)
    if hub is not None:
        hub.stop()
        del config.stash[_HUB_KEY]


@pytest.fixture(scope="session")
def zooadapt_hub(pytestconfig: pytest.Config) -> LocalHub:
    """The session's local Hub: ``hub.add_file(repo_id, filename, data)`` publishes a file that
    ``zooadapt.load`` and ``hf_hub_download`` then fetch through their real download path."""
    hub = pytestconfig.stash.get(_HUB_KEY, None)
    if hub is None:
        pytest.skip("the local Hub is off: run pytest with --zooadapt-local-hub, or set "
                    "zooadapt_local_hub = true in the ini file")
    return hub


@pytest.fixture
def zooadapt_hub_cache(zooadapt_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty Hub cache for this test (so nothing leaks between tests), online; Hub faults
    injected by the test are cleared afterwards."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield cache
    zooadapt_hub.faults.clear()


@pytest.fixture
def zooadapt_check_family() -> Callable[..., Any]:
    """``check_family(family_or_name, arch=None)``: zooadapt's conformance check for a family."""
    from .conformance import check_family

    return check_family


@pytest.fixture
def zooadapt_register_plugin() -> Iterator[Callable[[object, str], object]]:
    """``register(plugin, name)``: the plugin joins zooadapt's plugins for this test only (nothing
    remembered with it in the process outlives the test: ``zooadapt.clear_caches()``)."""
    from ..contract.caches import clear_caches
    from ..host.plugin_manager import load_plugins
    from ..host.registry import reset_registry

    added: list[object] = []

    def register(plugin: object, name: str) -> object:
        load_plugins().register(plugin, name=name)
        added.append(plugin)
        reset_registry()
        clear_caches()
        return plugin

    yield register
    pm = load_plugins()
    for plugin in added:
        if pm.is_registered(plugin):
            pm.unregister(plugin)
    reset_registry()
    clear_caches()
