"""The plugin mechanism: built-ins, a plugin registered in a test, the installed example."""

from __future__ import annotations

import importlib.metadata as md
import sys

import pytest
import torch
from fake_plugins import install_entry_points

import zooadapt
from zooadapt import Family, ModelEntry, PluginConflictError, Stage, StageMap, WeightSource, hookimpl
from zooadapt.plugin_manager import get_plugin_manager, load_plugins, plugin_failures, plugin_infos
from zooadapt.registry import build_registry


class TinyNet(torch.nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.out = torch.nn.Linear(4, num_classes)

    def forward(self, x):
        return self.out(self.pool(self.body(x)).flatten(1))


class TinyPlugin:
    """A plugin object, as a test or a notebook would write one."""

    def __init__(self, model_name: str = "tinynet") -> None:
        self.model_name = model_name

    @hookimpl
    def zooadapt_register_families(self, register):
        register(Family(name="tiny", build=lambda arch, num_classes=10: TinyNet(num_classes),
                        stages=StageMap((Stage("body", ("body",)),), head="out")))

    @hookimpl
    def zooadapt_register_models(self, register):
        register(ModelEntry(name=self.model_name, family="tiny", arch="tiny",
                            source=WeightSource(repo_id="test/tinynet", filename="model.safetensors")))


@pytest.fixture
def with_tiny_plugin():
    pm = load_plugins()
    plugin = TinyPlugin()
    pm.register(plugin, name="tiny-test")
    from zooadapt.registry import reset_registry

    reset_registry()
    yield plugin
    pm.unregister(plugin)
    reset_registry()


def test_builtin_plugins_are_ordinary_plugins():
    names = {info.name for info in plugin_infos() if info.builtin}
    assert "resnet" in names
    assert load_plugins().get_plugin("resnet") is sys.modules["zooadapt.plugins.resnet"]
    assert "resnet" in zooadapt.get_registry().families


def test_registered_plugin_loads_through_the_hub(hub, with_tiny_plugin):
    from zooadapt.testing import safetensors_bytes, seeded_state_dict

    state = seeded_state_dict(TinyNet(), seed=5)
    hub.add_file("test/tinynet", "model.safetensors", safetensors_bytes(state))
    assert "tinynet" in zooadapt.list_models("tiny*")
    model = zooadapt.load("tinynet", num_classes=2, freeze="body")
    assert torch.equal(model.body[0].weight, state["body.0.weight"])
    assert model.out.out_features == 2 and not model.body[0].weight.requires_grad


def test_duplicate_model_names_raise_naming_both():
    pm = get_plugin_manager()
    pm.register(TinyPlugin(), name="first-plugin")
    pm.register(TinyPlugin(), name="second-plugin")
    with pytest.raises(PluginConflictError) as info:
        build_registry(pm)
    assert "first-plugin" in str(info.value) and "second-plugin" in str(info.value)


def test_model_name_clashing_with_registry_toml():
    pm = get_plugin_manager()
    pm.register(TinyPlugin("resnet34"), name="greedy-plugin")
    with pytest.raises(PluginConflictError, match=r"registry.toml.*greedy-plugin"):
        build_registry(pm)


def test_plugin_raising_in_a_hook_is_reported_and_skipped(caplog):
    class Broken:
        @hookimpl
        def zooadapt_register_families(self, register):
            raise RuntimeError("boom")

    pm = get_plugin_manager()
    import zooadapt.plugins.resnet as resnet

    pm.register(resnet, name="resnet")
    pm.register(Broken(), name="broken")
    reg = build_registry(pm)
    assert "resnet" in reg.families
    assert any(f.name == "broken" and "boom" in f.error for f in plugin_failures())


def _installed(dist: str) -> bool:
    try:
        md.distribution(dist)
    except md.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _installed("zooadapt-squeezenet"), reason="examples/zooadapt-squeezenet not installed")
def test_installed_example_plugin_through_entry_point(tmp_path):
    from zooadapt.testing import torchvision_state_dict

    infos = {i.name: i for i in plugin_infos()}
    assert infos["squeezenet"].distribution == "zooadapt-squeezenet" and not infos["squeezenet"].builtin
    assert {"squeezenet1_0", "squeezenet1_1"} <= set(zooadapt.list_models("squeeze*"))
    state = torchvision_state_dict("squeezenet1_1", seed=11)
    path = tmp_path / "squeezenet1_1.pth"
    torch.save(state, path)
    model = zooadapt.load("squeezenet1_1", weights=path, num_classes=3, freeze="features")
    assert torch.equal(model.features[12].expand3x3.weight, state["features.12.expand3x3.weight"])
    assert model.classifier[1].out_channels == 3
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["classifier.1.weight",
                                                                           "classifier.1.bias"]


def test_broken_entry_point_is_reported_with_distribution(monkeypatch):
    """A third-party plugin whose import fails is named with its distribution and skipped."""
    install_entry_points(monkeypatch, [("broken", "zooadapt-broken", "zooadapt_no_such_module_xyz")])
    failures = plugin_failures()
    assert any(f.distribution == "zooadapt-broken" and f.phase == "import" for f in failures)
    assert "resnet34" in zooadapt.list_models()  # the host keeps working

    monkeypatch.setenv("ZOOADAPT_STRICT_PLUGINS", "1")
    from zooadapt.plugin_manager import reset_plugins

    reset_plugins()
    with pytest.raises(zooadapt.PluginError, match="zooadapt-broken"):
        load_plugins()


def test_disable_plugins_env(monkeypatch):
    monkeypatch.setenv("ZOOADAPT_DISABLE_PLUGINS", "resnet")
    assert "resnet" not in zooadapt.get_registry().families
    with pytest.raises(zooadapt.UnknownFamilyError, match="resnet"):
        zooadapt.load("resnet18", pretrained=False)


def test_broken_resolver_is_named_and_others_still_resolve():
    class BrokenResolver:
        @hookimpl
        def zooadapt_resolve_model(self, name):
            raise RuntimeError("resolver bug")

    class GoodResolver:
        @hookimpl
        def zooadapt_resolve_model(self, name):
            return ModelEntry(name=name, family="resnet", arch="resnet18") if name == "my-resnet" else None

    pm = load_plugins()
    good, broken = GoodResolver(), BrokenResolver()
    pm.register(good, name="good-resolver")
    pm.register(broken, name="broken-resolver")  # registered last: asked first
    try:
        from zooadapt.registry import reset_registry

        reset_registry()
        assert zooadapt.get_registry().entry("my-resnet").arch == "resnet18"
        assert any(f.name == "broken-resolver" and f.phase == "zooadapt_resolve_model" for f in plugin_failures())
    finally:
        pm.unregister(good)
        pm.unregister(broken)
