"""The ``zooadapt_hub_card`` hook: what plugins add to a ``push_to_hub`` upload, merged by the host.

The core names no library: timm's ``config.json`` and ``timm`` tag come from the timm plugin
through this hook (``plugins/timm_hub.py``); the card is built from the merged answer.
"""

from __future__ import annotations

import json

import pytest

import zooadapt
from zooadapt.contract.errors import PluginConflictError
from zooadapt.host.hooks import PluginHooks
from zooadapt.host.plugin_manager import load_plugins
from zooadapt.loading.model_card import build_model_card
from zooadapt.plugin_api import HubCard, get_registry, hookimpl

CONFIG = {"family": "resnet", "arch": "resnet18", "model": "resnet18", "num_classes": 3, "labels": None,
          "base_weights": {"source": "hf://timm/resnet18.tv_in1k@main/model.safetensors"},
          "zooadapt_version": "0", "freeze_spec": None, "frozen": []}


class Tagger:
    def __init__(self, card):
        self.card = card

    @hookimpl
    def zooadapt_hub_card(self, model, config, folder):
        return self.card


@pytest.fixture
def plugins():
    """The loaded plugin manager; plugins a test registers are unregistered after it."""
    pm = load_plugins()
    added = []

    def register(plugin, name):
        pm.register(plugin, name=name)
        added.append(name)

    yield pm, register
    for name in added:
        pm.unregister(name=name)


def test_hook_zooadapt_hub_card(plugins, tmp_path):
    pm, register = plugins
    hooks = PluginHooks(pm)
    assert hooks.hub_card(None, {**CONFIG, "base_weights": None}, tmp_path) is None  # nobody adds anything
    assert hooks.hub_card(None, CONFIG, tmp_path) == HubCard(tags=("timm",))  # timm's weights: the timm plugin tags
    assert list(tmp_path.iterdir()) == []  # not a timm model: timm's config.json is not written
    register(Tagger(HubCard(tags=("flowers", "timm"))), "tagger")
    register(Tagger(HubCard(library="mylib", snippet="import mylib\nmylib.load('{repo_id}')")), "mylib")
    merged = hooks.hub_card(None, CONFIG, tmp_path)
    assert merged == HubCard(tags=("timm", "flowers"), library="mylib", snippet="import mylib\nmylib.load('{repo_id}')")
    card = build_model_card(CONFIG, "me/r18", extras=merged)
    assert card.data.library_name == "mylib"
    assert {"zooadapt", "resnet", "timm", "flowers"} <= set(card.data.tags)
    assert "or with mylib alone" in card.text and "mylib.load('me/r18')" in card.text


def test_two_plugins_naming_a_library_conflict_naming_both(plugins, tmp_path):
    _, register = plugins
    register(Tagger(HubCard(library="one")), "first")
    register(Tagger(HubCard(library="two")), "second")
    with pytest.raises(PluginConflictError, match=r"'first' and 'second'.*'one', 'two'"):
        PluginHooks(plugins[0]).hub_card(None, CONFIG, tmp_path)


def test_a_plugin_answering_something_else_is_reported_and_left_out(plugins, tmp_path, caplog):
    _, register = plugins
    register(Tagger({"tags": ["x"]}), "sloppy")
    got = PluginHooks(plugins[0]).hub_card(None, CONFIG, tmp_path)
    assert got == HubCard(tags=("timm",))
    assert "sloppy" in caplog.text and "not a HubCard" in caplog.text


def test_without_plugins_the_card_is_zooadapts_own(tmp_path):
    card = build_model_card(CONFIG, "me/r18")
    assert card.data.library_name == "zooadapt" and "timm" not in card.data.tags
    assert "alone" not in card.text


@pytest.mark.slow
def test_the_timm_plugin_writes_timms_config_for_a_timm_classifier(plugins, tmp_path):
    pytest.importorskip("timm")
    if "timm" not in get_registry().families:
        pytest.skip("the timm plugin is not installed")
    model = zooadapt.load("test_convnext", num_classes=2, pretrained=False)
    config = {**CONFIG, "family": "timm", "arch": "test_convnext", "num_classes": 2, "labels": ["a", "b"]}
    got = PluginHooks(plugins[0]).hub_card(model, config, tmp_path)
    assert got is not None and got.library == "timm" and "timm.create_model" in got.snippet
    assert json.loads((tmp_path / "config.json").read_text())["label_names"] == ["a", "b"]
    cut = PluginHooks(plugins[0]).hub_card(model, {**config, "features_only": True}, tmp_path / "none")
    assert cut == HubCard(tags=("timm",))  # a cut backbone: timm could not rebuild it from a config.json
