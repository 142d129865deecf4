"""The public surface (issue #21): about twenty names at the top, one home for everything else,
and every old spelling still working for one release with a ``DeprecationWarning`` naming its
new home.

The sweeps walk every name: each public name resolves without a warning; each old top-level name
(plugin API, distributed helpers, result types, every error class but ``ZooadaptError``) warns,
names its home, and is the very object found there; each public module's ``__all__`` resolves.
The suite turns the warnings into errors (pyproject's ``filterwarnings``), so no other test may
use an old spelling.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import zooadapt
from zooadapt.contract import errors as contract_errors

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_MODULES = ("errors", "rules", "plugin_api", "distributed", "types", "lightning")
OLD_NAMES = sorted(set(zooadapt._MOVED_NAMES) | (set(contract_errors.__all__) - {"ZooadaptError"}))


def test_the_top_level_is_about_twenty_names():
    assert len(zooadapt.__all__) <= 24, zooadapt.__all__
    assert {"load", "load_weights", "identify", "freeze", "param_groups", "save", "ZooadaptError"} <= set(
        zooadapt.__all__)
    assert not set(zooadapt.__all__) & set(OLD_NAMES)


@pytest.mark.parametrize("name", sorted(set(zooadapt.__all__) - {"__version__"}))
def test_each_public_name_resolves_without_a_warning(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = getattr(zooadapt, name)
    assert value is not None and (callable(value) or isinstance(value, type))


@pytest.mark.parametrize("name", OLD_NAMES)
def test_an_old_top_level_name_warns_naming_its_home_and_is_the_same_object(name):
    home = zooadapt._deprecated_home(name)
    assert home is not None
    with pytest.warns(DeprecationWarning, match=rf"zooadapt\.{name} moved: use {home}\.{name} .*zooadapt 0\.3"):
        old = getattr(zooadapt, name)
    assert old is getattr(importlib.import_module(home), name)


def test_the_warning_points_at_the_users_line():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        getattr(zooadapt, "StageMap")  # noqa: B009  (an old spelling on purpose)
    assert [Path(w.filename).name for w in caught] == [Path(__file__).name]


def test_an_old_from_import_still_works():
    with pytest.warns(DeprecationWarning, match="zooadapt.plugin_api.Family"):
        exec("from zooadapt import Family", namespace := {})  # an old spelling on purpose
    from zooadapt.plugin_api import Family as new

    Family = namespace["Family"]

    assert Family is new


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_each_public_module_exports_what_it_lists(module):
    if module == "lightning":
        pytest.importorskip("lightning")
    mod = importlib.import_module(f"zooadapt.{module}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing
    assert getattr(zooadapt, module) is mod  # reachable as an attribute, as any subpackage


def test_every_error_lives_in_zooadapt_errors_and_derives_from_zooadapt_error():
    from zooadapt import errors

    classes = [getattr(errors, name) for name in errors.__all__ if name != "MERGED"]
    assert all(issubclass(c, zooadapt.ZooadaptError) for c in classes)
    assert errors.ZooadaptError is zooadapt.ZooadaptError


def test_the_plugin_api_holds_everything_the_built_in_plugins_import():
    """A third party writes against the API zooadapt's own families are proven with: every
    name a built-in plugin (or the example plugin) imports from zooadapt comes from
    ``zooadapt.plugin_api`` and is listed there."""
    from zooadapt import plugin_api

    sources = [*sorted((ROOT / "plugins").glob("*.py")), ROOT / "examples/zooadapt-squeezenet/zooadapt_squeezenet.py"]
    imported: dict[str, set[str]] = {}
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zooadapt"):
                imported.setdefault(node.module or "", set()).update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("zooadapt") for a in node.names), path
    assert set(imported) == {"zooadapt.plugin_api"}, imported
    assert imported["zooadapt.plugin_api"] <= set(plugin_api.__all__)


def test_load_takes_the_stages_as_features_only_and_build_options_as_keywords():
    new = zooadapt.load("resnet18", pretrained=False, device="meta", features_only=["layer1", "layer3"])
    with pytest.warns(DeprecationWarning, match=r"load\(features_only=\['layer1', 'layer3'\]\)"):
        old = zooadapt.load("resnet18", pretrained=False, device="meta", features_only=True,
                            out_stages=["layer1", "layer3"])
    assert new.out_stages == old.out_stages == ("layer1", "layer3")
    by_index = zooadapt.load("resnet18", pretrained=False, device="meta", features_only=2)
    assert by_index.out_stages == ("layer2",)  # index 0 is the stem
    with pytest.raises(zooadapt.errors.InvalidArgumentError, match="pass the stages once"), \
            pytest.warns(DeprecationWarning):
        zooadapt.load("resnet18", pretrained=False, features_only=["layer1"], out_stages=["layer2"])


def test_model_kwargs_still_reach_the_builder_with_a_warning():
    with pytest.warns(DeprecationWarning, match=r"pass the builder's options as keywords \(drop_path_rate=\.\.\.\)"):
        old = zooadapt.load("test_convnext", pretrained=False, model_kwargs={"drop_path_rate": 0.1})
    new = zooadapt.load("test_convnext", pretrained=False, drop_path_rate=0.1)
    rates = [[m.drop_prob for m in net.modules() if type(m).__name__ == "DropPath"] for net in (old, new)]
    assert rates[0] == rates[1] and rates[0] and max(rates[0]) == pytest.approx(0.1)


def test_no_public_name_imports_torch_until_used():
    code = ("import sys, zooadapt, zooadapt.errors, zooadapt.rules, zooadapt.plugin_api\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert isinstance(zooadapt.load("resnet18", pretrained=False, device="meta"), torch.nn.Module)


@pytest.mark.parametrize(("old", "new"), sorted(contract_errors.MERGED.items()))
def test_a_merged_error_class_answers_by_its_old_name_with_a_warning(old, new):
    """An error class folded into its parent (raised in one place, told apart by no caller) is
    still importable by its old name, as the parent: ``except`` clauses keep catching it."""
    from zooadapt import errors

    with pytest.warns(DeprecationWarning, match=rf"zooadapt\.errors\.{old} is now zooadapt\.errors\.{new}"):
        merged = getattr(errors, old)
    assert merged is getattr(errors, new) and old not in errors.__all__
    with pytest.warns(DeprecationWarning, match=rf"zooadapt\.{old} moved: use zooadapt\.errors\.{old}"), \
            pytest.warns(DeprecationWarning, match=rf"is now zooadapt\.errors\.{new}"):
        assert getattr(zooadapt, old) is merged
